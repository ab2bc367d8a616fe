"""edgecomp: structured pruning with size-following augmentation for Jetson-class devices."""

from __future__ import annotations

__version__ = "0.1.0"


def compress(recipe, *, out=None, resume=False):
    """Run a compression recipe (a Recipe, or a path / shipped name); returns a CompressResult."""
    from .compression.pipeline import compress as _compress
    from .core.recipe import Recipe, load_recipe

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    return _compress(recipe, out=out, resume=resume)


def export(*, run, **options):
    """Export a run's model (verified ONNX; int8 Q/DQ; TensorRT engine); returns an ExportResult.
    Keyword arguments: see edgecomp.deploy.delivery.export."""
    from .deploy.delivery import export as _export

    result = _export(run=run, **options)
    _refresh_report(result.info_path.parent)
    return result


def bench(**options):
    """Measure a run's model.onnx (run=DIR) or a model file (model=PATH) on a device (device="host", a profile
    name or "ssh://user@host[:port]"; default: the recipe's device.name); writes bench.json, returns a BenchResult.
    Keyword arguments: see edgecomp.deploy.bench.bench."""
    from .deploy.bench import bench as _bench

    result = _bench(**options)
    _refresh_report(result.bench_path.parent)
    return result


def _refresh_report(folder):
    """report.md follows every export and bench of a run directory."""
    from .report import refresh

    refresh(folder)


__all__ = ["compress", "export", "bench", "__version__"]
