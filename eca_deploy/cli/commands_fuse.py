"""`eca-deploy fuse`: every ECA block of an ONNX model becomes one ECA node."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from eca_deploy.cli.app import app
from eca_deploy.cli.console import console
from eca_deploy.cli.options import JsonOutput, json_option


@app.command("fuse")
def fuse_command(
    onnx_path: Path = typer.Argument(..., help="ONNX model to fuse."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Fused model (default: NAME.fused.onnx)."),
    write_unchanged: bool = typer.Option(
        False, "--write-unchanged", help="Write the output even when there is no ECA block to fuse."
    ),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Compare fused and unfused outputs in ORT."),
    json_out: str | None = json_option(),
) -> None:
    """Fuse every ECA block into one `eca_deploy.ECA` node (runs anywhere through an ONNX function)."""
    from eca_deploy.pipeline.fuse import run_fuse

    out = JsonOutput.of(json_out)
    result = run_fuse(onnx_path, output or onnx_path.with_name(f"{onnx_path.stem}.fused.onnx"), write_unchanged, verify)
    out.write(result.as_dict())
    report = result.report
    if report.count:
        console.print(f"[green]fused {report.count} ECA blocks[/green] into {report.count} ECA nodes: "
                      f"{result.nodes_before} -> {result.nodes_after} nodes")  # fmt: skip
    elif report.already_fused:
        console.print(f"{onnx_path} is already fused ({report.already_fused} ECA nodes): nothing to do")
    else:
        console.print(f"no ECA block found in {onnx_path}")
    if report.near_misses:
        table = Table(title="ECA-like blocks left unfused")
        table.add_column("node")
        table.add_column("why")
        for miss in report.near_misses:
            table.add_row(miss.node, miss.reason)
        console.print(table)
    if result.max_abs_diff is not None:
        console.print(f"fused vs unfused on ONNX Runtime: max abs difference {result.max_abs_diff:.3g}")
    if result.written:
        console.print(f"[green]wrote[/green] {result.output}")
    elif not report.count:
        console.print("nothing written (pass --write-unchanged to write a copy anyway)")
