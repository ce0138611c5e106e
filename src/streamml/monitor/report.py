"""The numbers a monitor publishes for one window: drift when its predictions are in, quality once it settles.

:func:`window_drift` compares, per model version, each watched feature and the score of the window with the
reference statistics on that version's card; :func:`window_metrics` adds the realised quality once the
labels are joined and gives the one metrics record per version and window that goes to the metrics topic
(and to the alert rules). Both work on whole columns (see :mod:`streamml.monitor.quality` and
:mod:`streamml.monitor.drift`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamml.models.card import ModelCard
from streamml.monitor.drift import drift_summary, feature_drift, output_drift
from streamml.monitor.labeljoin import Window
from streamml.monitor.quality import window_quality
from streamml.monitor.spec import MonitorSpec

#: the card of a model version (None when the registry does not have it)
CardOf = Callable[[int], ModelCard | None]


def by_version(rows: pa.Table) -> dict[int, pa.Table]:
    """``rows`` split by ``VERSION`` (a row with no version counts as version 0)."""
    versions = pc.fill_null(rows.column("VERSION"), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return {int(v): rows.filter(pa.array(versions == v)) for v in np.unique(versions)}


def window_drift(window: Window, features: list[str], card_of: CardOf) -> dict[int, dict[str, Any]]:
    """Per version: ``{"features": {name: FeatureDrift dict}, "score": dict | None, **drift_summary}``."""
    drifts: dict[int, dict[str, Any]] = {}
    for version, rows in by_version(window.rows).items():
        card = card_of(version)
        reference = card.reference if card is not None else None
        if reference is None:
            drifts[version] = {"features": {}, "score": None, **drift_summary({})}
            continue
        live = {name: rows.column(f"FEATURE_{i}") for i, name in enumerate(features)}
        per_feature = feature_drift(reference, live)
        # the reference holds the anomaly score as PREDICT returns it; a classifier's probability output is
        # that of the predicted class, not the positive one the monitor scores, so it is not compared
        score_name = "score" if "score" in reference.outputs else None
        score = None
        if score_name is not None:
            score = output_drift(reference, {score_name: rows.column("SCORE")}).get(score_name)
        drifts[version] = {
            "features": {n: d.to_dict() for n, d in per_feature.items()},
            "score": score.to_dict() if score is not None else None,
            **drift_summary(per_feature),
        }
    return drifts


def window_metrics(
    spec: MonitorSpec, window: Window, drift: Mapping[int, Mapping[str, Any]], card_of: CardOf
) -> list[dict[str, Any]]:
    """One metrics record per version of a settled window (rows joined with ``LABEL``), oldest version first."""
    records = []
    for version, rows in sorted(by_version(window.rows).items()):
        card = card_of(version)
        quality = window_quality(
            rows.column("LABEL"),
            rows.column("PREDICTION"),
            scores=rows.column("SCORE").to_numpy(zero_copy_only=False).astype(np.float64),
            positive=spec.positive,
            threshold=card.threshold if card is not None else None,
        )
        found = drift.get(version) or {"features": {}, "score": None, **drift_summary({})}
        records.append({
            "monitor": spec.name,
            "model": spec.model,
            "version": version,
            "role": spec.role,
            "window_start_ms": window.start_ms,
            "window_end_ms": window.end_ms,
            **quality.to_dict(),
            "drift": {"features": found["features"], "score": found["score"]},
            **{k: v for k, v in found.items() if k not in ("features", "score")},
        })  # fmt: skip
    return records
