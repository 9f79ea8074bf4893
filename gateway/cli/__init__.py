"""The ``cloudlink-gateway`` command, a module per group of subcommands (``main`` mounts
them)."""

from gateway.cli.main import main

__all__ = ["main"]
