"""Names a deployment (``Settings.service_id``) gives its persistent queries' consumer groups and producers.

Topic names live with their configuration in :mod:`streamml.runtime.topics`, their one owner; they are
re-exported here for existing imports.
"""

from streamml.runtime.topics import MODELS_TOPIC, changelog_topic, dead_letter_topic, status_topic

__all__ = ["MODELS_TOPIC", "changelog_topic", "dead_letter_topic", "group_id", "status_topic", "transactional_id"]


def group_id(service: str, query_id: str) -> str:
    """Consumer group of a persistent query: every worker running it joins this group."""
    return f"{service}_{query_id}"


def transactional_id(service: str, query_id: str, worker: str) -> str:
    """Stable per worker, so a restarted worker fences its predecessor's open transaction at once."""
    return f"{service}-{query_id}-{worker}"
