"""End-to-end scenarios built only from streamml's public API."""
