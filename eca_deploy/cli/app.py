"""The Typer application that every command module registers on."""

from __future__ import annotations

import typer
import typer.core

from eca_deploy import __version__

INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C


def _flags_show_no_type(option_class: type) -> None:
    """Help lists `--per-layer` alone, not `--per-layer <bool>`: a flag takes no value to describe."""
    show_type = option_class.display_type_rich

    def display_type_rich(self: typer.core.TyperOption, ctx: object) -> str | None:
        return None if getattr(self, "is_flag", False) else show_type(self, ctx)

    option_class.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_show_no_type(typer.core.TyperOption)

app = typer.Typer(
    name="eca-deploy",
    help="ECA-Net classifiers from PyTorch to verified ONNX and TensorRT engines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"eca-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """ECA-Net classifiers from PyTorch to verified ONNX and TensorRT engines."""
