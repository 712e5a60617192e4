"""`eca-deploy fuse`: every ECA block of an ONNX model becomes one ECA node."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from eca_deploy.cli.app import app
from eca_deploy.cli.console import console
from eca_deploy.cli.groups import Force, Json, Tolerance, Verify, output_file
from eca_deploy.cli.options import JsonOutput, check_onnx_file, check_positive
from eca_deploy.fileio import allow_replacing, distinct_outputs

# pipeline.fuse imports onnx: imported in the command, so `--help` stays light.


@app.command("fuse")
def fuse_command(
    onnx_path: Path = typer.Argument(..., help="ONNX model to fuse."),
    output: output_file("NAME.fused.onnx") = None,
    write_unchanged: bool = typer.Option(
        False, "--write-unchanged", help="Write the output even when there is no ECA block to fuse."
    ),
    verify: Verify = True,
    residual: bool = typer.Option(
        True, "--residual/--no-residual", help="Move each block's residual Add (and ReLU) into its ECA node."
    ),
    tolerance: Tolerance = None,
    json_out: Json = None,
    force: Force = False,
) -> None:
    """Fuse every ECA block into one `eca_deploy.ECA` node (runs anywhere through an ONNX function)."""
    allow_replacing(force)
    from eca_deploy.pipeline.fuse import FUSION_TOLERANCE, run_fuse

    check_positive(tolerance, "--tolerance")
    tolerance = FUSION_TOLERANCE if tolerance is None else tolerance
    check_onnx_file(onnx_path, "ONNX")
    out = JsonOutput.of(json_out, inputs=[onnx_path])
    output = output or onnx_path.with_name(f"{onnx_path.stem}.fused.onnx")
    distinct_outputs((output, "--output"), (out.path, "--json"))
    result = run_fuse(onnx_path, output, write_unchanged, verify, tolerance, residual)
    out.write(result.as_dict())
    report = result.report
    if report.count:
        residuals = f" ({report.with_residual} took their residual add)" if report.with_residual else ""
        console.print(
            f"[green]fused {report.count} ECA blocks[/green] into {report.count} ECA nodes: "
            f"{report.nodes_before} -> {report.nodes_after} nodes{residuals}"
        )
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
    if result.check is not None:
        c = result.check
        console.print(
            f"fused vs unfused on ONNX Runtime ({c.images} photos): max abs difference {c.max_abs_diff:.3g}, "
            f"{c.relative_diff:.3g} of the largest logit (bound {c.bound:.3g}: tolerance {c.tolerance:g}, "
            f"unfused float32 noise {c.float32_noise:.3g})"
        )
    if result.written:
        console.print(f"[green]wrote[/green] {result.output}")
    elif not report.count:
        console.print("nothing written (pass --write-unchanged to write a copy anyway)")
