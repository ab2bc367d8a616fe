"""edgecomp: structured pruning with size-following augmentation for Jetson-class devices."""

from __future__ import annotations

__version__ = "0.1.0"


def compress(recipe, *, out=None, resume=False):
    """Run a compression recipe (a Recipe, or a path / shipped name); returns a CompressResult."""
    from .pipeline import compress as _compress
    from .recipe import Recipe, load_recipe

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    return _compress(recipe, out=out, resume=resume)


__all__ = ["compress", "__version__"]
