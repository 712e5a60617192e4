"""Shared console output for the CLI: rich tables on stdout, one-line errors and warnings on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

# Piped output is not cut at 80 columns: tables stay readable in logs.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {message}")


def print_json(data: Any) -> None:
    """Print machine-readable output on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
