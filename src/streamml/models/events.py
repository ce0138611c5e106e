"""Model lifecycle events, published by the caller to a compacted Kafka control topic."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamml.errors import ModelError

EventAction = Literal["promote", "rollback", "set_alias", "remove_alias", "register", "delete"]


class ModelEvent(BaseModel):
    """An alias moved (or a version appeared/disappeared).

    ``key`` (``model@alias``) is the record key on a compacted control topic, so the latest event per alias
    survives compaction; ``version`` is ``None`` when the alias was removed.
    """

    model_config = ConfigDict(frozen=True)

    action: EventAction
    model: str
    version: int | None
    alias: str | None = None
    previous_version: int | None = None
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
