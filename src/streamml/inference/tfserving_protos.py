"""TensorFlow Serving's message types and stubs, from the ``tensorflow-protobuf`` package, importable whole.

That package ships TensorFlow Serving's and TensorFlow's generated modules but not the files that
``model_service_pb2`` (the ModelService stub) needs: ``tensorflow/tsl/protobuf/error_codes.proto`` (through
``get_model_status_pb2`` and ``status_pb2``) and ``tensorflow_serving/config/model_server_config.proto`` with
its imports (through ``model_management_pb2``). This module builds those files from their definitions in
TensorFlow and TensorFlow Serving (same packages, names, numbers and types) as descriptors, adds them to the
default descriptor pool, installs the modules the generated code imports, then imports everything the TF
Serving front ends use. Every TF Serving import in the project goes through here.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.internal import enum_type_wrapper

FDP = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "string": FDP.TYPE_STRING,
    "bool": FDP.TYPE_BOOL,
    "double": FDP.TYPE_DOUBLE,
    "int32": FDP.TYPE_INT32,
    "int64": FDP.TYPE_INT64,
    "uint32": FDP.TYPE_UINT32,
}
_DEPRECATED = "!"  # a field or enum value marked [deprecated = true]

#: tensorflow.error.Code in TensorFlow's declaration order
ERROR_CODES = [
    ("OK", 0), ("CANCELLED", 1), ("UNKNOWN", 2), ("INVALID_ARGUMENT", 3), ("DEADLINE_EXCEEDED", 4),
    ("NOT_FOUND", 5), ("ALREADY_EXISTS", 6), ("PERMISSION_DENIED", 7), ("UNAUTHENTICATED", 16),
    ("RESOURCE_EXHAUSTED", 8), ("FAILED_PRECONDITION", 9), ("ABORTED", 10), ("OUT_OF_RANGE", 11),
    ("UNIMPLEMENTED", 12), ("INTERNAL", 13), ("UNAVAILABLE", 14), ("DATA_LOSS", 15),
    ("DO_NOT_USE_RESERVED_FOR_FUTURE_EXPANSION_USE_DEFAULT_IN_SWITCH_INSTEAD_", 20),
]  # fmt: skip
_POLICY = ".tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy"

# Each file: (path, package, imports, enums, messages). A message: (name, fields, nested messages, nested enums,
# oneofs, reserved numbers); a field: (name, number, type) with "repeated " before a repeated type, "enum "
# before an enum type, "map<K,V>" for a map, and "!" after the type of a deprecated field; a field whose name
# is listed in a oneof belongs to it.
FILES: list[tuple[str, str, list[str], list[Any], list[Any]]] = [
    ("tensorflow/tsl/protobuf/error_codes.proto", "tensorflow.error", [], [("Code", ERROR_CODES)], []),
    (
        "tensorflow_serving/config/log_collector_config.proto", "tensorflow.serving", [], [],
        [("LogCollectorConfig", [("type", 1, "string"), ("filename_prefix", 2, "string")], [], [], [], [])],
    ),
    (
        "tensorflow_serving/config/logging_config.proto", "tensorflow.serving",
        ["tensorflow_serving/config/log_collector_config.proto"], [],
        [
            ("SamplingConfig", [("sampling_rate", 1, "double"), ("attributes", 2, "int32")], [],
             [("Attributes", [("ATTR_DEFAULT", 0), ("ATTR_REQUEST_ORIGIN", 1), ("ATTR_REQUEST_CRITICALITY", 2)])],
             [], []),
            ("LoggingConfig", [("log_collector_config", 1, ".tensorflow.serving.LogCollectorConfig"),
                               ("sampling_config", 2, ".tensorflow.serving.SamplingConfig")], [], [], [], []),
        ],
    ),
    (
        "tensorflow_serving/config/file_system_storage_path_source.proto", "tensorflow.serving", [], [],
        [(
            "FileSystemStoragePathSourceConfig",
            [("servables", 5, "repeated .tensorflow.serving.FileSystemStoragePathSourceConfig.ServableToMonitor"),
             ("file_system_poll_wait_seconds", 3, "int64"), ("fail_if_zero_versions_at_startup", 4, "bool!"),
             ("servable_versions_always_present", 6, "bool")],
            [
                ("ServableVersionPolicy",
                 [("latest", 100, _POLICY + ".Latest"), ("all", 101, _POLICY + ".All"),
                  ("specific", 102, _POLICY + ".Specific")],
                 [("Latest", [("num_versions", 1, "uint32")], [], [], [], []), ("All", [], [], [], [], []),
                  ("Specific", [("versions", 1, "repeated int64")], [], [], [], [])],
                 [], [("policy_choice", ["latest", "all", "specific"])], []),
                ("ServableToMonitor",
                 [("servable_name", 1, "string"), ("base_path", 2, "string"), ("servable_version_policy", 4, _POLICY)],
                 [], [], [], [3]),
            ],
            [], [], [1, 2],
        )],
    ),
    (
        "tensorflow_serving/config/model_server_config.proto", "tensorflow.serving",
        ["google/protobuf/any.proto", "tensorflow_serving/config/logging_config.proto",
         "tensorflow_serving/config/file_system_storage_path_source.proto"],
        [("ModelType", [("MODEL_TYPE_UNSPECIFIED!", 0), ("TENSORFLOW!", 1), ("OTHER!", 2)])],
        [
            ("ModelConfig",
             [("name", 1, "string"), ("base_path", 2, "string"),
              ("model_type", 3, "enum .tensorflow.serving.ModelType!"),
              ("model_platform", 4, "string"), ("model_version_policy", 7, _POLICY),
              ("version_labels", 8, "map<string,int64>"),
              ("logging_config", 6, ".tensorflow.serving.LoggingConfig")],
             [], [], [], [5]),
            ("ModelConfigList", [("config", 1, "repeated .tensorflow.serving.ModelConfig")], [], [], [], []),
            ("ModelServerConfig",
             [("model_config_list", 1, ".tensorflow.serving.ModelConfigList"),
              ("custom_model_config", 2, ".google.protobuf.Any")],
             [], [], [("config", ["model_config_list", "custom_model_config"])], []),
        ],
    ),
]  # fmt: skip


def _enum(proto: descriptor_pb2.EnumDescriptorProto, name: str, values: list[tuple[str, int]]) -> None:
    proto.name = name
    for value_name, number in values:
        value = proto.value.add(name=value_name.rstrip(_DEPRECATED), number=number)
        if value_name.endswith(_DEPRECATED):
            value.options.deprecated = True


def _message(proto: descriptor_pb2.DescriptorProto, spec: Any, scope: str) -> None:
    name, fields, nested, enums, oneofs, reserved = spec
    proto.name = name
    full = f"{scope}.{name}"
    for oneof_name, _ in oneofs:
        proto.oneof_decl.add(name=oneof_name)
    for field_name, number, declared in fields:
        field = proto.field.add(name=field_name, number=number, label=FDP.LABEL_OPTIONAL)
        kind = declared
        if kind.endswith(_DEPRECATED):
            kind = kind.rstrip(_DEPRECATED)
            field.options.deprecated = True
        if kind.startswith("repeated "):
            field.label, kind = FDP.LABEL_REPEATED, kind.removeprefix("repeated ")
        if kind.startswith("map<"):
            key, value = kind[4:-1].split(",")
            entry = "".join(part.title() for part in field_name.split("_")) + "Entry"
            _message(proto.nested_type.add(), (entry, [("key", 1, key), ("value", 2, value)], [], [], [], []), full)
            proto.nested_type[-1].options.map_entry = True
            field.label, field.type, field.type_name = FDP.LABEL_REPEATED, FDP.TYPE_MESSAGE, f"{full}.{entry}"
        elif kind.startswith("enum "):
            field.type, field.type_name = FDP.TYPE_ENUM, kind.removeprefix("enum ")
        elif kind in _SCALARS:
            field.type = _SCALARS[kind]
        else:
            field.type, field.type_name = FDP.TYPE_MESSAGE, kind
        for index, (_, members) in enumerate(oneofs):
            if field_name in members:
                field.oneof_index = index
    for child in nested:
        _message(proto.nested_type.add(), child, full)
    for enum_name, values in enums:
        _enum(proto.enum_type.add(), enum_name, values)
    for number in reserved:
        proto.reserved_range.add(start=number, end=number + 1)


def _module(path: str, package: str, imports: list[str], enums: list[Any], messages: list[Any]) -> types.ModuleType:
    """The module protoc would generate for ``path``, from its descriptor (added to the default pool once)."""
    pool = descriptor_pool.Default()
    try:
        file = pool.FindFileByName(path)
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto(name=path, package=package, syntax="proto3", dependency=imports)
        proto.options.cc_enable_arenas = True
        for enum_name, values in enums:
            _enum(proto.enum_type.add(), enum_name, values)
        for spec in messages:
            _message(proto.message_type.add(), spec, "." + package)
        pool.Add(proto)
        file = pool.FindFileByName(path)
    name = path.removesuffix(".proto").replace("/", ".") + "_pb2"
    module = types.ModuleType(name, f"Messages of {path}, built from its descriptor.")
    exported: dict[str, Any] = {"DESCRIPTOR": file}
    for enum_name, enum in file.enum_types_by_name.items():
        exported[enum_name] = enum_type_wrapper.EnumTypeWrapper(enum)
        exported.update({value.name: value.number for value in enum.values})
    for message_name, message in file.message_types_by_name.items():
        exported[message_name] = message_factory.GetMessageClass(message)
    module.__dict__.update(exported)
    module.__all__ = list(exported)  # type: ignore[attr-defined]
    return module


def _install(module: types.ModuleType) -> None:
    """Put ``module`` in ``sys.modules``, with any missing parent packages, where ``import`` finds it."""
    parts = module.__name__.split(".")
    parent = importlib.import_module(parts[0])
    for depth in range(2, len(parts)):
        package = ".".join(parts[:depth])
        if package not in sys.modules:
            try:
                importlib.import_module(package)
            except ModuleNotFoundError:
                stub = types.ModuleType(package)
                stub.__path__ = []
                sys.modules[package] = stub
        child = sys.modules[package]
        setattr(parent, parts[depth - 1], child)
        parent = child
    sys.modules[module.__name__] = module
    setattr(parent, parts[-1], module)


def _missing(module: str) -> bool:
    """Whether ``module`` cannot be imported (a full TensorFlow install has every one of these)."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError:
        return True
    return False


assert any_pb2.DESCRIPTOR.name == "google/protobuf/any.proto"  # imported by model_server_config.proto
for _file in FILES:
    if _missing(_file[0].removesuffix(".proto").replace("/", ".") + "_pb2"):
        _install(_module(*_file))

from tensorflow.core.example import example_pb2, feature_pb2  # noqa: E402
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

__all__ = [
    "classification_pb2",
    "example_pb2",
    "feature_pb2",
    "get_model_metadata_pb2",
    "get_model_status_pb2",
    "inference_pb2",
    "input_pb2",
    "meta_graph_pb2",
    "model_management_pb2",
    "model_pb2",
    "model_service_pb2_grpc",
    "predict_pb2",
    "prediction_service_pb2_grpc",
    "regression_pb2",
    "tensor_pb2",
    "tensor_shape_pb2",
    "types_pb2",
]
