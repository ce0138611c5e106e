"""TF Serving's gRPC services against a running server, through the stubs of the ``tensorflow-protobuf`` package."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from streamml.inference.tfserving_protos import (
    classification_pb2,
    example_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
    tensor_pb2,
    types_pb2,
)
from tests.serve.conftest import IRIS_FEATURES, IRIS_ROWS, IRIS_SPECIES, Running, start_server
from tests.serve.tabular_models import CENSUS_CASES, tabular_registry


def stubs(
    address: str,
) -> Iterator[tuple[prediction_service_pb2_grpc.PredictionServiceStub, model_service_pb2_grpc.ModelServiceStub]]:
    with grpc.insecure_channel(address) as channel:
        yield (
            prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel),
        )


@pytest.fixture(scope="module")
def iris(iris_server: Running) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    for prediction, _ in stubs(iris_server.grpc):
        yield prediction


@pytest.fixture(scope="module")
def models(iris_server: Running) -> Iterator[model_service_pb2_grpc.ModelServiceStub]:
    for _, model in stubs(iris_server.grpc):
        yield model


@pytest.fixture(scope="module")
def tabular(tmp_path_factory: pytest.TempPathFactory) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    registry = tabular_registry(str(tmp_path_factory.mktemp("tfserving-grpc")))
    for running in start_server(registry):
        for prediction, _ in stubs(running.grpc):
            yield prediction


def float_tensor(array: np.ndarray, *, content: bool) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    for dim in array.shape:
        proto.tensor_shape.dim.add(size=dim)
    if content:
        proto.tensor_content = np.ascontiguousarray(array, dtype="<f4").tobytes()
    else:
        proto.float_val.extend(array.reshape(-1).tolist())
    return proto


def example(**features: float | str) -> example_pb2.Example:
    message = example_pb2.Example()
    for name, value in features.items():
        feature = message.features.feature[name]
        if isinstance(value, str):
            feature.bytes_list.value.append(value.encode())
        elif isinstance(value, int):
            feature.int64_list.value.append(value)
        else:
            feature.float_list.value.append(value)
    return message


def iris_examples() -> list[example_pb2.Example]:
    return [example(**dict(zip(IRIS_FEATURES, row.tolist(), strict=True))) for row in IRIS_ROWS]


def test_predict_with_tensor_content_and_typed_values(iris: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    for content in (True, False):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "iris"
        request.inputs["X"].CopyFrom(float_tensor(IRIS_ROWS, content=content))
        response = iris.Predict(request, timeout=30)
        assert response.model_spec.name == "iris" and response.model_spec.version.value == 1
        assert response.model_spec.signature_name == "serving_default"
        assert [v.decode() for v in response.outputs["label"].string_val] == IRIS_SPECIES
        probs = response.outputs["probabilities"]
        assert [d.size for d in probs.tensor_shape.dim] == [3, 3] and probs.dtype == types_pb2.DT_FLOAT
        assert np.allclose(np.asarray(probs.float_val).reshape(3, 3).sum(axis=1), 1.0, atol=1e-5)
    request.model_spec.version_label = "staging"
    request.output_filter.append("label")
    response = iris.Predict(request, timeout=30)
    assert response.model_spec.version.value == 2 and list(response.outputs) == ["label"]


def test_classify_iris_examples(iris: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "iris"
    request.model_spec.version.value = 2
    request.input.example_list.examples.extend(iris_examples())
    response = iris.Classify(request, timeout=30)
    assert response.model_spec.version.value == 2
    results = response.result.classifications
    assert [max(c.classes, key=lambda k: k.score).label for c in results] == IRIS_SPECIES
    assert all([k.label for k in c.classes] == IRIS_SPECIES for c in results)


def test_classify_per_column_inputs_with_bytes_and_context(
    tabular: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "census"
    listed = request.input.example_list_with_context
    listed.context.CopyFrom(example(hours_per_week=40.0))
    for (age, hours, work), _ in CENSUS_CASES:  # hours in the example win over the context's
        listed.examples.append(example(age=int(age), hours_per_week=hours, workclass=work))
    response = tabular.Classify(request, timeout=30)
    labels = [max(c.classes, key=lambda k: k.score).label for c in response.result.classifications]
    assert labels == [label for _, label in CENSUS_CASES]
    assert [k.label for k in response.result.classifications[0].classes] == ["<=50K", ">50K"]


def test_regress(tabular: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "width"
    request.input.example_list.examples.extend(
        [
            example(sepal_length=5.1, sepal_width=3.5, petal_length=1.4),
            example(sepal_length=7.7, sepal_width=3.0, petal_length=6.1),
        ]
    )
    response = tabular.Regress(request, timeout=30)
    small, large = (r.value for r in response.result.regressions)
    assert 0.0 < small < 0.6 and large > 1.5
    assert response.model_spec.name == "width" and response.model_spec.version.value == 1
    request.model_spec.name = "census"
    with pytest.raises(grpc.RpcError) as refused:
        tabular.Regress(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a regression model" in (refused.value.details() or "")


def test_metadata_and_status(
    iris: prediction_service_pb2_grpc.PredictionServiceStub, models: model_service_pb2_grpc.ModelServiceStub
) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "iris"
    response = iris.GetModelMetadata(request, timeout=30)
    assert response.model_spec.version.value == 1
    defs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(defs)
    default = defs.signature_def["serving_default"]
    assert default.inputs["X"].dtype == types_pb2.DT_FLOAT
    assert [d.size for d in default.inputs["X"].tensor_shape.dim] == [-1, 4]
    assert defs.signature_def["classification"].method_name == "tensorflow/serving/classify"
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "iris"
    status.model_spec.version_label = "staging"
    (version,) = models.GetModelStatus(status, timeout=30).model_version_status
    assert version.version == 2 and version.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert version.status.error_code == 0 and version.status.error_message == ""


def test_errors(
    iris: prediction_service_pb2_grpc.PredictionServiceStub, models: model_service_pb2_grpc.ModelServiceStub
) -> None:
    def code(call: object, request: object) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as failed:
            call(request, timeout=30)  # type: ignore[operator]
        return failed.value.code(), failed.value.details() or ""

    unknown = get_model_status_pb2.GetModelStatusRequest()
    unknown.model_spec.name = "nosuch"
    assert code(models.GetModelStatus, unknown)[0] == grpc.StatusCode.NOT_FOUND
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = "nosuch"
    predict.inputs["X"].CopyFrom(float_tensor(IRIS_ROWS, content=True))
    assert code(iris.Predict, predict)[0] == grpc.StatusCode.NOT_FOUND
    predict.model_spec.name = "iris"
    predict.inputs["X"].tensor_content = b"\0" * 7
    status, message = code(iris.Predict, predict)
    assert status == grpc.StatusCode.INVALID_ARGUMENT and "needs 48 bytes" in message
    predict.inputs["X"].CopyFrom(float_tensor(IRIS_ROWS[:, :3], content=False))
    assert code(iris.Predict, predict)[0] == grpc.StatusCode.INVALID_ARGUMENT
    metadata = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata.model_spec.name = "iris"
    assert code(iris.GetModelMetadata, metadata)[0] == grpc.StatusCode.INVALID_ARGUMENT
    multi = inference_pb2.MultiInferenceRequest()
    assert code(iris.MultiInference, multi)[0] == grpc.StatusCode.UNIMPLEMENTED
