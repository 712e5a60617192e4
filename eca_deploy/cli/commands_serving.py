"""`eca-deploy export-triton` and `export-deepstream`: serving artifacts for an engine or an ONNX model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from eca_deploy.cli.app import app
from eca_deploy.cli.console import console
from eca_deploy.cli.groups import (
    Batch,
    Engine,
    Force,
    Interpolation,
    Json,
    Labels,
    Mean,
    OptionalOnnx,
    OutFolder,
    PluginFile,
    Std,
)
from eca_deploy.cli.options import (
    JsonOutput,
    check_at_least,
    check_between,
    check_file,
    check_onnx_file,
    check_out_folder,
    one_model,
    parse_sizes,
    preprocessing_override,
)
from eca_deploy.errors import EcaDeployError
from eca_deploy.fileio import allow_replacing, claim_output_dir, distinct_outputs
from eca_deploy.plugin.locate import find_plugin_library
from eca_deploy.runtime.labels import labels_for

# serving.spec, serving.triton and serving.deepstream import onnx: imported in the commands (light `--help`).


def _inputs(model: Path, engine: Path | None, plugin: Path | None, labels: Path | None) -> list[Path]:
    """The files a serving export reads: the model (an engine's sidecar too), the plugin, the labels."""
    sidecar = engine.with_name(engine.name + ".json") if engine is not None else None
    return [p for p in (model, sidecar, plugin, labels) if p is not None]


def _engine_plugin(spec: Any, plugin: Path | None) -> Path | None:
    """The plugin library an engine needs: --plugin, the sidecar's, or the default build; None if none needed."""
    if plugin is not None:
        return find_plugin_library(plugin)
    built = spec.built_with or {}
    if spec.plugin_layers == 0 or built.get("version_compatible") or built.get("plugin_route") == "aot":
        return None  # no plugin layers, the plugin serialised into a version-compatible engine, or the AOT plugin
    recorded = built.get("plugin_path")
    if recorded and Path(recorded).is_file():
        return Path(recorded)
    found = find_plugin_library(required=False)
    if found is None:
        raise EcaDeployError(
            f"the engine has {spec.plugin_layers} ECA plugin layers and the plugin library is not found: "
            "pass --plugin libeca_trt_plugin.so (or build it with eca-deploy plugin build)"
        )
    return found


def _check_inputs(engine: Path | None, onnx_path: Path | None, plugin: Path | None, labels: Path | None) -> None:
    """The files given exist (and --onnx is an ONNX model) before anything is read or written."""
    check_file(engine, "--engine")
    check_onnx_file(onnx_path, "--onnx")
    check_file(labels, "--labels")
    if plugin is not None and not plugin.is_dir():
        check_file(plugin, "--plugin")


def _labels(spec: Any, labels: Path | None) -> tuple[str, ...]:
    """--labels, else a detector's class names from its metadata, else ImageNet's."""
    detection = getattr(spec.metadata, "detection", None)
    if labels is None and detection is not None and len(detection.names) == spec.num_classes:
        return tuple(detection.names)
    return labels_for(spec.num_classes, labels)


@app.command("export-triton")
def export_triton_command(
    engine: Engine = None,
    onnx_path: OptionalOnnx = None,
    repo: Path = typer.Option(..., "--repo", help="Model repository folder (created if missing)."),
    name: str | None = typer.Option(None, "--name", help="Model name (default: the file name without extension)."),
    plugin: PluginFile = None,
    max_batch: int | None = typer.Option(None, "--max-batch", help="max_batch_size (default: the profile's max)."),
    instances: int = typer.Option(1, "--instances", help="Model instances (instance_group count)."),
    preferred: str | None = typer.Option(None, "--preferred-batch", help="Preferred batch sizes, e.g. 8,16."),
    labels: Labels = None,
    force: Force = False,
    json_out: Json = None,
) -> None:
    """A Triton model repository: config.pbtxt, the model, labels, README with the tritonserver command.

    An engine is served on the GPU (platform tensorrt_plan), an ONNX model on the CPU (onnxruntime_onnx).
    """
    allow_replacing(force)
    from eca_deploy.serving.spec import read_engine_spec, read_onnx_spec
    from eca_deploy.serving.triton import TritonOptions, export_triton, model_name, triton_config

    model = one_model(onnx_path, engine)
    _check_inputs(engine, onnx_path, plugin, labels)
    check_at_least(max_batch, "--max-batch")
    check_at_least(instances, "--instances")
    check_out_folder(repo, "--repo")
    inputs = _inputs(model, engine, plugin, labels)
    json_to = JsonOutput.of(json_out, inputs=inputs)
    if repo.exists() and not repo.is_dir():
        raise EcaDeployError(f"--repo {repo} exists and is not a folder: choose another --repo")
    claim_output_dir(repo / model_name(name or model.stem), "--repo/--name", inputs, force)  # before any work
    if onnx_path is not None:
        if plugin is not None:
            raise EcaDeployError("--plugin is for engines: ONNX Runtime runs the ECA op without it")
        spec, onnx_model = read_onnx_spec(onnx_path)
    else:
        spec, onnx_model = read_engine_spec(model), None
    sizes = None if preferred is None else parse_sizes(preferred, "--preferred-batch", "8,16")
    opts = TritonOptions(
        platform="onnxruntime_onnx" if onnx_path is not None else "tensorrt_plan",
        name=model_name(name or model.stem),
        max_batch=max_batch,
        preferred=sizes,
        instances=instances,
        labels=_labels(spec, labels),
    )
    triton_config(spec, opts)  # batch sizes are checked before anything else is looked for
    library = _engine_plugin(spec, plugin) if engine is not None else None
    result = export_triton(model, spec, repo, opts, plugin=library, force=force, onnx_model=onnx_model, inputs=inputs)
    report = {
        "repo": str(result.repo),
        "model": str(result.model_dir),
        "platform": opts.platform,
        "max_batch_size": result.config.max_batch_size,
        "preferred_batch_size": list(result.config.preferred),
        "instances": instances,
        "plugin": str(result.plugin) if result.plugin else None,
        "readme": str(result.readme) if result.readme else None,
        "config": result.config.text,
    }
    json_to.write(report)
    _print_written(f"Triton model {opts.name} ({opts.platform})", report, ("model", "plugin", "readme"))
    console.print(result.config.text.rstrip())


@app.command("export-deepstream")
def export_deepstream_command(
    engine: Engine = None,
    onnx_path: OptionalOnnx = None,
    out: OutFolder = ...,
    plugin: PluginFile = None,
    batch: Batch = 1,
    threshold: float = typer.Option(0.0, "--threshold", help="classifier-threshold (probability)."),
    labels: Labels = None,
    mean: Mean = None,
    std: Std = None,
    interpolation: Interpolation = None,
    force: Force = False,
    json_out: Json = None,
) -> None:
    """A DeepStream nvinfer config (net-scale-factor/offsets from mean/std), labels and a sample pipeline.

    mean/std/size come from the model's metadata; an ONNX made elsewhere needs --mean and --std. An engine is
    copied (it outputs logits); an ONNX model gets a Softmax and nvinfer builds it. --batch is nvinfer's batch-size.
    """
    allow_replacing(force)
    from eca_deploy.serving.deepstream import DeepStreamOptions, export_deepstream
    from eca_deploy.serving.spec import read_engine_spec, read_onnx_spec

    model = one_model(onnx_path, engine)
    _check_inputs(engine, onnx_path, plugin, labels)
    check_at_least(batch, "--batch")
    check_between(threshold, "--threshold", 0.0, 1.0)
    inputs = _inputs(model, engine, plugin, labels)
    json_to = JsonOutput.of(json_out, inputs=inputs)
    claim_output_dir(out, "--out", inputs, force)  # before any work
    distinct_outputs((out, "--out"), (json_to.path, "--json"))
    opts = DeepStreamOptions(batch=batch, threshold=threshold)
    if onnx_path is not None:
        spec, onnx_model = read_onnx_spec(onnx_path)
        spec = _flag_preprocessing(spec, mean, std, interpolation)
        library = find_plugin_library(plugin) if plugin is not None else None
        result = export_deepstream(spec, out, opts, onnx_model=onnx_model, onnx_name=onnx_path.stem, plugin=library,
                                   labels=_labels(spec, labels), force=force, inputs=inputs)  # fmt: skip
    else:
        spec = _flag_preprocessing(read_engine_spec(model), mean, std, interpolation)
        result = export_deepstream(
            spec,
            out,
            opts,
            engine=model,
            plugin=_engine_plugin(spec, plugin),
            labels=_labels(spec, labels),
            force=force,
            inputs=inputs,
        )
    norm = result.normalisation
    report = {
        "out": str(result.out),
        "config": str(result.config),
        "net_scale_factor": norm.net_scale_factor,
        "offsets": list(norm.offsets),
        "model_color_format": norm.model_color_format,
        "max_relative_error": norm.max_relative_error,
        "max_abs_error": norm.max_abs_error,
    }
    json_to.write(report)
    _print_written(f"DeepStream nvinfer config for {spec.name}", report, ("config",))
    console.print(
        f"net-scale-factor {norm.net_scale_factor:.6g}, offsets {', '.join(f'{o:.6g}' for o in norm.offsets)}: "
        f"one scale for all channels, worst relative error {norm.max_relative_error:.2%} "
        f"(worst absolute {norm.max_abs_error:.4f} in normalised units)"
    )


def _flag_preprocessing(spec: Any, mean: str | None, std: str | None, interpolation: str | None) -> Any:
    """The spec with --mean/--std/--interpolation applied (over its metadata, or for an ONNX without it)."""
    from eca_deploy.serving.spec import with_preprocessing

    if mean is None and std is None and interpolation is None:
        return spec
    if spec.metadata is None and (mean is None or std is None):
        raise EcaDeployError("the model carries no eca-deploy metadata: pass both --mean and --std")
    dims = spec.inputs[0].dims
    base = spec.metadata.preprocessing if spec.metadata is not None else None
    size = dims[1] if base is None and len(dims) == 3 else None
    return with_preprocessing(spec, preprocessing_override(base, size, mean, std, interpolation))


def _print_written(title: str, report: dict[str, Any], keys: tuple[str, ...]) -> None:
    table = Table(title=title)
    table.add_column("what")
    table.add_column("where")
    for key in keys:
        if report.get(key):
            table.add_row(key, str(report[key]))
    console.print(table)
