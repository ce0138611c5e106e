"""Runs persistent queries on Kafka: batching, transactions, dead letters, state changelogs, the catalog."""
