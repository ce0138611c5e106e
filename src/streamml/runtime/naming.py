"""Names of the Kafka resources streamml creates for its own bookkeeping."""

MODELS_TOPIC = "_streamml_models"


def group_id(query_id: str) -> str:
    """Consumer group of a persistent query: every worker running it joins this group."""
    return f"streamml_{query_id}"


def dead_letter_topic(query_id: str) -> str:
    return f"streamml_{query_id}_dlq"


def changelog_topic(query_id: str) -> str:
    return f"streamml_{query_id}_changelog"
