"""``streamml simulate``: seeded synthetic event streams for demos, tests and benchmarks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from streamml.cli.state import state
from streamml.errors import InputError
from streamml.ingest.car_stream import KafkaSink, MqttPublisher, fleet_batches, parse_mqtt_address, stream_fleet
from streamml.ingest.cars import FAILURE_MODES, CarFleet, parse_failure_rates
from streamml.ingest.census import ADULT_ROWS, census_chunks
from streamml.ingest.transactions import stream_transactions, transaction_chunks, write_csv
from streamml.kafka import Admin, Producer, client_config

app = typer.Typer(help="Generate synthetic event streams.", no_args_is_help=True)
err = Console(stderr=True, highlight=False)
_MODES = ", ".join(FAILURE_MODES)


@app.command("transactions")
def simulate_transactions(
    ctx: typer.Context,
    topic: str | None = typer.Option(None, "--topic", "-t", help="Produce to this topic (created if missing)."),
    rate: float | None = typer.Option(None, "--rate", "-r", min=0.001, help="Records per second."),
    count: int | None = typer.Option(
        None, "--count", "-n", min=1, help="How many (default 100k, endless with --rate)."
    ),
    fraud_rate: float = typer.Option(0.002, "--fraud-rate", min=0.0, max=1.0, help="Share of frauds."),
    seed: int = typer.Option(42, "--seed", help="Seed: the same seed gives the same records."),
    csv: Path | None = typer.Option(None, "--csv", help="Write a CSV file (with header) instead of producing."),
    fmt: str = typer.Option("delimited", "--format", help="Value format on the topic: delimited | json | avro."),
    partitions: int = typer.Option(3, "--partitions", min=1, help="Partitions if the topic is created."),
) -> None:
    """Credit-card-like transactions (Id, Timestamp, User, Time, V1..V28, Amount, Class)."""
    if (topic is None) == (csv is None):
        raise InputError("give exactly one of --topic and --csv")
    if count is None and (rate is None or csv is not None):
        count = 100_000
    chunks = transaction_chunks(count, fraud_rate=fraud_rate, seed=seed)
    _write_or_produce(ctx, "transactions", chunks, count, topic, csv, fmt, rate, partitions, key="Id")


@app.command("census")
def simulate_census(
    ctx: typer.Context,
    topic: str | None = typer.Option(None, "--topic", "-t", help="Produce to this topic (created if missing)."),
    csv: Path | None = typer.Option(None, "--csv", help="Write a CSV file (with header) instead of producing."),
    count: int | None = typer.Option(
        None, "--count", "-n", min=1, help=f"How many (default {ADULT_ROWS:,}, endless with --rate)."
    ),
    seed: int = typer.Option(42, "--seed", help="Seed: the same seed gives the same records."),
    fmt: str = typer.Option("json", "--format", help="Value format on the topic: json | delimited | avro."),
    partitions: int = typer.Option(3, "--partitions", min=1, help="Partitions if the topic is created."),
    rate: float | None = typer.Option(None, "--rate", "-r", min=0.001, help="Records per second."),
) -> None:
    """Census-income records with the Adult data's columns (age, workclass, ..., native_country, income)."""
    if (topic is None) == (csv is None):
        raise InputError("give exactly one of --topic and --csv")
    if count is None and (rate is None or csv is not None):
        count = ADULT_ROWS
    chunks = census_chunks(count, seed=seed)
    _write_or_produce(ctx, "census records", chunks, count, topic, csv, fmt, rate, partitions, key=None)


