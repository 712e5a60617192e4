"""`eca-deploy plugin build --target onnxruntime`: the ONNX Runtime ECA custom-op library (CPU), built with CMake."""

from __future__ import annotations

from pathlib import Path

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

from eca_deploy.cli.console import console, err_console


def build_onnxruntime(build_dir: Path | None, jobs: int | None) -> None:
    from eca_deploy.plugin.onnxruntime_build import build_onnxruntime_op

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[step]}"))
    with Progress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        task = bar.add_task("cmake (ONNX Runtime custom op)", total=100, step="configuring")

        def progress(line: str, percent: int | None) -> None:
            bar.update(task, step=line.split("] ", 1)[-1][:70], **({"completed": percent} if percent else {}))

        result = build_onnxruntime_op(build_dir, jobs, progress)
    table = Table(title=f"Built in {result.seconds:.0f} s: {result.build_dir}", show_header=False)
    table.add_row("ONNX Runtime custom op", str(result.library))
    table.add_row("used by", "eca-deploy's ONNX Runtime runner (CPU), found automatically")
    table.add_row("in your code", f"session_options.register_custom_ops_library({str(result.library)!r})")
    console.print(table)
