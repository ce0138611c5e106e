"""The ``streamml`` command line: Typer commands that translate arguments, print with Rich, map errors."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from streamml.cli import (
    bench_cmd,
    consume_cmd,
    dashboard_cmd,
    demo_cmd,
    dlq_cmd,
    kafka_cmd,
    models_cmd,
    monitor_cmd,
    mqtt_cmd,
    produce_cmd,
    request_cmd,
    serve_cmd,
    simulate_cmd,
    sql_cmd,
    status_cmd,
    topic_cmd,
    train_cmd,
)
from streamml.cli.errors import fail
from streamml.cli.state import AppState

app = typer.Typer(
    name="streamml",
    help="Real-time machine learning on Apache Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(kafka_cmd.app, name="kafka")
app.add_typer(topic_cmd.app, name="topic")
app.add_typer(demo_cmd.app, name="demo")
app.add_typer(dlq_cmd.app, name="dlq")
app.add_typer(simulate_cmd.app, name="simulate")
app.add_typer(models_cmd.app, name="models")
app.add_typer(mqtt_cmd.app, name="mqtt")
app.add_typer(monitor_cmd.app, name="monitor")
app.command("train")(train_cmd.train)
app.command("bench")(bench_cmd.bench)
app.command("sql")(sql_cmd.sql)
app.command("run")(sql_cmd.run)
app.command("status")(status_cmd.status)
app.command("produce")(produce_cmd.produce)
app.command("consume")(consume_cmd.consume)
app.command("serve")(serve_cmd.serve)
app.command("dashboard")(dashboard_cmd.dashboard)
app.command("request")(request_cmd.request)


@app.callback()
def root(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", envvar="STREAMML_CONFIG", help="TOML config file."),
    bootstrap: str | None = typer.Option(
        None, "--bootstrap", "-b", envvar="STREAMML_BOOTSTRAP", help="Use this Kafka cluster; start nothing."
    ),
    home: Path | None = typer.Option(None, "--home", envvar="STREAMML_HOME", help="Folder for local state."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show info logs."),
) -> None:
    """Real-time machine learning on Apache Kafka."""
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not (debug or verbose):  # librdkafka's transient warnings (retries while a broker warms up) are noise here
        logging.getLogger("streamml.kafka.client").setLevel(logging.ERROR)
    ctx.obj = AppState(config_file=config, bootstrap=bootstrap, home=home, debug=debug)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the app and turns every error into one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    try:
        code = app(args=args, prog_name="streamml", standalone_mode=False)
    except BaseException as exc:  # the one place where errors meet the user
        if isinstance(exc, SystemExit):
            raise
        fail(exc, debug="--debug" in args)
    if isinstance(code, int) and code:  # typer.Exit(n) inside a command returns n here
        sys.exit(code)


if __name__ == "__main__":
    main()
