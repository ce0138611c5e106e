"""Getting events into Kafka: file replay (CSV, JSON lines), simulators, bridges."""

from streamml.ingest.replay import RateLimiter, ReplayStats, replay_lines

__all__ = ["RateLimiter", "ReplayStats", "replay_lines"]
