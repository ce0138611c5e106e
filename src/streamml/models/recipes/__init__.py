"""Training recipes: built-in ones and plug-ins.

A plug-in is any object following :class:`Recipe`, found by name in the entry-point group
``streamml.recipes``, or loaded from a Python file (``path/to/recipe.py`` or ``path/to/recipe.py:attr``;
without ``:attr`` the file must define ``recipe``). Loading a file runs it: only load files you trust.

    >>> get_recipe("autoencoder").name
    'autoencoder'
"""

from __future__ import annotations

import importlib.util
import logging
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from streamml.errors import ModelError
from streamml.models.recipes.autoencoder import AutoencoderRecipe
from streamml.models.recipes.base import (
    COMMON_PARAMS,
    Recipe,
    Splits,
    TrainedModel,
    feature_columns,
    feature_matrix,
    label_array,
    resolve_params,
    split_indices,
)
from streamml.models.recipes.classifier import ClassifierRecipe
from streamml.models.recipes.gbdt import GbdtRecipe
from streamml.models.recipes.image import ImageRecipe, images_from_column
from streamml.models.recipes.sequence import SequenceRecipe, Windows, make_windows
from streamml.models.recipes.tabular import TabularRecipe

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "streamml.recipes"

BUILTIN: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        AutoencoderRecipe(),
        GbdtRecipe(),
        ClassifierRecipe(),
        TabularRecipe(),
        SequenceRecipe(),
        ImageRecipe(),
    )
}


def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_recipes() -> list[str]:
    """Names of built-in and installed (entry-point) recipes."""
    return sorted({*BUILTIN, *_plugins()})


def get_recipe(ref: str | Recipe) -> Recipe:
    """A recipe by built-in name, entry-point name or Python file (``file.py`` / ``file.py:attr``)."""
    if not isinstance(ref, str):
        return _checked(ref, repr(ref))
    if ref in BUILTIN:
        return BUILTIN[ref]
    plugins = _plugins()
    if ref in plugins:
        try:
            loaded = plugins[ref].load()
        except Exception as exc:
            raise ModelError(f"cannot load recipe plug-in '{ref}': {exc}") from exc
        return _checked(loaded() if isinstance(loaded, type) else loaded, ref)
    path_text, _, attr = ref.partition(".py:")
    path = Path(path_text + ".py") if attr else Path(ref)
    if path.suffix == ".py":
        return _from_file(path, attr or "recipe")
    raise ModelError(f"unknown recipe '{ref}'", hint=f"available: {', '.join(available_recipes())}")


def _from_file(path: Path, attr: str) -> Recipe:
    if not path.is_file():
        raise ModelError(f"recipe file '{path}' does not exist")
    spec = importlib.util.spec_from_file_location(f"streamml_recipe_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot import recipe file '{path}'")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ModelError(f"recipe file '{path}' failed to import: {exc}") from exc
    if not hasattr(module, attr):
        raise ModelError(f"recipe file '{path}' defines no '{attr}'", hint="define recipe = MyRecipe()")
    found = getattr(module, attr)
    return _checked(found() if isinstance(found, type) else found, str(path))


def _checked(candidate: Any, origin: str) -> Recipe:
    if not isinstance(candidate, Recipe):
        raise ModelError(f"'{origin}' is not a recipe", hint="it needs name, default_params and train()")
    return candidate


__all__ = [
    "BUILTIN",
    "COMMON_PARAMS",
    "ENTRY_POINT_GROUP",
    "AutoencoderRecipe",
    "ClassifierRecipe",
    "GbdtRecipe",
    "ImageRecipe",
    "Recipe",
    "SequenceRecipe",
    "Splits",
    "TabularRecipe",
    "TrainedModel",
    "Windows",
    "available_recipes",
    "feature_columns",
    "feature_matrix",
    "get_recipe",
    "images_from_column",
    "label_array",
    "make_windows",
    "resolve_params",
    "split_indices",
]
