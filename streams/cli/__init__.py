"""The ``sieve`` command line: :mod:`~streams.cli.main` lists the subcommands, one module each."""

from streams.cli.main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
