"""Configuration: frozen pydantic-settings models, read from ``STREAMML_*`` variables and an optional TOML file.

Environment variables are read only here, at the edge. librdkafka properties (SASL, SSL, ...) pass straight
through ``kafka_properties``; secret values among them are kept as ``SecretStr`` until handed to the client.

    STREAMML_BOOTSTRAP=broker:9092                       use that cluster, start nothing
    STREAMML_HOME=.streamml                              local state: broker data, logs, registry
                                                         (default: the nearest .streamml/ in the working
                                                         directory or a folder above it, as git finds .git)
    STREAMML_KAFKA_PROPERTIES='{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}'
    STREAMML_CONFIG=streamml.toml                        optional file with the same keys
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from streamml.errors import ConfigError

HOME_DIR = ".streamml"


def find_home(start: Path | None = None) -> Path:
    """The nearest ``.streamml/`` folder in ``start`` (default: the working directory) or a folder above it,
    as git looks for ``.git``; ``.streamml`` in the working directory when there is none."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / HOME_DIR).is_dir():
            return folder / HOME_DIR
    return Path(HOME_DIR)


_SECRET_SUFFIXES = ("password", "secret", "sasl.oauthbearer.client.secret", "ssl.key.password")


class Settings(BaseSettings):
    """All of streamml's settings; immutable once built."""

    model_config = SettingsConfigDict(env_prefix="STREAMML_", frozen=True, extra="forbid")

    bootstrap: str | None = Field(
        default=None, description="Bootstrap servers of an existing cluster; when set, nothing is started."
    )
    home: Path = Field(
        default_factory=find_home,
        description="Folder for local state (broker, registry); default: the nearest .streamml/ upward.",
    )
    cache_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamml",
        description="Cache for downloaded broker jars, outside the repository.",
    )
    kafka_version: str = Field(default="4.1.1", description="Apache Kafka version of the local broker.")
    broker_port: int = Field(default=9092, ge=0, le=65535, description="Local broker port (0: pick a free one).")
    controller_port: int = Field(default=9093, ge=0, le=65535, description="Local KRaft controller port.")
    broker_heap: str = Field(default="768m", description="JVM heap of the local broker.")
    mqtt_port: int = Field(default=1883, ge=0, le=65535, description="Local MQTT broker port (0: pick a free one).")
    kafka_properties: dict[str, str] = Field(
        default_factory=dict, description="librdkafka properties passed to every client."
    )
    kafka_secrets: dict[str, SecretStr] = Field(
        default_factory=dict, description="Secret librdkafka properties (sasl.password, ...)."
    )
    schema_registry_url: str | None = Field(default=None, description="Confluent-compatible schema registry.")
    registry_url: str | None = Field(
        default=None, description="Model registry: a folder or fsspec URL (default: <home>/registry)."
    )
    service_id: str = Field(
        default="streamml",
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Names this deployment: prefixes its catalog topic, consumer groups and internal topics.",
    )
    worker_id: str = Field(
        default_factory=socket.gethostname,
        description="Stable identity of this worker process; keeps its transactional ids across restarts.",
    )
    request_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of admin and metadata calls.")

    @field_validator("bootstrap")
    @classmethod
    def _strip_bootstrap(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        return value or None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    def home_searched(self) -> str:
        """Where the local state was looked for, in words, for errors about a missing local broker."""
        home = self.home.resolve()
        if "home" in self.model_fields_set:
            return f"looked in {home} (set by STREAMML_HOME / --home)"
        cwd = Path.cwd().resolve()
        if home.is_dir():
            return f"looked in {home}" + ("" if home.parent == cwd else f", the nearest {HOME_DIR}/ above {cwd}")
        return f"looked for {HOME_DIR}/ in {cwd} and every folder above it"

    @property
    def registry_root(self) -> str:
        """Where the model registry lives."""
        return self.registry_url or str(self.home / "registry")

    @property
    def catalog_topic(self) -> str:
        """Compacted topic holding this deployment's SQL catalog."""
        return f"_{self.service_id}_catalog"

    def client_config(self, bootstrap: str, **overrides: Any) -> dict[str, Any]:
        """librdkafka configuration for a client of this cluster: pass-through properties, secrets, overrides."""
        config: dict[str, Any] = {"bootstrap.servers": bootstrap}
        for key, value in self.kafka_properties.items():
            if key.endswith(_SECRET_SUFFIXES):
                raise ConfigError(
                    f"kafka property '{key}' is a secret",
                    hint="pass it in kafka_secrets (STREAMML_KAFKA_SECRETS) so it is never printed",
                )
            config[key] = value
        config.update({key: secret.get_secret_value() for key, secret in self.kafka_secrets.items()})
        config.update(overrides)
        return config


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from the environment, an optional TOML file and explicit overrides.

    Raises :class:`ConfigError` naming the offending key instead of pydantic's multi-line report.
    """
    if config_file is None and os.environ.get("STREAMML_CONFIG"):
        config_file = Path(os.environ["STREAMML_CONFIG"])
    settings_cls: type[Settings] = Settings
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config file '{config_file}' does not exist")
        settings_cls = type(
            "FileSettings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": config_file}}
        )
    try:
        return settings_cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "settings"
        raise ConfigError(
            f"invalid setting '{key}': {first['msg']}",
            hint=f"check STREAMML_{key.upper()} or the config file",
        ) from None
