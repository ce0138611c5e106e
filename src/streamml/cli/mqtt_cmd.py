"""``streamml mqtt``: the local Mosquitto broker's lifecycle, and the MQTT -> Kafka bridge."""

from __future__ import annotations

import signal
import threading
import time

import typer
from rich.console import Console

from streamml.cli.state import state
from streamml.errors import BrokerError, ConfigError, TopicNotFoundError
from streamml.ingest.mqtt import BridgeOptions, MqttBridge, parse_rules
from streamml.kafka import Admin, client_config
from streamml.kafka.mosquitto import LocalMosquitto, parse_address
from streamml.runtime.naming import dead_letter_topic
from streamml.runtime.observe import StatusPublisher

app = typer.Typer(help="Run the local MQTT broker (Mosquitto) and bridge MQTT into Kafka.", no_args_is_help=True)
out = Console(highlight=False)


@app.command()
def start(ctx: typer.Context, timeout: float = typer.Option(15.0, help="Seconds to wait for readiness.")) -> None:
    """Start Mosquitto under the local home and print its address."""
    info = LocalMosquitto(state(ctx).settings).start(timeout_s=timeout)
    verb = "already running" if info.already_running else "started"
    out.print(f"Mosquitto {info.version} {verb} at [bold]{info.address}[/] (pid {info.pid})")


@app.command()
def stop(ctx: typer.Context, timeout: float = typer.Option(10.0, help="Seconds before a forced kill.")) -> None:
    """Stop Mosquitto gracefully (saving its persistence file), forcibly after the timeout."""
    if LocalMosquitto(state(ctx).settings).stop(timeout_s=timeout):
        out.print("Mosquitto stopped")
    else:
        out.print("Mosquitto was not running")


@app.command()
def status(ctx: typer.Context) -> None:
    """Say whether Mosquitto runs, where, and since when. Exits 1 when it is not running."""
    info = LocalMosquitto(state(ctx).settings).status()
    if not info.running:
        out.print(f"Mosquitto is not running (home {info.home})")
        raise typer.Exit(1)
    uptime = time.time() - (info.started_at or time.time())
    out.print(f"Mosquitto {info.version} running at [bold]{info.address}[/] (pid {info.pid}, up {uptime:.0f} s)")


@app.command()
def bridge(
    ctx: typer.Context,
    maps: list[str] = typer.Option(
        ..., "--map", help="MQTT_FILTER=KAFKA_TOPIC, e.g. 'vehicles/sensor/data/{car}=sensor-data'; first match wins."
    ),
    keys: list[str] = typer.Option(
        [], "--key", help="Kafka key template, e.g. '{car}': once for every --map, or once per --map (default: topic)."
    ),
    mqtt: str | None = typer.Option(
        None, "--mqtt", envvar="STREAMML_MQTT", help="MQTT broker HOST:PORT (default: the local Mosquitto)."
    ),
    client_id: str = typer.Option("streamml-bridge", "--client-id", help="Fixed client id of the persistent session."),
    workers: int = typer.Option(1, "--workers", min=1, help="MQTT clients sharing the subscription ($share)."),
    fmt: str = typer.Option("raw", "--format", help="raw: any bytes; json: a payload must be a JSON object."),
    dead_letter: str | None = typer.Option(
        None,
        "--dead-letter",
        help="Dead-letter topic (default: <service>_MQTT_<CLIENT ID>_dlq; 'streamml dlq show mqtt_<client id>').",
    ),
    receive_maximum: int = typer.Option(
        2000, "--in-flight", min=1, max=65535, help="Unacknowledged messages per client."
    ),
    stats_every: float = typer.Option(10.0, "--stats-every", help="Seconds between counter log lines (-v shows them)."),
) -> None:
    """Bridge MQTT messages into Kafka, acknowledging each one only after Kafka has it; runs until stopped."""
    if fmt not in ("raw", "json"):
        raise ConfigError(f"unknown --format '{fmt}'", hint="use raw or json")
    rules = parse_rules(maps, keys)
    settings = state(ctx).settings
    if mqtt is None:
        info = LocalMosquitto(settings).status()
        if not info.running or not info.address:
            raise BrokerError(
                "no MQTT broker given and the local Mosquitto is not running",
                hint="start it with 'streamml mqtt start' or pass --mqtt HOST:PORT",
            )
        mqtt = info.address
    host, port = parse_address(mqtt)
    config = client_config(settings)
    dlq = dead_letter or dead_letter_topic(settings.service_id, f"MQTT_{client_id}".upper())
    admin = Admin(config)
    for rule in rules:  # a fixed target must exist (a templated one is checked by its first delivery)
        if "{" not in rule.kafka_topic and not admin.exists(rule.kafka_topic):
            raise TopicNotFoundError(rule.kafka_topic)
    admin.create_topic(dlq, partitions=1, if_not_exists=True)
    options = BridgeOptions(
        host=host, port=port, client_id=client_id, workers=workers, format=fmt,  # type: ignore[arg-type]
        dead_letter_topic=dlq, receive_maximum=receive_maximum, stats_every_s=stats_every,
    )  # fmt: skip
    runner = MqttBridge(rules, config, options)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    runner.start()
    publisher = StatusPublisher(settings, lambda: {"queries": [runner.snapshot()], "refusals": []}).start()
    targets = ", ".join(f"{r.filter} -> {r.kafka_topic}" for r in rules)
    out.print(f"bridging MQTT {host}:{port} to Kafka: {targets} (dead letters: {dlq})", markup=False)
    try:
        stats = runner.run(stopping)
    finally:
        publisher.stop()
    out.print(f"bridge stopped: {stats.line()}", markup=False)
