"""Getting events into Kafka: file replay (CSV, JSON lines), simulators, bridges."""
