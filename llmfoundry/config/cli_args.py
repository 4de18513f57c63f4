"""Command-line arguments for subcommands that are called as functions (`main(argv) -> int`)."""

from __future__ import annotations

import argparse


def parse_or_exit_status(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | int:
    """`argv` parsed, or the exit status argparse chose (--help: 0, a usage error: 2, already printed) instead of
    exiting the caller."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
