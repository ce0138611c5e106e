"""The Kafka-free inference service shared by PREDICT in the stream and the model server."""

from streamml.inference.batching import AdaptiveBatcher, BatchPolicy
from streamml.inference.metrics import Metrics
from streamml.inference.service import PROVENANCE, InferenceService, Served

__all__ = ["PROVENANCE", "AdaptiveBatcher", "BatchPolicy", "InferenceService", "Metrics", "Served"]
