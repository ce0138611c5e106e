"""How the CLI shows errors: one clear line on stderr and a non-zero exit; a traceback only with ``--debug``."""

from __future__ import annotations

import sys
import traceback
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from streamml.errors import StreamMLError

stderr = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70


def fail(exc: BaseException, debug: bool) -> NoReturn:
    """Print ``exc`` for a person and exit with its code."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, StreamMLError):
        stderr.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(exc.exit_code)
    if isinstance(exc, typer.Exit):
        sys.exit(exc.exit_code)
    if isinstance(exc, typer.Abort | KeyboardInterrupt):
        stderr.print("[yellow]interrupted[/]")
        sys.exit(EXIT_INTERRUPTED)
    if isinstance(exc, typer.TyperException) and hasattr(exc, "show"):  # usage errors
        exc.show()
        sys.exit(getattr(exc, "exit_code", 2))
    if isinstance(exc, BrokenPipeError):
        sys.exit(0)
    message = str(exc) or type(exc).__name__
    stderr.print(
        f"[bold red]internal error:[/] {escape(type(exc).__name__)}: {escape(message)} "
        "(run again with --debug for the traceback)"
    )
    sys.exit(EXIT_INTERNAL)
