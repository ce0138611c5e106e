"""Watching models in production: realised quality once labels arrive, drift against the reference
statistics on the model card, alerts with hysteresis, the retraining loop and the dashboard.

The numbers (:mod:`.quality`, :mod:`.drift`, :mod:`.alerts`) and the label join (:mod:`.labeljoin`) are
broker-free and vectorised; :mod:`.worker` runs a monitor on Kafka exactly-once, :mod:`.supervisor` runs the
deployment's monitors, :mod:`.policy` retrains and promotes through a shadow, :mod:`.dashboard` shows it all.
"""

from streamml.monitor.alerts import (
    METRIC_ACCURACY,
    METRIC_DEAD_LETTER_RATE,
    METRIC_LATENCY_P99,
    Alert,
    Alerter,
    AlertRule,
    AlertState,
    default_rules,
)
from streamml.monitor.drift import (
    JS_THRESHOLD,
    METRIC_DRIFTED_FEATURES,
    METRIC_JS_MAX,
    METRIC_PSI_MAX,
    PSI_EPSILON,
    PSI_THRESHOLD,
    FeatureDrift,
    chi2_sf,
    column_drift,
    drift_summary,
    feature_drift,
    output_drift,
)
from streamml.monitor.quality import CalibrationBin, Quality, average_precision, roc_auc, window_quality

__all__ = [
    "JS_THRESHOLD",
    "METRIC_ACCURACY",
    "METRIC_DEAD_LETTER_RATE",
    "METRIC_DRIFTED_FEATURES",
    "METRIC_JS_MAX",
    "METRIC_LATENCY_P99",
    "METRIC_PSI_MAX",
    "PSI_EPSILON",
    "PSI_THRESHOLD",
    "Alert",
    "AlertRule",
    "AlertState",
    "Alerter",
    "CalibrationBin",
    "FeatureDrift",
    "Quality",
    "average_precision",
    "chi2_sf",
    "column_drift",
    "default_rules",
    "drift_summary",
    "feature_drift",
    "output_drift",
    "roc_auc",
    "window_quality",
]
