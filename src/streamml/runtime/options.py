"""How persistent queries run: batch sizing, delivery guarantee, error policy per stage."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from streamml.errors import InputError


class ErrorPolicy(StrEnum):
    """What happens to a record that fails a stage: stop the query, drop it (counted), or dead-letter it."""

    FAIL = "fail"
    SKIP = "skip"
    DEAD_LETTER = "dead-letter"


class Guarantee(StrEnum):
    EXACTLY_ONCE = "exactly_once"
    AT_LEAST_ONCE = "at_least_once"


class RuntimeOptions(BaseModel):
    """Knobs of the query runtime; frozen, so one instance is shared by every worker thread."""

    model_config = ConfigDict(frozen=True)

    max_batch: int = Field(default=10_000, ge=1, description="Largest micro-batch in records.")
    max_wait_ms: int = Field(default=100, ge=1, description="Deadline of a micro-batch under light load.")
    guarantee: Guarantee = Guarantee.EXACTLY_ONCE
    on_decode_error: ErrorPolicy = ErrorPolicy.DEAD_LETTER
    on_eval_error: ErrorPolicy = ErrorPolicy.DEAD_LETTER
    on_predict_error: ErrorPolicy = ErrorPolicy.DEAD_LETTER
    on_produce_error: ErrorPolicy = ErrorPolicy.DEAD_LETTER
    latency_column: bool = Field(default=False, description="Add a LATENCY_MS column to every output value.")

    @staticmethod
    def policies(specs: list[str]) -> dict[str, ErrorPolicy]:
        """Option fields from ``STAGE=POLICY`` texts (``predict=fail``), as ``streamml run --on-error`` takes them."""
        fields: dict[str, ErrorPolicy] = {}
        for spec in specs:
            stage, _, policy = spec.partition("=")
            field = _STAGE_FIELDS.get(stage.strip().lower())
            if field is None or policy.strip().lower() not in {p.value for p in ErrorPolicy}:
                raise InputError(
                    f"cannot read error policy '{spec}'",
                    hint="write STAGE=POLICY with STAGE one of decode, evaluate, predict, produce and POLICY one "
                    "of dead-letter, skip, fail",
                )
            fields[field] = ErrorPolicy(policy.strip().lower())
        return fields

    def policy(self, stage: str) -> ErrorPolicy:
        """The error policy of a stage: ``decode``, ``evaluate``, ``predict`` or ``produce``."""
        policy: ErrorPolicy = getattr(self, _STAGE_FIELDS.get(stage, "on_eval_error"))
        return policy


_STAGE_FIELDS = {
    "decode": "on_decode_error",
    "evaluate": "on_eval_error",
    "predict": "on_predict_error",
    "produce": "on_produce_error",
}
