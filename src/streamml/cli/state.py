"""Options shared by every command (config file, bootstrap, home, debug), resolved lazily into Settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer

from streamml.config import Settings, load_settings


@dataclass
class AppState:
    """What the root callback collected; ``settings`` is built on first use so ``--help`` never fails."""

    config_file: Path | None = None
    bootstrap: str | None = None
    home: Path | None = None
    debug: bool = False
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_file, bootstrap=self.bootstrap, home=self.home)
        return self._settings


def state(ctx: typer.Context) -> AppState:
    """The :class:`AppState` of the running command."""
    obj = ctx.find_root().obj
    if not isinstance(obj, AppState):
        obj = AppState()
        ctx.find_root().obj = obj
    return obj
