"""`eca-deploy models` and `eca-deploy export`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from eca_deploy.cli.app import app
from eca_deploy.cli.console import console, warn
from eca_deploy.cli.options import JsonOutput, json_option, parse_batch, parse_k_sizes


@app.command("models")
def models_command(json_out: str | None = json_option()) -> None:
    """List the model zoo: exact parameters, GFLOPs at 224, default k and published ImageNet accuracy."""
    from eca_deploy.models import ZOO, block_k_sizes, count_macs, count_parameters, stage_k_sizes
    from eca_deploy.models.registry import build_on_meta

    out = JsonOutput.of(json_out)
    rows = []
    for name, spec in ZOO.items():
        model = build_on_meta(name)
        rows.append({
            "name": name,
            "params": count_parameters(model),
            "gflops_224": round(count_macs(model, 224) / 1e9, 3),
            "k_size": list(stage_k_sizes(model)),
            "eca_blocks": len(block_k_sizes(model)),
            "checkpoint": spec.checkpoint,
            "top1": spec.top1,
            "top5": spec.top5,
        })  # fmt: skip
    out.write(rows)
    table = Table(title="ECA-Net model zoo (ImageNet-1k, 224x224)")
    for col, justify in [("model", "left"), ("params", "right"), ("GFLOPs", "right"), ("k per stage", "left"),
                         ("ECA blocks", "right"), ("official checkpoint", "left"), ("top-1 %", "right"),
                         ("top-5 %", "right")]:  # fmt: skip
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(r["name"], f"{r['params']:,}", f"{r['gflops_224']:.2f}", ",".join(map(str, r["k_size"])),
                      str(r["eca_blocks"]), r["checkpoint"], f"{r['top1']:.2f}", f"{r['top5']:.2f}")  # fmt: skip
    console.print(table)
    console.print("GFLOPs are multiply-accumulates of conv and linear layers; accuracy is the official README's.")


@app.command("export")
def export_command(
    model: str = typer.Option("eca_mobilenetv2", "--model", "-m", help="Zoo model name (see `eca-deploy models`)."),
    weights: Path | None = typer.Option(None, "--weights", "-w", help="Checkpoint (.pth/.pth.tar)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="ONNX file to write (default: MODEL.onnx)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset, 13 to 20."),
    batch: str = typer.Option("dynamic", "--batch", help="'dynamic' or a fixed batch size."),
    img_size: int = typer.Option(224, "--img-size", help="Input height and width."),
    num_classes: int | None = typer.Option(None, "--num-classes", help="Classes (default: from the checkpoint)."),
    k_size: str | None = typer.Option(None, "--k-size", help="Per-stage ECA k for a random ResNet, e.g. 3,5,5,7."),
    exporter: str = typer.Option("torchscript", "--exporter", help="torchscript (default) or dynamo."),
    fuse_eca: bool = typer.Option(False, "--fuse-eca", help="Fuse every ECA block into one ECA node."),
    images: Path | None = typer.Option(None, "--images", help="Folder of jpg/png for verification."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Compare against PyTorch after export."),
    json_out: str | None = json_option(),
) -> None:
    """Export a zoo model to ONNX and verify it against PyTorch on real photographs."""
    from eca_deploy.pipeline.export import run_export

    out = JsonOutput.of(json_out)

    result = run_export(
        model_name=model, weights=weights, output=output or Path(f"{model}.onnx"), opset=opset,
        batch=parse_batch(batch), img_size=img_size, num_classes=num_classes, k_size=parse_k_sizes(k_size),
        exporter=exporter, fuse=fuse_eca, images=images, verify=verify, warn=warn,
        status=None if out.stdout else console.status,
    )  # fmt: skip
    out.write(result.as_dict())
    result.print(console)
