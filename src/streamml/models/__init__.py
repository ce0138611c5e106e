"""Models: ONNX Runtime inference, model cards, export flavours, the registry, recipes and training.

Nothing here talks to Kafka: training takes an Arrow table, registry events are returned for the caller
to publish. Names are imported lazily, so a scoring worker that only needs :class:`OnnxModel` and the
:class:`Registry` does not load scikit-learn or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamml.models.card import Lineage, ModelCard, OutputField, OutputSpec, Parity, PartitionRange
    from streamml.models.events import ModelEvent
    from streamml.models.export import (
        Exported,
        export_keras,
        export_sklearn,
        export_torch,
        import_onnx,
        import_sklearn,
    )
    from streamml.models.recipes import Recipe, TrainedModel, available_recipes, get_recipe
    from streamml.models.registry import DEFAULT_ROOT, ModelRef, ModelVersion, Registry
    from streamml.models.runtime import OnnxModel, select_providers
    from streamml.models.signature import Signature, TensorSpec
    from streamml.models.stats import ColumnStats, ReferenceStats, reference_stats
    from streamml.models.training import train_model, train_table

_LOCATIONS = {
    "card": ["Lineage", "ModelCard", "OutputField", "OutputSpec", "Parity", "PartitionRange"],
    "events": ["ModelEvent"],
    "export": ["Exported", "export_keras", "export_sklearn", "export_torch", "import_onnx", "import_sklearn"],
    "recipes": ["Recipe", "TrainedModel", "available_recipes", "get_recipe"],
    "registry": ["DEFAULT_ROOT", "ModelRef", "ModelVersion", "Registry"],
    "runtime": ["OnnxModel", "select_providers"],
    "signature": ["Signature", "TensorSpec"],
    "stats": ["ColumnStats", "ReferenceStats", "reference_stats"],
    "training": ["train_model", "train_table"],
}
_MODULE_OF = {name: module for module, names in _LOCATIONS.items() for name in names}

__all__ = [
    "DEFAULT_ROOT",
    "ColumnStats",
    "Exported",
    "Lineage",
    "ModelCard",
    "ModelEvent",
    "ModelRef",
    "ModelVersion",
    "OnnxModel",
    "OutputField",
    "OutputSpec",
    "Parity",
    "PartitionRange",
    "Recipe",
    "ReferenceStats",
    "Registry",
    "Signature",
    "TensorSpec",
    "TrainedModel",
    "available_recipes",
    "export_keras",
    "export_sklearn",
    "export_torch",
    "get_recipe",
    "import_onnx",
    "import_sklearn",
    "reference_stats",
    "select_providers",
    "train_model",
    "train_table",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'streamml.models' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"streamml.models.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
