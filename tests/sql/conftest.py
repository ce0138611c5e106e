from __future__ import annotations

import pytest

from streamml.sql import SqlEngine

V_COLS = ", ".join(f"V{i} double" for i in range(1, 29))
CREDITCARD_DDL = (
    "CREATE STREAM creditcardfraud_source (Id bigint, Timestamp varchar, User varchar, Time int, "
    f"{V_COLS}, Amount double, Class string) "
    "WITH (kafka_topic='creditcardfraud_source', value_format='DELIMITED', KEY='Id');"
)
USERS_DDL = (
    "CREATE TABLE users (userid varchar PRIMARY KEY, gender varchar, regionid varchar) "
    "WITH (kafka_topic='users', value_format='AVRO');"
)
CAR_DDL = (
    "CREATE STREAM car_data (coolant_temp DOUBLE, intake_air_temp DOUBLE, intake_air_flow_speed DOUBLE, "
    "battery_percentage DOUBLE, battery_voltage DOUBLE, current_draw DOUBLE, speed DOUBLE, "
    "engine_vibration_amplitude DOUBLE, throttle_pos DOUBLE, tire_pressure11 INT, tire_pressure12 INT, "
    "tire_pressure21 INT, tire_pressure22 INT, accelerometer11_value DOUBLE, accelerometer12_value DOUBLE, "
    "accelerometer21_value DOUBLE, accelerometer22_value DOUBLE, control_unit_firmware INT, "
    "failure_occurred VARCHAR) WITH (kafka_topic='car-data', value_format='JSON');"
)


@pytest.fixture
def engine() -> SqlEngine:
    eng = SqlEngine()
    eng.execute(CREDITCARD_DDL + "\n" + USERS_DDL + "\n" + CAR_DDL)
    return eng
