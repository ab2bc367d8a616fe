"""edgecomp: prune a CNN for the latency of the device it will run on, export it verified, and measure it there.

The public API (docs/api.md): `compress`, `export`, `bench` and `prune`, keyword arguments only, each
returning a result object; `Recipe`, `load_recipe` and the result types. The `edgecomp` command is a thin
layer over these functions. Heavy modules (torch, onnx) load on first use, not on `import edgecomp`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from .compression.inmemory import PruneResult
    from .compression.pipeline import CompressResult
    from .core.recipe import Recipe
    from .deploy.bench import BenchResult
    from .deploy.export import ExportResult

from .core.version import __version__

# name -> module: importable from edgecomp, loaded when first asked for (PEP 562)
_LAZY = {
    "Recipe": "edgecomp.core.recipe", "load_recipe": "edgecomp.core.recipe",
    "CompressResult": "edgecomp.compression.pipeline", "ExportResult": "edgecomp.deploy.export",
    "BenchResult": "edgecomp.deploy.bench", "PruneResult": "edgecomp.compression.inmemory",
    "LayerPlan": "edgecomp.compression.inmemory", "Size": "edgecomp.core.models",
    "EdgecompError": "edgecomp.core.errors", "UserInputError": "edgecomp.core.errors",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgecomp' has no attribute {name!r}")


def compress(recipe: Recipe | str | Path, *, overrides: Sequence[str] = (), out: str | Path | None = None,
             resume: bool = False) -> CompressResult:
    """Run a compression recipe: a Recipe, a YAML path or a shipped recipe's name. `overrides` are what
    `--set` takes (["prune.steps=3", ...]); `out` is the run directory (default runs/<name>)."""
    from .compression.pipeline import compress as run_compress
    from .core.recipe import Recipe, apply_overrides, load_recipe, validate

    if isinstance(recipe, Recipe):
        recipe = validate(apply_overrides(recipe.to_plain(), list(overrides))) if overrides else recipe
    else:
        recipe = load_recipe(recipe, list(overrides))
    return run_compress(recipe, out=Path(out) if out is not None else None, resume=resume)


def export(*, run: str | Path | None = None, model: nn.Module | None = None,
           example_inputs: torch.Tensor | None = None, out: str | Path | None = None,
           format: Optional[str] = None, precision: Optional[str] = None, device: Optional[str] = None,
           opset: Optional[int] = None, fold_bn: Optional[bool] = None, calib_images: Optional[int] = None,
           max_batch: Optional[int] = None, dla_core: Optional[int] = None, workspace_mib: Optional[int] = None,
           verify_inputs: torch.Tensor | None = None, accept_new_host_key: bool = False) -> ExportResult:
    """Export a run's final model (`run=`) or a model in memory (`model=`, `example_inputs=`, `out=` .onnx).

    `format` picks a row of the format table (edgecomp.deploy.export.FORMATS): "onnx" (model.onnx alone),
    "onnx_int8" (also the Q/DQ model.int8.onnx), "engine" (also a TensorRT engine built on `device`); None
    writes what the recipe's export section asks (model.onnx, plus model.int8.onnx for int8). Each row takes
    only its own arguments (the CLI flags of the same names); None means the recipe's value. A model in
    memory takes the "onnx" row: opset, fold_bn, verify_inputs (images the ONNX must reproduce)."""
    from .core.errors import ExportInputError
    from .deploy.export import FORMATS

    if format is not None and format not in FORMATS:
        raise ExportInputError(f"format: must be one of {', '.join(map(repr, FORMATS))} (got {format!r})")
    if (run is None) == (model is None):
        raise ExportInputError("export: give run= (a run directory) or model= (a torch module), not both")
    if model is not None:
        return _export_module(model, example_inputs, out, format, verify_inputs=verify_inputs, opset=opset,
                              fold_bn=fold_bn, others=dict(precision=precision, device=device,
                                                           calib_images=calib_images, max_batch=max_batch,
                                                           dla_core=dla_core, workspace_mib=workspace_mib))
    from .deploy.delivery import export as run_export

    if out is not None or verify_inputs is not None or example_inputs is not None:
        raise ExportInputError("export: out=, example_inputs= and verify_inputs= are for model=; a run's files "
                               "go to its directory")
    if format == "onnx_int8" and precision not in (None, "int8"):
        raise ExportInputError(f"precision: the onnx_int8 row is int8 (got {precision!r}); leave precision out")
    assert run is not None  # one of run and model is given, and model is not (both checked above)
    result = run_export(run=run, trt=format == "engine", onnx_only=format == "onnx",
                        precision="int8" if format == "onnx_int8" else precision,
                        device=device, opset=opset, calib_images=calib_images, max_batch=max_batch,
                        dla_core=dla_core, workspace_mib=workspace_mib, fold_bn=fold_bn,
                        accept_new_host_key=accept_new_host_key)
    _refresh_report(result.info_path.parent)
    return result


def _export_module(model, example_inputs, out, format, *, verify_inputs, opset, fold_bn, others) -> ExportResult:
    from .core.errors import ExportInputError
    from .deploy.inmemory import export_module, refuse_format

    if format not in (None, "onnx"):
        raise refuse_format(format)
    given = [name for name, value in others.items() if value is not None]
    if given:
        raise ExportInputError(f"export: {', '.join(given)}: only a run's onnx_int8 / engine export takes this; a "
                               "model in memory exports the onnx row (opset, fold_bn, verify_inputs)")
    if example_inputs is None or out is None:
        raise ExportInputError("export: model= needs example_inputs= (a batch the model takes) and out= (.onnx)")
    return export_module(model, example_inputs, out, verify_inputs=verify_inputs, opset=opset,
                         fold_bn=True if fold_bn is None else fold_bn)


def bench(*, run: str | Path | None = None, model: str | Path | None = None, device: Optional[str] = None,
          iterations: int = 100, batch: int = 1, warmup: int = 10, backend: str = "auto",
          precision: Optional[str] = None, accept_new_host_key: bool = False,
          ssh_options: Optional[Sequence[str]] = None, remote_python: Optional[str] = None,
          evaluate: bool = True) -> BenchResult:
    """Measure a run's model.onnx (`run=`) or a model file (`model=` .onnx/.engine) on a device ("host", a
    profile name or "ssh://user@host[:port]"; default: the recipe's device.name); writes bench.json.
    `backend`: auto, onnxruntime, tensorrt or trtexec; `evaluate`: also top-1 on the run's validation images."""
    from .deploy.bench import bench as run_bench

    result = run_bench(run=Path(run) if run is not None else None, model=Path(model) if model is not None else None,
                       device=device, iterations=iterations, batch=batch, warmup=warmup, backend=backend,
                       precision=precision, accept_new_host_key=accept_new_host_key, ssh_options=ssh_options,
                       remote_python=remote_python, evaluate=evaluate)
    _refresh_report(result.bench_path.parent)
    return result


