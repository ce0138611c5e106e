"""Joining predictions with the labels that arrive later, window by window: the state of a monitor.

Predictions fall into tumbling windows of ``window_ms`` by their own timestamp. A label matches a prediction
of the same key whose timestamp is within ``within_ms`` of the label's (either side, as ksqlDB's ``WITHIN``);
when several match, the latest label wins. Two watermarks (the largest timestamp seen on each side) say
when a window is done:

- *complete* once the predictions watermark passes its end plus ``grace_ms``: every prediction of it is in,
  so drift can be computed (no label needed);
- *settled* once, in addition, the labels watermark passes its end plus ``within_ms`` plus ``grace_ms``:
  no label that could still match can come. Its predictions are joined with the labels, those without one
  count as unlabelled, and the window leaves memory. When the labels side is idle (the reader stands at its
  end), its watermark is taken to be the predictions watermark, so a topic whose labels stopped coming
  still settles.

A prediction for a window that has settled already, and a label for predictions that have all settled, is
*late*: counted and dropped. State is bounded: predictions for ``window + within + grace`` of event time and
the labels that can still match them. Everything is vectorised over whole batches (Arrow, DuckDB); what was
added since the last call of :meth:`LabelJoin.take_changes` is returned as tables, so a worker persists
appends rather than the whole state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamml.errors import InputError

#: the columns every predictions table has (feature columns may follow)
PREDICTION_COLUMNS = ("KEY", "VERSION", "PREDICTION", "SCORE", "TS")
#: the columns every labels table has
LABEL_COLUMNS = ("KEY", "LABEL", "TS")

#: before any timestamp: the mark of a side that has read nothing yet
NO_TIME = -(2**62)


@dataclass(frozen=True)
class Window:
    """The rows of one window of one monitor, all versions together."""

    start_ms: int
    end_ms: int
    #: predictions (with ``LABEL`` once settled; NULL where no label came)
    rows: pa.Table


class LabelJoin:
    """Predictions waiting for their labels, per window; see the module docstring for the rules."""

    def __init__(self, window_ms: int, within_ms: int, grace_ms: int = 0) -> None:
        if window_ms <= 0 or within_ms < 0 or grace_ms < 0:
            raise InputError(
                f"window must be positive and within, grace not negative (got {window_ms}, {within_ms}, {grace_ms})"
            )
        self.window_ms, self.within_ms, self.grace_ms = int(window_ms), int(within_ms), int(grace_ms)
        self.predictions: pa.Table | None = None
        self.labels: pa.Table | None = None
        self.predictions_watermark = NO_TIME
        self.labels_watermark = NO_TIME
        #: windows ending at or before this are complete (drift reported)
        self.completed_until = NO_TIME
        #: windows ending at or before this are settled (quality reported, rows dropped)
        self.settled_until = NO_TIME
        self.late_predictions = 0
        self.late_labels = 0
        self._added_predictions: list[pa.Table] = []
        self._added_labels: list[pa.Table] = []
        self._con: Any = None  # DuckDB, for the joins (opened on first use)

    # -- input ----------------------------------------------------------------------------------------------
    def add_predictions(self, table: pa.Table) -> None:
        """Add predictions (``KEY``, ``VERSION``, ``PREDICTION``, ``SCORE``, ``TS``, then any features)."""
        _require(table, PREDICTION_COLUMNS, "predictions")
        if table.num_rows == 0:
            return
        table = table.set_column(0, "KEY", _key(table.column("KEY")))
        ts = table.column("TS").to_numpy(zero_copy_only=False).astype(np.int64)
        late = self._window_end(ts) <= self.settled_until
        if late.any():
            self.late_predictions += int(late.sum())
            table = table.filter(pa.array(~late))
            ts = ts[~late]
        if table.num_rows == 0:
            return
        self.predictions_watermark = max(self.predictions_watermark, int(ts.max()))
        self.predictions = _append(self.predictions, table)
        self._added_predictions.append(table)

    def add_labels(self, table: pa.Table) -> None:
        """Add labels (``KEY``, ``LABEL``, ``TS``)."""
        _require(table, LABEL_COLUMNS, "labels")
        if table.num_rows == 0:
            return
        table = table.select(list(LABEL_COLUMNS))
        table = table.set_column(0, "KEY", _key(table.column("KEY")))
        ts = table.column("TS").to_numpy(zero_copy_only=False).astype(np.int64)
        late = ts + self.within_ms < self.settled_until
        if late.any():
            self.late_labels += int(late.sum())
            table = table.filter(pa.array(~late))
            ts = ts[~late]
        if table.num_rows == 0:
            return
        self.labels_watermark = max(self.labels_watermark, int(ts.max()))
        self.labels = _append(self.labels, table)
        self._added_labels.append(table)

    # -- output ---------------------------------------------------------------------------------------------
    def complete(self, predictions_mark: int | None = None) -> list[Window]:
        """Windows whose predictions are all in and were not returned before, oldest first (no labels).

        ``predictions_mark`` replaces the predictions watermark (the largest timestamp seen) where the caller
        knows better: with several partitions, the smallest of their own largest timestamps.
        """
        mark = (
            self.predictions_watermark
            if predictions_mark is None
            else min(predictions_mark, self.predictions_watermark)
        )
        until = self._floor(mark - self.grace_ms)
        windows = self._windows(self.completed_until, until)
        self.completed_until = max(self.completed_until, until)
        return windows

    def settle(
        self, labels_idle: bool = False, predictions_mark: int | None = None, labels_mark: int | None = None
    ) -> list[Window]:
        """Windows that can get no more labels, joined with them (``LABEL``), oldest first; they leave memory.

        ``labels_idle``: the labels reader stands at the end of its topic, so no label older than the
        predictions watermark is on its way. The marks replace the watermarks as in :meth:`complete`.
        """
        predictions = self.predictions_watermark
        predictions = predictions if predictions_mark is None else min(predictions_mark, predictions)
        labels = self.labels_watermark if labels_mark is None else min(labels_mark, self.labels_watermark)
        labels = max(labels, predictions) if labels_idle else labels
        horizon = min(predictions - self.grace_ms, labels - self.within_ms - self.grace_ms)
        until = self._floor(horizon)
        if until <= self.settled_until:
            return []
        windows = self._windows(self.settled_until, until)
        if windows:  # one join for every window settling now
            joined = self._join(pa.concat_tables([w.rows for w in windows]))
            offsets = np.cumsum([0] + [w.rows.num_rows for w in windows])
            windows = [Window(w.start_ms, w.end_ms, joined.slice(int(o), w.rows.num_rows))
                       for w, o in zip(windows, offsets, strict=False)]  # fmt: skip
        self.settled_until = until
        self.completed_until = max(self.completed_until, until)
        if self.predictions is not None:
            ends = self._window_end(self.predictions.column("TS").to_numpy(zero_copy_only=False).astype(np.int64))
            self.predictions = self.predictions.filter(pa.array(ends > until))
        if self.labels is not None:  # a label can only match predictions of windows that have not settled
            ts = self.labels.column("TS").to_numpy(zero_copy_only=False).astype(np.int64)
            self.labels = self.labels.filter(pa.array(ts + self.within_ms >= until))
        return windows

    def take_changes(self) -> tuple[pa.Table | None, pa.Table | None]:
        """Predictions and labels added since the last call (None when none), for a changelog."""
        predictions = pa.concat_tables(self._added_predictions) if self._added_predictions else None
        labels = pa.concat_tables(self._added_labels) if self._added_labels else None
        self._added_predictions, self._added_labels = [], []
        return predictions, labels

    # -- persistence ----------------------------------------------------------------------------------------
    def marks(self) -> dict[str, int]:
        """The watermarks and counters: with the appended tables, all a restore needs."""
        return {
            "predictions_watermark": self.predictions_watermark,
            "labels_watermark": self.labels_watermark,
            "completed_until": self.completed_until,
            "settled_until": self.settled_until,
            "late_predictions": self.late_predictions,
            "late_labels": self.late_labels,
        }

    def restore(self, marks: dict[str, Any], predictions: list[pa.Table], labels: list[pa.Table]) -> None:
        """Carry on from :meth:`marks` and the tables :meth:`take_changes` returned since the state was empty
        (rows that had left memory are dropped again)."""
        for name in self.marks():
            setattr(self, name, int(marks[name]))
        self.predictions = self.labels = None
        self._added_predictions, self._added_labels = [], []
        for table in predictions:
            ends = self._window_end(table.column("TS").to_numpy(zero_copy_only=False).astype(np.int64))
            self.predictions = _append(self.predictions, table.filter(pa.array(ends > self.settled_until)))
        for table in labels:
            ts = table.column("TS").to_numpy(zero_copy_only=False).astype(np.int64)
            self.labels = _append(self.labels, table.filter(pa.array(ts + self.within_ms >= self.settled_until)))

    @property
    def rows(self) -> int:
        """Rows held in memory (predictions and labels)."""
        return (self.predictions.num_rows if self.predictions is not None else 0) + (
            self.labels.num_rows if self.labels is not None else 0
        )

    # -- internals ------------------------------------------------------------------------------------------
    def _floor(self, ms: int) -> int:
        """The end of the last window that ends at or before ``ms``."""
        return (ms // self.window_ms) * self.window_ms

    def _window_end(self, ts: np.ndarray) -> np.ndarray:
        return (ts // self.window_ms + 1) * self.window_ms

    def _windows(self, after: int, until: int) -> list[Window]:
        """Windows ending in ``(after, until]`` that hold predictions, oldest first."""
        if self.predictions is None or until <= after:
            return []
        ts = self.predictions.column("TS").to_numpy(zero_copy_only=False).astype(np.int64)
        ends = self._window_end(ts)
        chosen = (ends > after) & (ends <= until)
        if not chosen.any():
            return []
        order = np.flatnonzero(chosen)
        order = order[np.argsort(ends[order], kind="stable")]
        sorted_ends = ends[order]
        bounds = np.flatnonzero(np.diff(sorted_ends)) + 1
        windows = []
        for part in np.split(order, bounds):
            end = int(ends[part[0]])
            windows.append(Window(end - self.window_ms, end, self.predictions.take(pa.array(part))))
        return windows

    def _join(self, rows: pa.Table) -> pa.Table:
        """``rows`` with the latest label within reach of each (``LABEL``, NULL where none)."""
        label_type = self.labels.schema.field("LABEL").type if self.labels is not None else pa.null()
        if self.labels is None or self.labels.num_rows == 0:
            return rows.append_column("LABEL", pa.nulls(rows.num_rows, label_type))
        left, right = rows.column("KEY"), self.labels.column("KEY")
        if left.type != right.type:  # integers on one side only: compare as text
            left, right = pc.cast(left, pa.string()), pc.cast(right, pa.string())
        keys = pa.table({"ROW": pa.array(np.arange(rows.num_rows)), "KEY": left, "TS": rows.column("TS")})
        # the latest label wins: rank them by (timestamp, arrival), one integer DuckDB can take the max of
        label_ts = self.labels.column("TS").to_numpy(zero_copy_only=False).astype(np.int64)
        rank = np.empty(len(label_ts), dtype=np.int64)
        rank[np.argsort(label_ts, kind="stable")] = np.arange(len(label_ts))
        labels = pa.table({"KEY": right, "LABEL": self.labels.column("LABEL"), "TS": self.labels.column("TS"),
                           "RANK": pa.array(rank)})  # fmt: skip
        if self._con is None:
            self._con = duckdb.connect()
        con = self._con
        con.register("p", keys)
        con.register("l", labels)
        try:
            matched = con.sql(
                "SELECT p.ROW, arg_max(l.LABEL, l.RANK) AS LABEL FROM p JOIN l ON p.KEY = l.KEY "
                f"AND abs(l.TS - p.TS) <= {self.within_ms:d} GROUP BY p.ROW"
            ).to_arrow_table()
        finally:
            con.unregister("p")
            con.unregister("l")
        positions = matched.column("ROW").to_numpy(zero_copy_only=False).astype(np.int64)
        index = np.full(rows.num_rows, -1, dtype=np.int64)
        index[positions] = np.arange(len(positions))
        label = matched.column("LABEL").cast(label_type).take(pa.array(index, mask=index < 0))
        return rows.append_column("LABEL", label)


def _require(table: pa.Table, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise InputError(f"{what} need the columns {', '.join(columns)}; missing {', '.join(missing)}")


def _key(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Join keys: integers as BIGINT (the fast join), anything else as text."""
    return pc.cast(values, pa.int64() if pa.types.is_integer(values.type) else pa.string())


def _append(held: pa.Table | None, table: pa.Table) -> pa.Table:
    if held is None:
        return table
    return pa.concat_tables([held, table], promote_options="permissive")
