"""The exception hierarchy: every error a user can act on derives from :class:`StreamMLError`.

Each error carries a one-line message that names what to fix (a config key, a topic, a statement line and
column, a model version) and an optional ``hint``. The CLI prints ``str(error)`` on one line and exits with
``error.exit_code``; library callers catch the specific subclass.
"""

from __future__ import annotations


class StreamMLError(Exception):
    """Root of all streamml errors."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(StreamMLError):
    """A configuration value is missing or invalid."""

    exit_code = 2


class BrokerError(StreamMLError):
    """The local broker could not be installed, started, stopped or reached."""

    exit_code = 3


class KafkaError(StreamMLError):
    """A Kafka operation failed (unreachable cluster, rejected request, failed delivery)."""

    exit_code = 4


class RecordRejected(KafkaError):
    """The cluster refused a record for itself (too large, invalid): retrying the same record cannot help."""


class TopicNotFoundError(KafkaError):
    """A topic that an operation needs does not exist."""

    def __init__(self, topic: str) -> None:
        super().__init__(f"topic '{topic}' does not exist", hint=f"create it with: streamml topic create {topic}")
        self.topic = topic


class FormatError(StreamMLError):
    """A serialization format is unknown or was configured wrongly (not a bad record: those are set aside)."""

    exit_code = 5


class InputError(StreamMLError):
    """User-supplied input (a file, stdin, a CLI argument) is malformed."""

    exit_code = 2


class SqlError(StreamMLError):
    """A statement is invalid; ``line`` and ``column`` are 1-based where known."""

    exit_code = 6

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        column: int | None = None,
        statement: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.line = line
        self.column = column
        self.statement = statement

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}: " if self.line is not None else ""
        text = f"{where}{super().__str__()}"
        if self.statement is not None and self.line is not None and self.column is not None:
            lines = self.statement.splitlines()
            if 0 < self.line <= len(lines):
                text += f"\n  {lines[self.line - 1]}\n  {' ' * (self.column - 1)}^"
        return text


class ModelError(StreamMLError):
    """A model could not be trained, exported, loaded, registered or evaluated."""

    exit_code = 7


class RegistryError(ModelError):
    """The model registry refused an operation (unknown model/version, corrupt artifact, failed check)."""
