"""The internal topics of a deployment: each one's name, configuration, and the one function that creates it.

A deployment (``Settings.service_id``) keeps its catalog, its workers' status, and per persistent query a
dead-letter topic and (when stateful) a changelog in Kafka; every deployment on the cluster shares the model
control topic. Nothing else names, configures or creates these topics. Constructing a store, a reader, a
publisher or a query touches nothing on the cluster: the code that starts a command, a worker or a query calls
the ``ensure_*`` functions here, which create a missing topic and leave an existing one as it is.

    >>> dead_letter_topic("svc", "CSAS_SCORED_0")
    'svc_CSAS_SCORED_0_dlq'
    >>> changelog_spec(3)[0], changelog_spec(3)[1]["cleanup.policy"]
    (3, 'compact')
"""

from __future__ import annotations

import logging

from streamml.config import Settings
from streamml.kafka.admin import Admin

log = logging.getLogger(__name__)

#: model lifecycle events (promotions, rollbacks, deletions), shared by every deployment on the cluster
MODELS_TOPIC = "_streamml_models"


def monitors_topic(service: str) -> str:
    """Compacted topic holding deployment ``service``'s monitor definitions (key: monitor name)."""
    return f"_{service}_monitors"


#: one record per monitor, model version and window: realised quality and drift (see streamml.monitor)
MONITOR_METRICS_TOPIC = "streamml_monitor_metrics"
#: alerts raised by monitors (FIRING / RESOLVED), one record per change of state
MONITOR_ALERTS_TOPIC = "streamml_monitor_alerts"

#: compacted, and compacted soon: readers catch up from the beginning at every start
_COMPACT_SOON = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1", "segment.ms": "600000"}

#: one partition, so every reader sees the events in one total order
CONTROL_TOPIC_CONFIG = dict(_COMPACT_SOON)
#: one partition, one record (key ``catalog``): the latest catalog
CATALOG_TOPIC_CONFIG = dict(_COMPACT_SOON)
#: one record per worker (key ``host/pid``), a tombstone on a clean stop
STATUS_TOPIC_CONFIG = {"cleanup.policy": "compact"}
CHANGELOG_CONFIG = {
    "cleanup.policy": "compact",
    # one record holds one key's state; this bounds the state of a single key, not of the query
    "max.message.bytes": str(64 * 1024 * 1024),
    "segment.ms": "600000",
    "min.cleanable.dirty.ratio": "0.1",
}


def catalog_topic(settings: Settings) -> str:
    """Compacted topic holding the deployment's SQL catalog (``Settings.catalog_topic``)."""
    return settings.catalog_topic


def status_topic(service: str) -> str:
    """Compacted topic where every worker of deployment ``service`` publishes its status."""
    return f"_{service}_status"


def dead_letter_topic(service: str, query_id: str) -> str:
    """Where persistent query ``query_id`` sends the records it cannot handle."""
    return f"{service}_{query_id}_dlq"


def changelog_topic(service: str, query_id: str) -> str:
    """Compacted topic holding the state of stateful persistent query ``query_id``."""
    return f"{service}_{query_id}_changelog"


def monitor_changelog_topic(service: str, monitor: str) -> str:
    """Compacted topic holding the state of monitor ``monitor`` (its predictions awaiting labels)."""
    return f"{service}_monitor_{monitor}_changelog"


def changelog_spec(partitions: int) -> tuple[int, dict[str, str]]:
    """Partition count and topic configuration of the changelog of a query whose source has ``partitions``."""
    return max(1, int(partitions)), dict(CHANGELOG_CONFIG)


def ensure_catalog_topic(admin: Admin, settings: Settings) -> str:
    """Create the deployment's catalog topic if it is missing; returns its name."""
    topic = catalog_topic(settings)
    admin.create_topic(topic, partitions=1, config=CATALOG_TOPIC_CONFIG, if_not_exists=True)
    return topic


def ensure_control_topic(admin: Admin, topic: str = MODELS_TOPIC) -> str:
    """Create the model control topic if it is missing; returns its name."""
    admin.create_topic(topic, partitions=1, config=CONTROL_TOPIC_CONFIG, if_not_exists=True)
    return topic


def ensure_status_topic(admin: Admin, service: str) -> str:
    """Create deployment ``service``'s status topic if it is missing; returns its name."""
    topic = status_topic(service)
    admin.create_topic(topic, partitions=1, config=STATUS_TOPIC_CONFIG, if_not_exists=True)
    return topic


def ensure_dead_letter_topic(admin: Admin, topic: str) -> str:
    """Create a query's dead-letter topic (see :func:`dead_letter_topic`) if it is missing; returns its name."""
    admin.create_topic(topic, partitions=1, if_not_exists=True)
    return topic


def ensure_changelog_topic(admin: Admin, topic: str, source_partitions: int) -> int:
    """Create a query's changelog (see :func:`changelog_topic`) with one partition per source partition if it
    is missing; returns how many partitions it has.

    An existing changelog is left as it is: with fewer partitions than the source, source partitions share
    changelog partitions (its records name their partition, so restores still work), which is logged.
    """
    count, config = changelog_spec(source_partitions)
    admin.create_topic(topic, partitions=count, config=config, if_not_exists=True)
    partitions = len(admin.describe_topic(topic, with_offsets=False).partitions)
    if partitions < count:
        log.warning(
            "changelog %s has %d partitions for a source of %d; changes share partitions", topic, partitions, count
        )
    return partitions


def ensure_monitor_topics(admin: Admin, settings: Settings, monitor: str, metrics: str, alerts: str) -> str:
    """Create a monitor's changelog, the definitions topic and its output topics where missing; returns the
    changelog's name (one partition: a monitor's windows span every partition of its inputs)."""
    ensure_monitors_topic(admin, settings)
    for topic in (metrics, alerts):
        admin.create_topic(topic, partitions=1, if_not_exists=True)
    changelog = monitor_changelog_topic(settings.service_id, monitor)
    admin.create_topic(changelog, partitions=1, config=dict(CHANGELOG_CONFIG), if_not_exists=True)
    return changelog


def ensure_monitors_topic(admin: Admin, settings: Settings) -> str:
    """Create the deployment's monitor definitions topic if it is missing; returns its name."""
    topic = monitors_topic(settings.service_id)
    admin.create_topic(topic, partitions=1, config=CONTROL_TOPIC_CONFIG, if_not_exists=True)
    return topic
