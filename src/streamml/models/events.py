"""Model lifecycle events, published by the caller to a compacted Kafka control topic.

Alias moves (``promote``, ``rollback``, ``set_alias``, ``remove_alias``) change what scoring workers serve;
every other action only records what happened to a version: ``register``, ``delete``, and the steps of a
retraining loop (``candidate``: trained and registered, not promoted; ``shadow``: scored beside the version in
force; ``reject``: kept, not promoted). Those carry a ``reason`` and a JSON ``detail`` (metric values).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamml.errors import ModelError

EventAction = Literal[
    "promote", "rollback", "set_alias", "remove_alias", "register", "delete", "candidate", "shadow", "reject"
]
#: the actions of a retraining loop (see :mod:`streamml.monitor.policy`)
RETRAINING_ACTIONS = ("candidate", "shadow", "reject")


class ModelEvent(BaseModel):
    """An alias moved, a version appeared/disappeared, or a retraining step happened to a version.

    ``key`` (``model@alias``, else ``model:version``) is the record key on a compacted control topic, so the
    latest event per alias survives compaction (the full history is the registry's manifest); ``version`` is
    ``None`` when the alias was removed.
    """

    model_config = ConfigDict(frozen=True)

    action: EventAction
    model: str
    version: int | None
    alias: str | None = None
    previous_version: int | None = None
    #: why it happened, in words (a retraining step, or the promotion a retraining loop decided)
    reason: str | None = None
    #: JSON-ready numbers behind the reason (the compared metric of both versions, windows, labelled rows)
    detail: dict[str, Any] | None = None
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def key(self) -> str:
        return f"{self.model}@{self.alias}" if self.alias else f"{self.model}:{self.version}"

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, data: str | bytes) -> ModelEvent:
        """Parse an event; :class:`ModelError` when ``data`` is not one."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise ModelError(f"invalid model event: {exc.errors()[0]['msg']}") from exc
