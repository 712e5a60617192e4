"""Entry point of `eca-deploy`: builds the Typer app and turns user errors into one-line messages."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from eca_deploy.cli import (  # noqa: F401  (each module adds its commands to `app`)
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
from eca_deploy.cli.app import INTERRUPTED, app
from eca_deploy.cli.console import console
from eca_deploy.cli.options import error_message, expand_bare_json, rename_old_spellings
from eca_deploy.errors import EcaDeployError
from eca_deploy.fileio import allow_replacing

__all__ = ["app", "main"]

# Commands that pick up where an interrupted run stopped.
RESUMABLE = frozenset({"deploy"})


def _command_name(args: Sequence[str]) -> str | None:
    return next((a for a in args if not a.startswith("-")), None)


def _interrupted(args: Sequence[str]) -> int:
    resumes = _command_name(args) in RESUMABLE
    sys.stderr.write("interrupted; rerun the same command to resume\n" if resumes else "interrupted\n")
    return INTERRUPTED


def _usage_error(exc: Exception) -> int:
    """A command-line mistake (bad value, unknown option): one line, exit 2."""
    message = " ".join(str(getattr(exc, "format_message", lambda: str(exc))()).split())
    ctx = getattr(exc, "ctx", None)
    hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    sys.stderr.write(f"error: {message}{hint}\n")
    return int(getattr(exc, "exit_code", 2) or 2)


def _click_exceptions() -> tuple[type[BaseException], ...]:
    """Click's help-on-no-arguments, usage-error and abort exceptions (Typer vendors Click from 0.22 on)."""
    import typer

    try:
        from typer._click.exceptions import ClickException, NoArgsIsHelpError
    except ImportError:  # Typer on top of Click
        from click.exceptions import ClickException, NoArgsIsHelpError  # type: ignore[no-redef]
    return NoArgsIsHelpError, ClickException, typer.Abort


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (user errors: one line on stderr, no traceback)."""
    args = expand_bare_json(app, rename_old_spellings(list(sys.argv[1:] if argv is None else argv)))
    no_args_help, usage_errors, abort = _click_exceptions()
    try:
        code = app(args=args, prog_name="eca-deploy", standalone_mode=False)
    except no_args_help:
        return 2  # the help has been printed
    except usage_errors as exc:
        return _usage_error(exc)
    except abort:  # click's Abort: Ctrl-C at a prompt
        return _interrupted(args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except EcaDeployError as exc:
        sys.stderr.write(f"error: {error_message(exc, app, args)}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return _interrupted(args)
    finally:
        console.quiet = False  # --json on stdout silences tables for one invocation only
        allow_replacing(False)  # and --force replaces files for one invocation only
    if code == INTERRUPTED:  # Typer turns KeyboardInterrupt inside a command into exit code 130
        return _interrupted(args)
    return code if isinstance(code, int) else 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
