"""The model registry: immutable versions (artifact + card + plots) and movable aliases, on any fsspec store.

Layout under the root (a local folder by default, or any fsspec URL such as ``s3://bucket/registry``)::

    <root>/<name>/manifest.json          versions, aliases, alias history, event log (committed last)
    <root>/<name>/<version>/model.onnx
    <root>/<name>/<version>/card.json
    <root>/<name>/<version>/plots/*.png

A version is written to a temporary folder, renamed into place, and only then listed in the manifest, so a
reader never sees half a version. Registrations of one model are serialised by an exclusively created lock
file, which also makes version numbers unique. References: ``name`` (alias ``production``, else the latest
version), ``name@alias``, ``name:version`` and ``name:latest``.

    >>> registry = Registry("/tmp/registry")                                   # doctest: +SKIP
    >>> v = registry.register("fraud", "model.onnx", card)                     # doctest: +SKIP
    >>> event = registry.promote("fraud", v.version)                           # doctest: +SKIP
    >>> registry.get("fraud@production").load().predict(batch)                 # doctest: +SKIP
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import fsspec
from pydantic import BaseModel

from streamml.errors import ModelError, RegistryError
from streamml.models.card import ModelCard
from streamml.models.events import EventAction, ModelEvent
from streamml.models.runtime import OnnxModel, read_artifact

logger = logging.getLogger(__name__)

DEFAULT_ROOT = ".streamml/registry"
DEFAULT_ALIAS = "production"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_MANIFEST = "manifest.json"
_LOCK = ".lock"


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference: exactly one of ``version``/``alias`` is set, or neither (default resolution)."""

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, ref: str) -> ModelRef:
        """Parse ``name``, ``name@alias``, ``name:version`` or ``name:latest``."""
        text = ref.strip()
        name, alias, version = text, None, None
        if "@" in text:
            name, alias = text.split("@", 1)
        elif ":" in text:
            name, raw = text.split(":", 1)
            if raw == "latest":
                alias = "latest"
            elif raw.isdigit() and int(raw) > 0:
                version = int(raw)
            else:
                raise RegistryError(f"invalid model version in '{ref}'", hint="use name:1, name:latest or name@alias")
        if not _NAME.match(name) or (alias is not None and not _NAME.match(alias)):
            raise RegistryError(f"invalid model reference '{ref}'", hint="use name, name@alias or name:version")
        return cls(name, version, alias)


class _VersionEntry(BaseModel):
    version: int
    created: datetime
    sha256: str
    size: int


class Manifest(BaseModel):
    """What is committed for one model: versions, aliases, alias history (a stack per alias), events."""

    name: str
    next_version: int = 1
    versions: list[_VersionEntry] = []
    aliases: dict[str, int] = {}
    alias_history: dict[str, list[int]] = {}
    events: list[ModelEvent] = []

    def has(self, version: int) -> bool:
        return any(entry.version == version for entry in self.versions)

    def aliases_of(self, version: int) -> list[str]:
        return sorted(alias for alias, v in self.aliases.items() if v == version)


