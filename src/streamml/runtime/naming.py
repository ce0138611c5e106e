"""Names of the Kafka resources a deployment (``Settings.service_id``) creates for its persistent queries."""

MODELS_TOPIC = "_streamml_models"


def group_id(service: str, query_id: str) -> str:
    """Consumer group of a persistent query: every worker running it joins this group."""
    return f"{service}_{query_id}"


def dead_letter_topic(service: str, query_id: str) -> str:
    return f"{service}_{query_id}_dlq"


def changelog_topic(service: str, query_id: str) -> str:
    return f"{service}_{query_id}_changelog"


def transactional_id(service: str, query_id: str, worker: str) -> str:
    """Stable per worker, so a restarted worker fences its predecessor's open transaction at once."""
    return f"{service}-{query_id}-{worker}"
