"""The Typer application that every command module registers on."""

from __future__ import annotations

import typer

from eca_deploy import __version__

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
