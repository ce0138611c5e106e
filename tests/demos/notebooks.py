"""Executing a notebook of ``notebooks/`` as a user would, with its settings in the environment."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(notebook_path: Path, env: dict[str, str], folder: Path) -> str:
    """Run every cell in ``folder`` with ``env`` set (restored afterwards); returns the cells' text output."""
    notebook = nbformat.read(notebook_path, as_version=4)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(
            notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
        ).execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
