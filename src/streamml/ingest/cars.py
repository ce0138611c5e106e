"""A seeded, vectorised fleet of connected cars: the sensor readings of the MQTT / Kafka predictive-maintenance demo.

Each time step every car sends one reading with the reference demo's fields, spelled as its simulator wrote
them in JSON (``time`` in epoch seconds, ``car`` as ``car1``, ``car2``, ...):

    coolant_temp, intake_air_temp, intake_air_flow_speed, battery_percentage, battery_voltage, current_draw,
    speed, engine_vibration_amplitude, throttle_pos, tire_pressure_1_1, tire_pressure_1_2, tire_pressure_2_1,
    tire_pressure_2_2, accelerometer_1_1_value, accelerometer_1_2_value, accelerometer_2_1_value,
    accelerometer_2_2_value, control_unit_firmware, failure_occurred ("true" / "false")

The demo's KSQL stream spells the tyre and accelerometer columns without the inner underscores
(``tire_pressure11``, ``accelerometer11_value``); :data:`KSQL_NAMES` and :func:`ksql_spelling` give that
spelling.

The model: every car has its own baselines (engine temperature, ambient air, tyre pressures, wheel vibration,
battery voltage) and drives at a speed that follows a cruise target; the other signals depend on speed,
throttle and noise. Four failure modes start at random (a rate per reading for a healthy car) and develop
over a lead of 10-40 readings before the reading that carries ``failure_occurred = "true"``:

- ``tire_pressure_loss``: one tyre's pressure decays (about -14 psi at the failure);
- ``shock_absorber``: the accelerometer amplitude of one wheel grows (about 5x);
- ``drive_shaft``: engine vibration grows (about 2.5x) and current draw rises;
- ``overheating``: the coolant temperature climbs (about +28 degrees C).

After the failing reading the car is repaired (back to its baseline) and can fail again. Cars whose
``control_unit_firmware`` is outdated (1000 against the current 2000) fail ``outdated_factor`` times as often.

Reproducible: the same seed gives the same readings, however the steps are split into batches (every random
stream draws the same numbers per step). The state evolves with NumPy over all cars per step; the fields are
then computed over the whole block of steps at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamml.errors import InputError
from streamml.formats.json import JsonFormat

#: failure modes, in the order their rates are given
FAILURE_MODES = ("tire_pressure_loss", "shock_absorber", "drive_shaft", "overheating")
#: default rate per reading of a healthy car with current firmware, per mode
DEFAULT_RATE = 0.001
CURRENT_FIRMWARE = 2000
OUTDATED_FIRMWARE = 1000
WHEELS = ("1_1", "1_2", "2_1", "2_2")
TIRE_FIELDS = [f"tire_pressure_{w}" for w in WHEELS]
ACCELEROMETER_FIELDS = [f"accelerometer_{w}_value" for w in WHEELS]
#: the 19 fields of a reading, in the demo's order and spelling
SENSOR_FIELDS = [
    "coolant_temp",
    "intake_air_temp",
    "intake_air_flow_speed",
    "battery_percentage",
    "battery_voltage",
    "current_draw",
    "speed",
    "engine_vibration_amplitude",
    "throttle_pos",
    *TIRE_FIELDS,
    *ACCELEROMETER_FIELDS,
    "control_unit_firmware",
    "failure_occurred",
]
#: the demo's KSQL spelling of the fields whose JSON names differ
KSQL_NAMES = {f"tire_pressure_{w}": f"tire_pressure{w.replace('_', '')}" for w in WHEELS} | {
    f"accelerometer_{w}_value": f"accelerometer{w.replace('_', '')}_value" for w in WHEELS
}
MQTT_TOPIC_PREFIX = "vehicles/sensor/data/"
#: ground-truth column (the mode a car's failure is developing, null when healthy), only with ``labels=True``
LABEL_COLUMN = "failure_mode"

_INTS = set(TIRE_FIELDS) | {"control_unit_firmware"}
_NOISE = 15  # normal draws per car and step: one per noisy signal


def car_schema(labels: bool = False) -> pa.Schema:
    """Arrow schema of a reading: ``time`` (epoch s), ``car``, the 19 sensor fields (+ the label column)."""
    fields = [pa.field("time", pa.int64()), pa.field("car", pa.string())]
    for name in SENSOR_FIELDS:
        if name == "failure_occurred":
            fields.append(pa.field(name, pa.string()))
        else:
            fields.append(pa.field(name, pa.int32() if name in _INTS else pa.float64()))
    if labels:
        fields.append(pa.field(LABEL_COLUMN, pa.string()))
    return pa.schema(fields)


def parse_failure_rates(specs: list[str] | None) -> dict[str, float]:
    """Rates per mode from ``["0.002"]`` (every mode) or ``["overheating=0.01,drive_shaft=0"]``, later wins."""
    rates = dict.fromkeys(FAILURE_MODES, DEFAULT_RATE)
    for spec in specs or []:
        for part in filter(None, (p.strip() for p in spec.split(","))):
            mode, _, value = part.rpartition("=")
            if mode and mode not in FAILURE_MODES:
                raise InputError(f"unknown failure mode '{mode}' in --failure-rate; modes: {', '.join(FAILURE_MODES)}")
            try:
                rate = float(value)
            except ValueError:
                raise InputError(f"--failure-rate '{part}': expected a number or MODE=NUMBER") from None
            if not 0.0 <= rate <= 1.0:
                raise InputError(f"--failure-rate '{part}': a rate per reading lies between 0 and 1")
            for m in [mode] if mode else FAILURE_MODES:
                rates[m] = rate
    return rates


class CarFleet:
    """``cars`` simulated cars; :meth:`readings` advances them by some steps and returns one row per car and step.

    >>> fleet = CarFleet(3, seed=7)
    >>> t = fleet.readings(4)
    >>> t.num_rows, t.column("car").to_pylist()[:4]
    (12, ['car1', 'car2', 'car3', 'car1'])
    >>> CarFleet(3, seed=7).readings(4).equals(t)
    True
    """

    def __init__(
        self,
        cars: int = 25,
        *,
        seed: int = 42,
        failure_rates: Mapping[str, float] | None = None,
        outdated_share: float = 0.25,
        outdated_factor: float = 3.0,
        lead: tuple[int, int] = (10, 40),
        start: datetime | None = None,
        labels: bool = False,
    ) -> None:
        if cars < 1:
            raise InputError("a fleet needs at least one car")
        if not 1 <= lead[0] <= lead[1]:
            raise InputError(f"lead {lead}: expected 1 <= shortest <= longest readings")
        rates = dict.fromkeys(FAILURE_MODES, DEFAULT_RATE) | dict(failure_rates or {})
        unknown = set(rates) - set(FAILURE_MODES)
        if unknown:
            raise InputError(f"unknown failure modes {sorted(unknown)}; modes: {', '.join(FAILURE_MODES)}")
        self.cars = cars
        self.labels = labels
        self.schema = car_schema(labels)
        self.lead = lead
        self.failure_rates = {m: float(rates[m]) for m in FAILURE_MODES}
        self.step = 0
        self._t0 = int((start or datetime(2026, 1, 1, tzinfo=UTC)).timestamp())
        streams = np.random.SeedSequence(seed).spawn(5)
        base = np.random.default_rng(streams[0])
        self._drive_z = np.random.default_rng(streams[1])  # speed noise: standard_normal (steps, cars)
        self._drive_u = np.random.default_rng(streams[2])  # cruise target changes: random (steps, cars, 2)
        self._fail_u = np.random.default_rng(streams[3])  # onset, mode, lead, wheel: random (steps, cars, 4)
        self._noise = np.random.default_rng(streams[4])  # sensor noise: standard_normal (steps, cars, _NOISE)
        # per-car baselines
        self.outdated = base.random(cars) < outdated_share
        self.firmware = np.where(self.outdated, OUTDATED_FIRMWARE, CURRENT_FIRMWARE).astype(np.int32)
        self.coolant_base = base.normal(89.0, 2.0, cars)
        self.ambient = base.uniform(5.0, 32.0, cars)
        self.tire_base = base.uniform(31.0, 35.0, (cars, 4))
        self.accel_base = base.uniform(0.05, 0.15, (cars, 4))
        self.vibration_base = base.normal(900.0, 80.0, cars)
        self.voltage_base = base.uniform(232.0, 248.0, cars)
        # driving state
        self._target = base.uniform(30.0, 110.0, cars)
        self._speed = self._target * base.uniform(0.5, 1.0, cars)
        self._battery = base.uniform(0.3, 1.0, cars)
        # failure state: mode index (-1 healthy), readings into the failure, its lead, the affected wheel
        self._mode = np.full(cars, -1, np.int8)
        self._progress = np.zeros(cars, np.int32)
        self._lead = np.zeros(cars, np.int32)
        self._wheel = np.zeros(cars, np.int8)
        per_mode = np.array([self.failure_rates[m] for m in FAILURE_MODES])
        total = per_mode.sum()
        self._cum_share = np.cumsum(per_mode) / total if total > 0 else np.zeros(len(per_mode))
        factor = np.where(self.outdated, outdated_factor, 1.0)
        self._onset_p = np.minimum(total * factor, 1.0)
        self._names = pa.array([f"car{i + 1}" for i in range(cars)], pa.string())

    def batches(self, steps: int | None = None, steps_per_batch: int = 1) -> Iterator[pa.Table]:
        """Tables of ``steps_per_batch`` steps each (the last may be shorter), ``steps`` in all (None: forever)."""
        done = 0
        while steps is None or done < steps:
            n = steps_per_batch if steps is None else min(steps_per_batch, steps - done)
            yield self.readings(n)
            done += n

    def readings(self, steps: int) -> pa.Table:
        """Advance every car by ``steps`` readings; rows are time-major (all cars of a step, then the next)."""
        c = self.cars
        z_drive = self._drive_z.standard_normal((steps, c))
        u_drive = self._drive_u.random((steps, c, 2))
        u_fail = self._fail_u.random((steps, c, 4))
        noise = self._noise.standard_normal((steps, c, _NOISE))
        speed = np.empty((steps, c))
        accel = np.empty((steps, c))
        battery = np.empty((steps, c))
        mode = np.empty((steps, c), np.int8)
        severity = np.zeros((steps, c))
        wheel = np.empty((steps, c), np.int8)
        failed = np.empty((steps, c), bool)
        lo, hi = self.lead
        for t in range(steps):  # one step of every car at once
            change = u_drive[t, :, 0] < 0.01
            self._target = np.where(change, 20.0 + 100.0 * u_drive[t, :, 1], self._target)
            previous = self._speed
            self._speed = np.clip(previous + 0.08 * (self._target - previous) + 2.0 * z_drive[t], 0.0, 180.0)
            accel[t] = self._speed - previous
            speed[t] = self._speed
            drained = self._battery - 2e-5 * self._speed - 5e-5
            self._battery = np.where(drained < 0.1, 1.0, drained)  # recharged when low
            battery[t] = self._battery
            developing = self._mode >= 0
            self._progress[developing] += 1
            onset = ~developing & (u_fail[t, :, 0] < self._onset_p)
            if onset.any():
                kind = np.searchsorted(self._cum_share, u_fail[t, :, 1], side="right").clip(0, len(FAILURE_MODES) - 1)
                self._mode = np.where(onset, kind, self._mode).astype(np.int8)
                self._progress = np.where(onset, 1, self._progress).astype(np.int32)
                drawn_lead = lo + (u_fail[t, :, 2] * (hi - lo + 1)).astype(np.int32)
                self._lead = np.where(onset, drawn_lead, self._lead).astype(np.int32)
                self._wheel = np.where(onset, (u_fail[t, :, 3] * 4).astype(np.int8), self._wheel).astype(np.int8)
            active = self._mode >= 0
            mode[t] = self._mode
            wheel[t] = self._wheel
            severity[t] = np.where(active, self._progress / np.maximum(self._lead, 1), 0.0)
            failed[t] = active & (self._progress >= self._lead)
            self._mode = np.where(failed[t], -1, self._mode).astype(np.int8)  # repaired after the failing reading
        table = self._fields(steps, speed, accel, battery, mode, severity, wheel, failed, noise)
        self.step += steps
        return table

    def _fields(
        self,
        steps: int,
        speed: np.ndarray,
        accel: np.ndarray,
        battery: np.ndarray,
        mode: np.ndarray,
        severity: np.ndarray,
        wheel: np.ndarray,
        failed: np.ndarray,
        noise: np.ndarray,
    ) -> pa.Table:
        """The readings of a block of steps, every field computed over (steps, cars) at once."""
        s = [np.where(mode == k, severity, 0.0) for k in range(len(FAILURE_MODES))]
        tyre, shock, shaft, heat = s
        n = noise
        throttle = np.clip(0.08 + 0.004 * speed + 0.05 * accel + 0.03 * n[..., 2], 0.0, 1.0)
        current = np.maximum(0.15 + 0.8 * throttle + 0.04 * n[..., 4] + 0.5 * shaft, 0.0)
        values: dict[str, np.ndarray] = {
            "coolant_temp": self.coolant_base + 0.04 * speed + 1.2 * n[..., 0] + 28.0 * heat,
            "intake_air_temp": self.ambient + 4.0 + 0.02 * speed + 0.8 * n[..., 1],
            "intake_air_flow_speed": np.maximum(4.0 + 0.9 * speed + 60.0 * throttle + 3.0 * n[..., 3], 0.0),
            "battery_percentage": battery,
            "battery_voltage": self.voltage_base + 40.0 * battery - 8.0 * current + 0.8 * n[..., 5],
            "current_draw": current,
            "speed": speed,
            "engine_vibration_amplitude": np.maximum(
                (self.vibration_base + 22.0 * speed + 60.0 * n[..., 6]) * (1.0 + 1.5 * shaft), 0.0
            ),
            "throttle_pos": throttle,
        }
        for j, name in enumerate(TIRE_FIELDS):
            loss = 14.0 * tyre * (wheel == j)
            values[name] = np.rint(self.tire_base[:, j] + 0.35 * n[..., 7 + j] - loss)
        for j, name in enumerate(ACCELEROMETER_FIELDS):
            grow = 1.0 + 4.0 * shock * (wheel == j)
            values[name] = np.abs(self.accel_base[:, j] + 0.003 * speed + 0.03 * n[..., 11 + j]) * grow
        rows = steps * self.cars
        columns: dict[str, pa.Array] = {
            "time": pa.array(np.repeat(self._t0 + self.step + np.arange(steps, dtype=np.int64), self.cars)),
            "car": self._names.take(pa.array(np.tile(np.arange(self.cars), steps))),
        }
        for name, v in values.items():
            flat = v.reshape(rows)
            columns[name] = pa.array(flat.astype(np.int32) if name in _INTS else np.round(flat, 4))
        columns["control_unit_firmware"] = pa.array(np.tile(self.firmware, steps))
        columns["failure_occurred"] = pa.array(["false", "true"]).take(pa.array(failed.reshape(rows).astype(np.int8)))
        if self.labels:
            flat_mode = mode.reshape(rows)
            columns[LABEL_COLUMN] = pa.array(list(FAILURE_MODES)).take(pa.array(flat_mode, mask=flat_mode < 0))
        return pa.table({f.name: columns[f.name] for f in self.schema}, schema=self.schema)


def ksql_spelling(table: pa.Table) -> pa.Table:
    """Rename the tyre and accelerometer columns to the demo's KSQL spelling (``tire_pressure11``, ...)."""
    return table.rename_columns([KSQL_NAMES.get(name, name) for name in table.column_names])


def published(table: pa.Table) -> pa.Table:
    """The columns a car publishes: the table without the ground-truth label column."""
    return table.drop_columns([LABEL_COLUMN]) if LABEL_COLUMN in table.column_names else table


def mqtt_messages(
    table: pa.Table, fmt: JsonFormat | None = None, prefix: str = MQTT_TOPIC_PREFIX
) -> list[tuple[str, bytes]]:
    """(MQTT topic, JSON payload) per reading: ``vehicles/sensor/data/<car>``, the whole table encoded at once."""
    out = published(table)
    payloads = (fmt or JsonFormat(out.schema)).encode(out)
    topics = pc.binary_join_element_wise(prefix, table.column("car"), "").to_pylist()
    return list(zip(topics, payloads, strict=True))


def kafka_records(table: pa.Table, fmt: JsonFormat | None = None) -> tuple[list[bytes], list[bytes]]:
    """(values, keys) for Kafka: the JSON of each reading, keyed by its car."""
    out = published(table)
    values = (fmt or JsonFormat(out.schema)).encode(out)
    keys = pc.cast(table.column("car"), pa.binary()).to_pylist()
    return values, keys
