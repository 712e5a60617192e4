"""Entry point of `eca-deploy`: builds the Typer app and turns user errors into one-line messages."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from eca_deploy.cli.app import app
from eca_deploy.errors import EcaDeployError

__all__ = ["app", "main"]


def _register() -> None:
    # Each module adds its commands to `app`; imports stay light (torch etc. load inside commands).
    from eca_deploy.cli import (  # noqa: F401
        commands_bench,
        commands_build,
        commands_check,
        commands_deploy,
        commands_fuse,
        commands_models,
        commands_plugin,
        commands_precision,
        commands_run,
        commands_serving,
    )


_register()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (user errors: one line on stderr, no traceback)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=args, prog_name="eca-deploy")  # standalone mode: usage errors and --help exit here
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except EcaDeployError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