@dataclass(frozen=True)
class ModelVersion:
    """One registered version: its card, where it lives, and the aliases pointing at it."""

    name: str
    version: int
    card: ModelCard
    uri: str
    aliases: tuple[str, ...] = ()
    registry: Registry | None = field(default=None, repr=False, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def model_uri(self) -> str:
        return f"{self.uri}/model.onnx"

    @property
    def plot_uris(self) -> list[str]:
        return [f"{self.uri}/{plot}" for plot in self.card.plots]

    @property
    def is_remote(self) -> bool:
        """Whether a model server scores this version (its card names the endpoint; it has no artifact)."""
        return self.card.remote is not None

    def artifact(self) -> bytes:
        """The ONNX bytes of this version."""
        if self.is_remote:
            raise RegistryError(f"{self.ref} is scored by a model server: it has no artifact")
        if self.registry is None:
            return read_artifact(self.model_uri)[0]
        return bytes(self.registry.fs.cat_file(self.registry._strip(self.model_uri)))

    def plots(self) -> dict[str, bytes]:
        """The training plots on this version's card: file name (``loss.png``) -> PNG bytes."""
        if self.registry is None:
            raise RegistryError(f"{self.ref} was not read from a registry: its plots are not at hand")
        fs, strip = self.registry.fs, self.registry._strip
        return {plot.rsplit("/", 1)[-1]: bytes(fs.cat_file(strip(f"{self.uri}/{plot}"))) for plot in self.card.plots}

    def load(self, **options: Any) -> OnnxModel:
        """Load the artifact into ONNX Runtime (``options`` as for :meth:`OnnxModel.load`)."""
        if self.card.remote is not None:
            raise ModelError(f"{self.ref} is scored by a model server ({self.card.remote.describe}), not loaded")
        options.setdefault("feature_names", self.card.features or None)
        return OnnxModel(self.artifact(), source=f"{self.name}:{self.version}", **options)


class Registry:
    """A model registry rooted at a folder or fsspec URL (see the module docs for layout and references)."""

    def __init__(
        self,
        root: str | os.PathLike[str] = DEFAULT_ROOT,
        *,
        storage_options: Mapping[str, Any] | None = None,
        lock_timeout_s: float = 30.0,
        stale_lock_s: float = 300.0,
    ) -> None:
        self.root_url = os.fspath(root)
        self.fs, root_path = fsspec.core.url_to_fs(self.root_url, **dict(storage_options or {}))
        self.root = root_path.rstrip("/")
        self._protocol = self.root_url.split("://", 1)[0] + "://" if "://" in self.root_url else ""
        self.lock_timeout_s = lock_timeout_s
        self.stale_lock_s = stale_lock_s

    # -- reading -------------------------------------------------------------------------------------
    def list(self) -> builtins.list[str]:
        """Names of all models with at least one committed version."""
        if not self.fs.exists(self.root):
            return []
        names: builtins.list[str] = []
        for path in self.fs.ls(self.root, detail=False):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if _NAME.match(name) and self.fs.exists(f"{self._dir(name)}/{_MANIFEST}"):
                names.append(name)
        return sorted(names)

    def manifest(self, name: str) -> Manifest:
        """The committed manifest of ``name``; :class:`RegistryError` for an unknown model."""
        _check_name(name)
        path = f"{self._dir(name)}/{_MANIFEST}"
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            raise RegistryError(
                f"model '{name}' is not registered", hint=f"registered models: {', '.join(self.list()) or 'none'}"
            ) from None
        return Manifest.model_validate_json(data)

    def versions(self, name: str) -> builtins.list[ModelVersion]:
        """All committed versions of ``name``, oldest first."""
        manifest = self.manifest(name)
        return [self._version(manifest, entry.version) for entry in manifest.versions]

    def aliases(self, name: str) -> dict[str, int]:
        return dict(self.manifest(name).aliases)

    def history(self, name: str) -> builtins.list[ModelEvent]:
        """Every event of ``name`` in order (registrations, alias moves, deletions)."""
        return list(self.manifest(name).events)

    def get(self, ref: str) -> ModelVersion:
        """Resolve ``name`` / ``name@alias`` / ``name:version`` / ``name:latest`` to a version."""
        parsed = ModelRef.parse(ref)
        manifest = self.manifest(parsed.name)
        if not manifest.versions:
            raise RegistryError(f"model '{parsed.name}' has no versions")
        latest = manifest.versions[-1].version
        if parsed.version is not None:
            if not manifest.has(parsed.version):
                known = ", ".join(str(e.version) for e in manifest.versions)
                raise RegistryError(f"model '{parsed.name}' has no version {parsed.version}", hint=f"versions: {known}")
            return self._version(manifest, parsed.version)
        if parsed.alias == "latest":
            return self._version(manifest, latest)
        if parsed.alias is not None:
            if parsed.alias not in manifest.aliases:
                known = ", ".join(sorted(manifest.aliases)) or "none"
                raise RegistryError(f"model '{parsed.name}' has no alias '{parsed.alias}'", hint=f"aliases: {known}")
            return self._version(manifest, manifest.aliases[parsed.alias])
        return self._version(manifest, manifest.aliases.get(DEFAULT_ALIAS, latest))

    # -- registering ---------------------------------------------------------------------------------
    def register(
        self,
        name: str,
        artifact: bytes | str | os.PathLike[str],
        card: ModelCard | None = None,
        plots: Sequence[str | os.PathLike[str]] = (),
    ) -> ModelVersion:
        """Check and store a new immutable version; returns it with its number.

        Refused with :class:`RegistryError` (and nothing written) when the artifact does not load or run,
        when the card's signature or feature count disagrees with the artifact, or when the card records
        a failed parity check.
        """
        _check_name(name)
        data, label = _read(artifact)
        card = self._validated_card(name, data, label, card or ModelCard(name=name))
        plot_files = [(os.path.basename(os.fspath(p)), _read(p)[0]) for p in plots]
        version = self._store(name, card, data, plot_files)
        logger.info("registered %s (%s)", version.ref, version.card.output.sql_type)
        return version

    def register_remote(self, name: str, card: ModelCard) -> ModelVersion:
        """Store a version scored by a model server: the card (with ``remote`` and a signature), no artifact."""
        _check_name(name)
        if card.remote is None or card.signature is None:
            raise RegistryError(f"refusing to register '{name}': a remote version needs an endpoint and a signature")
        version = self._store(name, card, None, [])
        logger.info("registered %s (remote: %s)", version.ref, card.remote.describe)
        return version

    def _store(
        self, name: str, card: ModelCard, artifact: bytes | None, plot_files: builtins.list[tuple[str, bytes]]
    ) -> ModelVersion:
        """Write a new version folder (staged, then renamed) and commit it to the manifest."""
        with self._lock(name):
            manifest = self._manifest_or_new(name)
            version = max(manifest.next_version, 1 + max((e.version for e in manifest.versions), default=0))
            final = f"{self._dir(name)}/{version}"
            if self.fs.exists(final):  # left by a crash between rename and commit; never committed
                logger.warning("removing uncommitted version folder %s", final)
                self.fs.rm(final, recursive=True)
            card = card.with_updates(name=name, version=version, plots=[f"plots/{file}" for file, _ in plot_files])
            card_bytes = card.to_json().encode()
            staging = f"{self._dir(name)}/.tmp-{uuid.uuid4().hex}"
            try:
                self.fs.makedirs(f"{staging}/plots", exist_ok=True)
                if artifact is not None:
                    self.fs.pipe_file(f"{staging}/model.onnx", artifact)
                self.fs.pipe_file(f"{staging}/card.json", card_bytes)
                for file, content in plot_files:
                    self.fs.pipe_file(f"{staging}/plots/{file}", content)
                self.fs.mv(staging, final, recursive=True)
                digest = hashlib.sha256(artifact if artifact is not None else card_bytes).hexdigest()
                entry = _VersionEntry(version=version, created=card.created, sha256=digest, size=len(artifact or b""))
                manifest.versions.append(entry)
                manifest.next_version = version + 1
                manifest.events.append(ModelEvent(action="register", model=name, version=version))
                self._commit(manifest)
            except Exception as exc:
                for leftover in (staging, final):
                    with contextlib.suppress(Exception):
                        self.fs.rm(leftover, recursive=True)
                raise RegistryError(f"could not write version {version} of '{name}': {exc}") from exc
        return self._version(manifest, version)

    def _validated_card(self, name: str, data: bytes, label: str, card: ModelCard) -> ModelCard:
        try:
            model = OnnxModel(data, source=label)
            model.predict(model.zeros(2))
        except ModelError as exc:
            raise RegistryError(
                f"refusing to register '{name}': {exc.message}", hint="the artifact is corrupt"
            ) from exc
        if card.signature is None:
            card = card.with_updates(signature=model.signature)
        else:
            problems = card.signature.mismatches(model.signature)
            if problems:
                raise RegistryError(
                    f"refusing to register '{name}': the card's signature does not match {label}: "
                    + "; ".join(problems)
                )
        inputs = model.signature.inputs
        width = inputs[0].shape[-1] if len(inputs) == 1 and inputs[0].shape and len(inputs[0].shape) == 2 else None
        if card.features and isinstance(width, int) and width != len(card.features):
            raise RegistryError(
                f"refusing to register '{name}': the card lists {len(card.features)} features, the model reads {width}"
            )
        if card.parity is not None and not card.parity.passed:
            raise RegistryError(
                f"refusing to register '{name}': parity check failed (max abs diff "
                f"{card.parity.max_abs_diff:.3g} > {card.parity.tolerance:g})"
            )
        return card

    # -- aliases -------------------------------------------------------------------------------------
    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        action: EventAction = "set_alias",
        reason: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> ModelEvent:
        """Point ``alias`` at ``version``; returns the event to publish (with ``reason``/``detail``, if given)."""
        if not _NAME.match(alias) or alias == "latest":
            raise RegistryError(f"invalid alias '{alias}'", hint="letters, digits, '_', '.', '-'; not 'latest'")
        with self._lock(name):
            manifest = self.manifest(name)
            if not manifest.has(version):
                raise RegistryError(f"model '{name}' has no version {version}")
            previous = manifest.aliases.get(alias)
            event = ModelEvent(action=action, model=name, version=version, alias=alias, previous_version=previous,
                               reason=reason, detail=dict(detail) if detail is not None else None)  # fmt: skip
            if previous != version:
                manifest.aliases[alias] = version
                manifest.alias_history.setdefault(alias, []).append(version)
                manifest.events.append(event)
                self._commit(manifest)
        logger.info("%s: %s@%s -> %d (was %s)", action, name, alias, version, previous)
        return event

    def promote(
        self,
        name: str,
        version: int,
        alias: str = DEFAULT_ALIAS,
        *,
        reason: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> ModelEvent:
        """Make ``version`` the ``alias`` (``production`` by default) version of ``name``."""
        return self.set_alias(name, alias, version, action="promote", reason=reason, detail=detail)

    def annotate(self, name: str, event: ModelEvent) -> ModelEvent:
        """Record ``event`` (a step that moves no alias, such as a retraining step) in ``name``'s history."""
        if event.model != name or event.alias is not None:
            raise RegistryError(f"an annotation of '{name}' must be an event of that model that moves no alias")
        with self._lock(name):
            manifest = self.manifest(name)
            if event.version is not None and not manifest.has(event.version):
                raise RegistryError(f"model '{name}' has no version {event.version}")
            manifest.events.append(event)
            self._commit(manifest)
        return event

    def rollback(self, name: str, alias: str = DEFAULT_ALIAS) -> ModelEvent:
        """Point ``alias`` back at the version it named before the current one (repeatable)."""
        with self._lock(name):
            manifest = self.manifest(name)
            current = manifest.aliases.get(alias)
            if current is None:
                raise RegistryError(f"model '{name}' has no alias '{alias}' to roll back")
            stack = [v for v in manifest.alias_history.get(alias, []) if manifest.has(v)]
            if stack and stack[-1] == current:
                stack.pop()
            while stack and stack[-1] == current:
                stack.pop()
            if not stack:
                raise RegistryError(f"no earlier version of '{name}' was ever '{alias}'; nothing to roll back to")
            target = stack[-1]
            manifest.aliases[alias] = target
            manifest.alias_history[alias] = stack
            event = ModelEvent(action="rollback", model=name, version=target, alias=alias, previous_version=current)
            manifest.events.append(event)
            self._commit(manifest)
        logger.info("rollback: %s@%s -> %d (was %d)", name, alias, target, current)
        return event

    def remove_alias(self, name: str, alias: str) -> ModelEvent:
        """Remove ``alias``; the event has ``version=None``."""
        with self._lock(name):
            manifest = self.manifest(name)
            if alias not in manifest.aliases:
                raise RegistryError(f"model '{name}' has no alias '{alias}'")
            previous = manifest.aliases.pop(alias)
            event = ModelEvent(action="remove_alias", model=name, version=None, alias=alias, previous_version=previous)
            manifest.events.append(event)
            self._commit(manifest)
        return event

    # -- deleting and exporting ----------------------------------------------------------------------
    def delete(self, name: str, version: int, *, force: bool = False) -> builtins.list[ModelEvent]:
        """Delete one version (its number is never reused); an aliased version only with ``force=True``.

        Returns the events to publish: one ``remove_alias`` per alias that pointed at it, then ``delete``.
        """
        with self._lock(name):
            manifest = self.manifest(name)
            if not manifest.has(version):
                raise RegistryError(f"model '{name}' has no version {version}")
            aliases = manifest.aliases_of(version)
            if aliases and not force:
                raise RegistryError(
                    f"version {version} of '{name}' is aliased as {', '.join(aliases)}",
                    hint="move the alias first, or delete with force=True",
                )
            events = []
            for alias in aliases:
                del manifest.aliases[alias]
                events.append(
                    ModelEvent(action="remove_alias", model=name, version=None, alias=alias, previous_version=version)
                )
            for alias, stack in manifest.alias_history.items():
                manifest.alias_history[alias] = [v for v in stack if v != version]
            manifest.versions = [e for e in manifest.versions if e.version != version]
            events.append(ModelEvent(action="delete", model=name, version=version))
            manifest.events.extend(events)
            self._commit(manifest)
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(f"{self._dir(name)}/{version}", recursive=True)
        logger.info("deleted %s:%d", name, version)
        return events

    def export(self, ref: str, destination: str | os.PathLike[str]) -> str:
        """Copy a version's ``model.onnx``, ``card.json`` and plots to a folder (path or fsspec URL)."""
        version = self.get(ref)
        dest_fs, dest = fsspec.core.url_to_fs(os.fspath(destination))
        dest = dest.rstrip("/")
        dest_fs.makedirs(f"{dest}/plots", exist_ok=True)
        source = self._strip(version.uri)
        for file in ["model.onnx", "card.json", *version.card.plots]:
            dest_fs.pipe_file(f"{dest}/{file}", self.fs.cat_file(f"{source}/{file}"))
        return os.fspath(destination)

    # -- internals -----------------------------------------------------------------------------------
    def _dir(self, name: str) -> str:
        return f"{self.root}/{name}"

    def _strip(self, uri: str) -> str:
        return uri[len(self._protocol) :] if self._protocol and uri.startswith(self._protocol) else uri

    def _version(self, manifest: Manifest, version: int) -> ModelVersion:
        folder = f"{self._dir(manifest.name)}/{version}"
        try:
            card = ModelCard.from_json(self.fs.cat_file(f"{folder}/card.json"))
        except (FileNotFoundError, ModelError) as exc:
            raise RegistryError(f"version {version} of '{manifest.name}' is damaged: {exc}") from exc
        return ModelVersion(
            name=manifest.name,
            version=version,
            card=card,
            uri=f"{self._protocol}{folder}",
            aliases=tuple(manifest.aliases_of(version)),
            registry=self,
        )

    def _manifest_or_new(self, name: str) -> Manifest:
        try:
            return self.manifest(name)
        except RegistryError:
            return Manifest(name=name)

    def _commit(self, manifest: Manifest) -> None:
        folder = self._dir(manifest.name)
        staging = f"{folder}/.{_MANIFEST}.{uuid.uuid4().hex}"
        self.fs.pipe_file(staging, manifest.model_dump_json(indent=2).encode())
        self.fs.mv(staging, f"{folder}/{_MANIFEST}")

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        folder = self._dir(name)
        created = not self.fs.exists(folder)
        self.fs.makedirs(folder, exist_ok=True)
        path = f"{folder}/{_LOCK}"
        owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}).encode()
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                _create_exclusive(self.fs, path, owner)
                break
            except FileExistsError:
                if self._stale(path):
                    logger.warning("breaking stale registry lock %s", path)
                    with contextlib.suppress(FileNotFoundError):
                        self.fs.rm(path)
                    continue
                if time.monotonic() > deadline:
                    raise RegistryError(
                        f"model '{name}' is locked by another registry operation",
                        hint=f"if none is running, remove {path}",
                    ) from None
                time.sleep(0.02)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(path)
            if created and not self.fs.exists(f"{folder}/{_MANIFEST}"):
                with contextlib.suppress(Exception):
                    self.fs.rm(folder, recursive=True)

    def _stale(self, path: str) -> bool:
        try:
            started = float(json.loads(self.fs.cat_file(path))["time"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return False
        return time.time() - started > self.stale_lock_s


def _create_exclusive(fs: Any, path: str, content: bytes) -> None:
    """Create ``path`` only if it does not exist (``FileExistsError`` otherwise).

    Stores without an exclusive-create mode fall back to check-then-write, which is not atomic.
    """
    try:
        with fs.open(path, "xb") as handle:
            handle.write(content)
    except (ValueError, NotImplementedError, TypeError):
        if fs.exists(path):
            raise FileExistsError(path) from None
        fs.pipe_file(path, content)


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise RegistryError(f"invalid model name '{name}'", hint="letters, digits, '_', '.', '-' (max 128)")


def _read(source: bytes | str | os.PathLike[str]) -> tuple[bytes, str]:
    try:
        return read_artifact(source)
    except ModelError as exc:
        raise RegistryError(exc.message) from exc
