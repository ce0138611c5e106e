"""``streamml dlq``: look at a query's dead letters, and send them back to their source after a fix."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from streamml.cli.state import state
from streamml.kafka import Admin, BatchConsumer, Producer, client_config
from streamml.kafka.headers import H_KIND, H_MESSAGE, H_OFFSET, H_PARTITION, H_TOPIC
from streamml.runtime.deadletter import header_dict
from streamml.runtime.naming import dead_letter_topic

app = typer.Typer(help="Dead letters of persistent queries.", no_args_is_help=True)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


@app.command("show")
def show(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="Query id, e.g. CSAS_SCORED_0."),
    limit: int = typer.Option(50, "--limit", "-n", min=1),
) -> None:
    """List dead letters: where each came from and why it failed."""
    config = client_config(state(ctx).settings)
    table = Table("offset", "kind", "source", "reason", "value")
    count = 0
    with BatchConsumer(
        config, [dead_letter_topic(state(ctx).settings.service_id, query.upper())], track_end=True
    ) as reader:
        while not reader.reached_end() and count < limit:
            batch = reader.poll_batch(limit - count, 0.5)
            for offset, value, headers in zip(batch.offsets, batch.values, batch.headers, strict=True):
                h = header_dict(headers)
                source = f"{h.get(H_TOPIC)}[{h.get(H_PARTITION)}]@{h.get(H_OFFSET)}"
                preview = (value or b"").decode(errors="replace")[:60]
                table.add_row(str(offset), h.get(H_KIND, ""), source, h.get(H_MESSAGE, ""), preview)
                count += 1
    out.print(table)
    err.print(f"{count} dead letters")


@app.command("replay")
def replay(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="Query id whose dead letters go back to their source topics."),
) -> None:
    """Produce each dead letter again to the topic it came from (each one once: progress is committed)."""
    settings = state(ctx).settings
    config = client_config(settings)
    topic = dead_letter_topic(state(ctx).settings.service_id, query.upper())
    Admin(config).describe_topic(topic, with_offsets=False)  # a clear error when there is none
    group = f"{settings.service_id}_dlq_replay_{query.upper()}"
    replayed = 0
    with BatchConsumer(config, [topic], group_id=group, track_end=True) as reader, Producer(config) as producer:
        while not reader.reached_end():
            batch = reader.poll_batch(1000, 0.5)
            by_source: dict[str, tuple[list[bytes | None], list[bytes | None]]] = {}
            for key, value, headers in zip(batch.keys, batch.values, batch.headers, strict=True):
                source = header_dict(headers).get(H_TOPIC)
                if source:
                    keys, values = by_source.setdefault(source, ([], []))
                    keys.append(key)
                    values.append(value)
            for source, (keys, values) in by_source.items():
                producer.produce_batch(source, values, keys)
                replayed += len(values)
            if len(batch):
                producer.flush()
                reader.commit(batch.next_offsets())
    out.print(f"replayed {replayed} dead letters of {query.upper()} to their source topics")