def prune(model: nn.Module, example_inputs: torch.Tensor, *, target_macs: Optional[float] = None,
          target_params: Optional[float] = None, target_latency: Optional[float] = None, device: str = "host",
          runtime: str = "onnxruntime", threads: int = 1, max_block: Optional[int] = None,
          importance: str = "l2", round_to: int = 8,
          global_pruning: bool = True, max_layer_ratio: float = 0.9, ignored_layers: Sequence[str] = (),
          num_classes: Optional[int] = None,
          grad_fn: Optional[Callable[[nn.Module], None]] = None) -> PruneResult:
    """Prune a copy of a model held in memory with the planner `compress` uses; returns a PruneResult (the
    pruned model, MACs and params before/after, every layer's widths). `target_macs` / `target_params`: the
    fraction of the given model's MACs / parameters to keep; `target_latency`: the fraction of its latency,
    measured on `device` with `runtime` (the plans are timed there until one meets it; channel counts on the
    block measured there, at most `max_block`). Exactly one target.
    See docs/api.md."""
    from .compression.inmemory import prune as prune_model

    return prune_model(model, example_inputs, target_macs=target_macs, target_params=target_params,
                       target_latency=target_latency, device=device, runtime=runtime, threads=threads,
                       max_block=max_block, importance=importance, round_to=round_to, global_pruning=global_pruning,
                       max_layer_ratio=max_layer_ratio, ignored_layers=ignored_layers, num_classes=num_classes,
                       grad_fn=grad_fn)


def cpu_guard(model: nn.Module) -> AbstractContextManager[list[nn.Conv2d]]:
    """A context manager for training a pruned model on CPU in your own loop: while it is open, every strided
    1x1 convolution with fewer input channels than oneDNN's block (16) runs as subsample + stride-1 conv, the
    same function computed another way, so oneDNN's broken strided 1x1 backward kernel (channels-last inputs:
    hangs or "double free") is never reached. Yields the layers it patched; the model is unchanged after it.
    `compress` uses it in every training loop of its own. A no-op for a model on a GPU."""
    from .compression.cpu_guard import unit_stride_1x1

    return unit_stride_1x1(model)


def _refresh_report(folder: Path) -> None:
    """report.md follows every export and bench of a run directory (one place: the CLI calls these)."""
    from .report import refresh

    refresh(folder)


__all__ = ["compress", "export", "bench", "prune", "cpu_guard", "Recipe", "load_recipe", "CompressResult", "ExportResult",
           "BenchResult", "PruneResult", "LayerPlan", "Size", "EdgecompError", "UserInputError", "__version__"]