def _write_or_produce(
    ctx: typer.Context,
    what: str,
    chunks: Iterator[pa.Table],
    count: int | None,
    topic: str | None,
    csv: Path | None,
    fmt: str,
    rate: float | None,
    partitions: int,
    *,
    key: str | None,
) -> None:
    """Write ``chunks`` to ``csv``, or produce them to ``topic`` (created if missing) with a progress bar."""
    if csv is not None:
        rows = write_csv(chunks, csv)
        err.print(f"wrote {rows:,} {what} to {csv}")
        return
    assert topic is not None
    config = client_config(state(ctx).settings)
    Admin(config).create_topic(topic, partitions=partitions, if_not_exists=True)
    bar = Progress(TextColumn(f"{what} → [bold]{topic}[/]"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=err, disable=not err.is_terminal)  # fmt: skip
    with bar, Producer(config) as producer:
        task = bar.add_task("simulate", total=count)
        try:
            sent = stream_transactions(producer, topic, chunks, fmt, rate, lambda n: bar.advance(task, n), key=key)
        except KeyboardInterrupt:
            sent = int(bar.tasks[0].completed)
    err.print(f"produced {sent:,} {what} to {topic}")


@app.command("cars")
def simulate_cars(
    ctx: typer.Context,
    cars: int = typer.Option(25, "--cars", "-c", min=1, help="Cars in the fleet; each sends one reading a step."),
    mqtt: str | None = typer.Option(None, "--mqtt", help="Publish to this MQTT broker (HOST:PORT), QoS 1."),
    topic: str | None = typer.Option(None, "--topic", "-t", help="Produce to this Kafka topic (created if missing)."),
    rate: float | None = typer.Option(None, "--rate", "-r", min=0.001, help="Readings per second (all cars)."),
    count: int | None = typer.Option(
        None, "--count", "-n", min=1, help="How many readings (default 1000 per car, endless with --rate)."
    ),
    duration: float | None = typer.Option(None, "--duration", min=0.0, help="Stop after this many seconds."),
    seed: int = typer.Option(42, "--seed", help="Seed: the same seed gives the same readings."),
    failure_rate: list[str] | None = typer.Option(
        None,
        "--failure-rate",
        help=f"Failures per reading: RATE for every mode or MODE=RATE ({_MODES}).",
    ),
    outdated_share: float = typer.Option(
        0.25, "--outdated-share", min=0.0, max=1.0, help="Share of cars on outdated firmware (they fail more often)."
    ),
    ksql_names: bool = typer.Option(
        False, "--ksql-names", help="Spell tyre/accelerometer fields as the demo's KSQL does (tire_pressure11)."
    ),
    partitions: int = typer.Option(3, "--partitions", min=1, help="Partitions if the topic is created."),
) -> None:
    """Connected-car sensor readings with failures that announce themselves, to MQTT or Kafka (JSON)."""
    if (topic is None) == (mqtt is None):
        raise InputError("give exactly one of --mqtt and --topic")
    if count is None and duration is None and rate is None:
        count = 1000 * cars
    fleet = CarFleet(cars, seed=seed, failure_rates=parse_failure_rates(failure_rate), outdated_share=outdated_share)
    batches = fleet_batches(fleet, count, rate, duration)
    target = f"MQTT {mqtt} (vehicles/sensor/data/<car>)" if mqtt else f"[bold]{topic}[/]"
    bar = Progress(TextColumn(f"cars → {target}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err, disable=not err.is_terminal)  # fmt: skip
    with bar:
        task = bar.add_task("simulate", total=count)

        def advance(n: int) -> None:
            bar.advance(task, n)

        if mqtt is not None:
            host, port = parse_mqtt_address(mqtt)
            publisher = MqttPublisher(host, port, ksql_names=ksql_names)
            try:
                sent = stream_fleet(publisher, batches, advance)
            except KeyboardInterrupt:
                sent = int(bar.tasks[0].completed)
            finally:
                publisher.close()
            err.print(f"published {sent:,} readings of {cars} cars to MQTT {mqtt}")
            return
        assert topic is not None
        config = client_config(state(ctx).settings)
        Admin(config).create_topic(topic, partitions=partitions, if_not_exists=True)
        with Producer(config) as producer:
            try:
                sent = stream_fleet(KafkaSink(producer, topic, ksql_names=ksql_names), batches, advance)
            except KeyboardInterrupt:
                sent = int(bar.tasks[0].completed)
            producer.flush()
    err.print(f"produced {sent:,} readings of {cars} cars to {topic}")
