"""`eca-deploy models` and `eca-deploy export`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from eca_deploy.cli.app import app
from eca_deploy.cli.console import console, warn
from eca_deploy.cli.groups import (
    BatchDim,
    Force,
    Images,
    ImgSize,
    Interpolation,
    Json,
    Mean,
    Model,
    Pretrained,
    ResizeMode,
    Std,
    Tolerance,
    TrustCheckpoint,
    Verify,
    Weights,
    output_file,
)
from eca_deploy.cli.options import (
    JsonOutput,
    PreprocessingFlags,
    check_at_least,
    check_file,
    check_image_folder,
    check_positive,
    parse_batch,
    parse_img_size,
    parse_k_sizes,
)
from eca_deploy.data.images import Preprocessing
from eca_deploy.fileio import allow_replacing, distinct_outputs

# models, exporters.onnx_export and pipeline.export import torch: imported in the commands, so `--help` stays light.


@app.command("models")
def models_command(
    json_out: Json = None,
    force: Force = False,
    timm_models: bool = typer.Option(False, "--timm", help="List timm's ECA models instead (needs the timm extra)."),
) -> None:
    """List the model zoo: exact parameters, GFLOPs at 224, default k and published ImageNet accuracy."""
    allow_replacing(force)
    out = JsonOutput.of(json_out)
    if timm_models:
        _list_timm(out)
        return
    from eca_deploy.models import ZOO, block_k_sizes, count_macs, count_parameters, stage_k_sizes
    from eca_deploy.models.registry import build_on_meta

    rows = []
    for name, spec in ZOO.items():
        model = build_on_meta(name)
        rows.append(
            {
                "name": name,
                "params": count_parameters(model),
                "gflops_224": round(count_macs(model, 224) / 1e9, 3),
                "k_size": list(stage_k_sizes(model)),
                "eca_blocks": len(block_k_sizes(model)),
                "checkpoint": spec.checkpoint,
                "top1": spec.top1,
                "top5": spec.top5,
            }
        )
    out.write(rows)
    table = Table(title="ECA-Net model zoo (ImageNet-1k, 224x224)")
    for col, justify in [("model", "left"), ("params", "right"), ("GFLOPs", "right"), ("k per stage", "left"),
                         ("ECA blocks", "right"), ("official checkpoint", "left"), ("top-1 %", "right"),
                         ("top-5 %", "right")]:  # fmt: skip
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(
            r["name"],
            f"{r['params']:,}",
            f"{r['gflops_224']:.2f}",
            ",".join(map(str, r["k_size"])),
            str(r["eca_blocks"]),
            r["checkpoint"],
            f"{r['top1']:.2f}",
            f"{r['top5']:.2f}",
        )
    console.print(table)
    console.print("GFLOPs are multiply-accumulates of conv and linear layers; accuracy is the official README's.")
    console.print("timm's ECA models: `eca-deploy models --timm`; your own: --model path/to/file.py:factory.")


def _list_timm(out: JsonOutput) -> None:
    from eca_deploy.models.timm_models import describe, eca_model_names

    names = eca_model_names()
    with console.status(f"describing {len(names)} timm ECA models"):
        rows = [describe(n) for n in names]
    out.write(rows)
    table = Table(title="timm's ECA models (use as --model timm:NAME)")
    for col, justify in [("model", "left"), ("params", "right"), ("ECA blocks", "right"), ("k", "left"),
                         ("input", "right"), ("crop", "right"), ("pretrained weights", "left"), ("top-1 %", "right"),
                         ("top-5 %", "right")]:  # fmt: skip
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        acc = (f"{r['top1']:.2f}", f"{r['top5']:.2f}") if r["top1"] is not None else ("-", "-")
        table.add_row(
            r["name"],
            f"{r['params']:,}",
            str(r["eca_blocks"]),
            ",".join(map(str, r["k_sizes"])),
            str(r["input_size"]),
            f"{r['crop_pct']:g}" if r["crop_pct"] else "-",
            r["pretrained"] or "none",
            *acc,
        )
    console.print(table)
    console.print(
        "Accuracy: timm's ImageNet-1k evaluation of the default pretrained tag at its input size and crop "
        "(results-imagenet.csv; not shipped in timm's wheel). --pretrained downloads that tag's weights "
        "from the Hugging Face Hub. Other timm models take attn_layer='eca' through --model FILE.py:factory."
    )


@app.command("export")
def export_command(
    model: Model = "eca_mobilenetv2",
    weights: Weights = None,
    pretrained: Pretrained = False,
    output: output_file("MODEL.onnx") = None,
    opset: int = typer.Option(17, "--opset", help="ONNX opset, 13 to 20."),
    batch: BatchDim = "dynamic",
    img_size: ImgSize = None,
    mean: Mean = None,
    std: Std = None,
    interpolation: Interpolation = None,
    resize_mode: ResizeMode = None,
    num_classes: int | None = typer.Option(None, "--num-classes", help="Classes (default: from the checkpoint)."),
    k_size: str | None = typer.Option(None, "--k-size", help="Per-stage ECA k for a random ResNet, e.g. 3,5,5,7."),
    exporter: str = typer.Option("torchscript", "--exporter", help="torchscript (default) or dynamo."),
    fuse_eca: bool = typer.Option(False, "--fuse-eca", help="Fuse every ECA block into one ECA node."),
    tolerance: Tolerance = None,
    images: Images = None,
    verify: Verify = True,
    trust_checkpoint: TrustCheckpoint = False,
    json_out: Json = None,
    force: Force = False,
) -> None:
    """Export a model (zoo, timm or your own) to ONNX and verify it against PyTorch on real photographs."""
    allow_replacing(force)
    from eca_deploy.exporters.onnx_export import ExportOptions
    from eca_deploy.models import sources
    from eca_deploy.pipeline.export import run_export

    kind = sources.kind(model)
    model_file = model.rpartition(":")[0] if kind == "file" else model if kind == "ultralytics" else None
    out = JsonOutput.of(json_out, inputs=[weights, model_file, images])
    size = parse_img_size(img_size)
    flags = PreprocessingFlags.of(mean, std, interpolation, resize_mode)
    output = output or Path(f"{default_stem(model)}.onnx")
    distinct_outputs((output, "--output"), (out.path, "--json"))
    check_file(weights, "--weights")
    check_image_folder(images, "--images")
    check_at_least(num_classes, "--num-classes")
    check_positive(tolerance, "--tolerance")
    ExportOptions(opset=opset, batch=parse_batch(batch), exporter=exporter).validate()

    def adjust(prep: Preprocessing) -> Preprocessing:
        prep = prep.at_hw(size) if size is not None else prep
        return flags.apply(prep)

    result = run_export(
        model_name=model, weights=weights, output=output, opset=opset,
        batch=parse_batch(batch), img_size=size[0] if size else None, num_classes=num_classes,
        k_size=parse_k_sizes(k_size),
        exporter=exporter, fuse=fuse_eca, fuse_tolerance=tolerance, images=images, verify=verify,
        pretrained=pretrained, adjust=adjust, warn=warn, status=None if out.stdout else console.status,
        trust_checkpoint=trust_checkpoint,
    )  # fmt: skip
    out.write(result.as_dict())
    result.print(console)


def default_stem(model: str) -> str:
    """'timm:ecaresnet50d' -> 'ecaresnet50d', 'nets/mine.py:build' -> 'mine_build'."""
    from eca_deploy.models import sources

    kind = sources.kind(model)
    if kind == "timm":
        return model.split(":", 1)[-1].split("/")[-1]
    if kind == "file":
        path, _, factory = model.rpartition(":")
        return f"{Path(path).stem}_{factory}"
    if kind == "ultralytics":
        return Path(model).stem
    return model
