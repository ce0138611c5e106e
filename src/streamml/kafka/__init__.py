"""Thin, batched wrappers over confluent-kafka, and the lifecycle of the local broker."""

from streamml.kafka.admin import Admin, PartitionInfo, TopicInfo
from streamml.kafka.broker import BrokerInfo, LocalBroker
from streamml.kafka.cluster import client_config, resolve_bootstrap
from streamml.kafka.consumer import BatchConsumer, RecordBatch, StartAt
from streamml.kafka.producer import Producer, TransactionalProducer

__all__ = [
    "Admin",
    "BatchConsumer",
    "BrokerInfo",
    "LocalBroker",
    "PartitionInfo",
    "Producer",
    "RecordBatch",
    "StartAt",
    "TopicInfo",
    "TransactionalProducer",
    "client_config",
    "resolve_bootstrap",
]
