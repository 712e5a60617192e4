"""`eca-deploy plugin build --target openvino`: the OpenVINO ECA extension, built with CMake against the wheel."""

from __future__ import annotations

from pathlib import Path

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

from eca_deploy.cli.console import console, err_console


def build_openvino(build_dir: Path | None, jobs: int | None) -> None:
    from eca_deploy.plugin.openvino_build import build_openvino_extension

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[step]}"))
    with Progress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        task = bar.add_task("cmake (OpenVINO extension)", total=100, step="configuring")

        def progress(line: str, percent: int | None) -> None:
            bar.update(task, step=line.split("] ", 1)[-1][:70], **({"completed": percent} if percent else {}))

        result = build_openvino_extension(build_dir, jobs, progress)
    table = Table(title=f"Built in {result.seconds:.0f} s: {result.build_dir}", show_header=False)
    table.add_row("OpenVINO extension", str(result.extension))
    table.add_row("OpenVINO", result.openvino)
    table.add_row("load it", f"openvino.Core().add_extension({str(result.extension)!r})")
    console.print(table)
