"""`eca-deploy plugin build --target openvino|onnxruntime`: the CPU libraries (OpenVINO extension, ONNX Runtime
custom op), each its own CMake project, built with a progress bar and reported as a table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

from eca_deploy.cli.console import console, err_console
from eca_deploy.plugin.onnxruntime_build import build_onnxruntime_op
from eca_deploy.plugin.openvino_build import build_openvino_extension

Result = TypeVar("Result")


def _with_progress(label: str, build: Callable[[Callable[[str, int | None], None]], Result]) -> Result:
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[step]}"))
    with Progress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        task = bar.add_task(f"cmake ({label})", total=100, step="configuring")

        def progress(line: str, percent: int | None) -> None:
            bar.update(task, step=line.split("] ", 1)[-1][:70], **({"completed": percent} if percent else {}))

        return build(progress)


def _print(build_dir: Path, seconds: float, rows: list[tuple[str, str]]) -> None:
    table = Table(title=f"Built in {seconds:.0f} s: {build_dir}", show_header=False)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def build_openvino(build_dir: Path | None, jobs: int | None) -> None:
    result = _with_progress("OpenVINO extension", lambda progress: build_openvino_extension(build_dir, jobs, progress))
    _print(
        result.build_dir,
        result.seconds,
        [
            ("OpenVINO extension", str(result.extension)),
            ("OpenVINO", result.openvino),
            ("load it", f"openvino.Core().add_extension({str(result.extension)!r})"),
        ],
    )


def build_onnxruntime(build_dir: Path | None, jobs: int | None) -> None:
    result = _with_progress("ONNX Runtime custom op", lambda progress: build_onnxruntime_op(build_dir, jobs, progress))
    _print(
        result.build_dir,
        result.seconds,
        [
            ("ONNX Runtime custom op", str(result.library)),
            ("used by", "eca-deploy's ONNX Runtime runner (CPU), found automatically"),
            ("in your code", f"session_options.register_custom_ops_library({str(result.library)!r})"),
        ],
    )
