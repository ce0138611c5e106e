"""CLI tests use the ``cli`` fixture of tests/conftest.py: the installed command against the test broker."""

from tests.conftest import STREAMML

__all__ = ["STREAMML"]
