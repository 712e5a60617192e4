"""A Triton Inference Server model repository for an engine (tensorrt_plan) or an ONNX model (onnxruntime_onnx).

    DIR/README.md                  every model in the repository, and how to start tritonserver with the plugin
    DIR/NAME/README.md             the model: what it is, how to serve it, a request to try
    DIR/libeca_trt_plugin.so       the ECA plugin library, when the engine needs it
    DIR/NAME/config.pbtxt          inputs/outputs without the batch dimension, max_batch_size, dynamic
                                   batching with preferred sizes, instance groups
    DIR/NAME/labels.txt            class names (Triton's classification extension: class_count=k)
    DIR/NAME/1/model.plan|onnx     the model

`triton_config` is a pure function of a `ServingSpec`; `max_batch_size` never exceeds the engine
profile's max (Triton refuses to load such a model), and preferred batch sizes stay within it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from eca_deploy.data.images import Preprocessing
from eca_deploy.errors import EcaDeployError, SettingError
from eca_deploy.fileio import atomic_write, atomic_write_text, claim_output_dir, sha256_file
from eca_deploy.serving.files import staged_dir
from eca_deploy.serving.spec import ServingSpec, uses_external_data
from eca_deploy.serving.yolo import layout_text, yolo_detection

PLATFORMS = {"tensorrt_plan": ("model.plan", "KIND_GPU"), "onnxruntime_onnx": ("model.onnx", "KIND_CPU")}
TRITON_TYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float64": "TYPE_FP64",
    "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
    "int64": "TYPE_INT64", "bool": "TYPE_BOOL",
}  # fmt: skip
DEFAULT_ONNX_MAX_BATCH = 32
QUEUE_DELAY_US = 100
README_MARK = "<!-- written by eca-deploy export-triton -->"


@dataclass(frozen=True)
class TritonOptions:
    platform: str = "tensorrt_plan"
    name: str = "model"
    max_batch: int | None = None  # None: the profile's max (engines) or 32 (dynamic ONNX)
    preferred: tuple[int, ...] | None = None  # None: the profile's opt and max batch
    instances: int = 1
    labels: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class TritonConfig:
    text: str
    max_batch_size: int
    preferred: tuple[int, ...]


def model_name(text: str) -> str:
    """A Triton model name (a folder name) from a file stem."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._-")
    if not name:
        raise SettingError(f"cannot make a model name from {text!r}: pass {{name}}")
    return name


def _batching(spec: ServingSpec, opts: TritonOptions) -> tuple[int, tuple[int, ...]]:
    """(max_batch_size, preferred sizes) checked against the model's batch range."""
    b = spec.batch
    if b.fixed:  # one batch size: Triton passes full shapes, no batching
        if opts.max_batch not in (None, 0):
            raise EcaDeployError(
                f"the model runs only batch {b.min}: it is served without batching (max_batch_size 0); "
                "drop --max-batch, or rebuild with a batch range"
            )
        return 0, ()
    if b.min > 1:
        raise EcaDeployError(
            f"the engine's profile starts at batch {b.min} but Triton sends batches from 1: "
            "rebuild it with a min batch of 1"
        )
    limit = b.max
    max_batch = opts.max_batch if opts.max_batch is not None else (limit or DEFAULT_ONNX_MAX_BATCH)
    if max_batch < 1:
        raise SettingError(f"{{max_batch}} must be at least 1, got {max_batch}")
    if limit is not None and max_batch > limit:
        raise EcaDeployError(
            f"--max-batch {max_batch} exceeds the engine profile's max batch {limit}: Triton would refuse the model; "
            f"use --max-batch {limit} or less, or rebuild the engine with a larger max batch"
        )
    if opts.preferred is None:
        preferred = tuple(sorted({p for p in (b.opt, max_batch) if 1 < p <= max_batch}))
    else:
        preferred = tuple(sorted(set(opts.preferred)))
        bad = [p for p in preferred if not 1 <= p <= max_batch]
        if bad:
            raise EcaDeployError(
                f"--preferred-batch {','.join(map(str, bad))} is outside 1..{max_batch} (the max batch size)"
            )
    return max_batch, preferred


def _dims(dims: Sequence[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _dtype(dtype: str) -> str:
    try:
        return TRITON_TYPES[dtype]
    except KeyError:
        raise EcaDeployError(f"Triton has no data type for {dtype} tensors") from None


def triton_config(spec: ServingSpec, opts: TritonOptions) -> TritonConfig:
    """config.pbtxt text for `spec` (protobuf text format of Triton's ModelConfig)."""
    if opts.platform not in PLATFORMS:
        raise EcaDeployError(f"unknown Triton platform {opts.platform!r}: {', '.join(PLATFORMS)}")
    if opts.instances < 1:
        raise SettingError(f"{{instances}} must be at least 1, got {opts.instances}")
    max_batch, preferred = _batching(spec, opts)
    lead = () if max_batch else (spec.batch.min,)  # without batching, dims carry the batch dimension
    lines = [f'name: "{opts.name}"', f'platform: "{opts.platform}"', f"max_batch_size: {max_batch}", "input ["]
    for i, t in enumerate(spec.inputs):
        fmt = "    format: FORMAT_NCHW\n" if max_batch and len(t.dims) == 3 else ""
        sep = "," if i < len(spec.inputs) - 1 else ""
        lines.append(
            f'  {{\n    name: "{t.name}"\n    data_type: {_dtype(t.dtype)}\n{fmt}'
            f"    dims: {_dims(lead + t.dims)}\n  }}{sep}"
        )
    lines += ["]", "output ["]
    for i, t in enumerate(spec.outputs):
        label = '    label_filename: "labels.txt"\n' if opts.labels and i == 0 else ""
        sep = "," if i < len(spec.outputs) - 1 else ""
        lines.append(
            f'  {{\n    name: "{t.name}"\n    data_type: {_dtype(t.dtype)}\n'
            f"    dims: {_dims(lead + t.dims)}\n{label}  }}{sep}"
        )
    lines.append("]")
    if max_batch > 1:
        pref = f"  preferred_batch_size: {_dims(preferred)}\n" if preferred else ""
        lines.append(f"dynamic_batching {{\n{pref}  max_queue_delay_microseconds: {QUEUE_DELAY_US}\n}}")
    kind = PLATFORMS[opts.platform][1]
    lines.append(f"instance_group [\n  {{\n    count: {opts.instances}\n    kind: {kind}\n  }}\n]")
    if opts.platform == "onnxruntime_onnx" and spec.precision == "int8":
        # ORT's optimiser turns Q/DQ pairs into its own int8 kernels, whose results differ from the Q/DQ
        # arithmetic the model was judged with; level 2 disables graph optimisations in Triton's ORT backend.
        lines.append("optimization {\n  graph {\n    level: 2\n  }\n}")
    return TritonConfig("\n".join(lines) + "\n", max_batch, preferred)


def _server_lines(plugins: Sequence[str], gpu: bool) -> list[str]:
    """How to start tritonserver on this folder, preloading the plugin libraries the engines need."""
    if plugins:
        preload = ":".join(f"$PWD/{p}" for p in plugins)
        backend = ";".join(f"$PWD/{p}" for p in plugins)
        lines = [
            "TensorRT must have the ECA plugin library "
            + ", ".join(f"`{p}`" for p in plugins)
            + " (in this folder) loaded before it deserialises an engine with ECA plugin layers. From this "
            "folder, either preload it:",
            "",
            "```bash",
            f"LD_PRELOAD={preload} tritonserver --model-repository=$PWD",
            "```",
            "",
            "or let the TensorRT backend load it (several libraries: separate them with `;`):",
            "",
            "```bash",
            f'tritonserver --model-repository=$PWD --backend-config=tensorrt,plugins="{backend}"',
            "```",
            "",
            "The library must be built against the same TensorRT major version as the server's.",
        ]
    else:
        lines = ["From this folder:", "", "```bash", "tritonserver --model-repository=$PWD", "```"]
    in_container = ";".join(f"/models/{p}" for p in plugins)
    return [
        *lines,
        "",
        "In a container, mount this folder: `docker run "
        + ("--gpus all " if gpu else "")
        + "-v $PWD:/models nvcr.io/nvidia/tritonserver:<release>-py3 tritonserver --model-repository=/models`"
        + (f" with `--backend-config=tensorrt,plugins={in_container}`." if plugins else "."),
    ]


def _summary(spec: ServingSpec, opts: TritonOptions, config: TritonConfig) -> str:
    batching = f"max batch {config.max_batch_size}" if config.max_batch_size else f"fixed batch {spec.batch.min}"

    if yolo_detection(spec.metadata) is not None:
        batching += ", a YOLO detector (raw head, layout yolov8; decoding and NMS on the client)"
    if opts.platform != "tensorrt_plan":
        return f"ONNX model on ONNX Runtime (CPU), {batching}, {spec.num_classes} classes."
    built = spec.built_with or {}
    return (
        f"TensorRT engine built with TensorRT {built.get('tensorrt_version') or '(unknown)'} on "
        f"{built.get('gpu_name') or 'an unrecorded GPU'}, {batching}, {spec.num_classes} classes"
        + (f", {spec.plugin_layers} ECA plugin layers." if spec.plugin_layers else ".")
    )


def _readme(repo: Path, spec: ServingSpec, opts: TritonOptions, config: TritonConfig, plugin: str | None) -> str:
    """The model's own README (in its folder): what it is, how to serve it, a request to try."""
    name, size = opts.name, spec.inputs[0].dims
    shape = [1, *size] if config.max_batch_size else [spec.batch.min, *size]
    lines = [README_MARK, f"# Triton model: {name}", "", _summary(spec, opts, config), ""]
    if opts.platform == "tensorrt_plan":
        built = spec.built_with or {}
        compatible = built.get("version_compatible")
        note = " It is version-compatible: add `version-compatible=true` to the backend config." if compatible else ""
        lines += [
            f"`{name}` is a TensorRT engine built with TensorRT {built.get('tensorrt_version') or '(unknown)'} on "
            f"{built.get('gpu_name') or 'an unrecorded GPU'} (compute capability "
            f"{built.get('compute_capability') or '?'}). Serve it with the Triton release whose TensorRT has that "
            "exact version (see Triton's release notes), on the same GPU model: engines are not portable "
            "across TensorRT versions or GPU architectures." + note,
            "",
        ]
    lines += _server_lines([plugin] if plugin else [], opts.platform == "tensorrt_plan")
    lines += [
        "",
        "## Requests",
        "",
        f"Input `{spec.inputs[0].name}`: float32 {shape}, preprocessed as eca-deploy does it (resize the shorter "
        "side, centre crop, RGB scaled to [0, 1], normalised with the model's mean/std; see docs/runtime.md)"
        + (f": {_preprocessing_text(spec.metadata.preprocessing)}." if spec.metadata is not None else ".")
        + " "
        + _output_text(spec),
        "",
        "```bash",
        f"curl localhost:8000/v2/models/{name}/config",
        f"perf_analyzer -m {name} --shape {spec.inputs[0].name}:{','.join(map(str, size))}"
        + (" --concurrency-range 1:8" if config.max_batch_size else ""),
        "```",
        "",
    ]
    return "\n".join(lines)


def _output_text(spec: ServingSpec) -> str:
    """What the output is and what decodes it: a classifier's logits, or a YOLO raw head."""
    detection = yolo_detection(spec.metadata)
    if detection is not None:
        return layout_text(detection, spec.num_classes)
    return (
        f"Output `{spec.outputs[0].name}`: {spec.num_classes} logits per image (apply softmax for "
        "probabilities). Ask for `class_count` to get the top classes with their labels."
    )


def repository_readme(repo: Path) -> str:
    """The repository's README: every model in it (each with its own README), and one server command."""
    models = []
    for config in sorted(repo.glob("*/config.pbtxt")):
        folder = config.parent
        match = re.search(r'^platform: "([^"]+)"', config.read_text(errors="replace"), flags=re.M)
        platform = match.group(1) if match else "unknown platform"
        own = folder / "README.md"
        text = own.read_text(errors="replace").splitlines() if own.is_file() else []
        summary = text[3] if len(text) > 3 and text[0] == README_MARK else ""
        models.append((folder.name, platform, summary, own.is_file()))
    plugins = sorted(p.name for p in repo.glob("*.so"))
    lines = [
        README_MARK,
        "# Triton model repository",
        "",
        f"{len(models)} model(s), written by eca-deploy export-triton:",
        "",
    ]
    for name, platform, summary, has_readme in models:
        more = f" Details: [{name}/README.md]({name}/README.md)." if has_readme else ""
        lines.append(f"- `{name}` ({platform}): {summary}{more}".rstrip())
    lines += ["", "## Start the server", ""]
    lines += _server_lines(plugins, any(p == "tensorrt_plan" for _, p, _, _ in models))
    return "\n".join(lines) + "\n"


@dataclass
class TritonExport:
    repo: Path
    model_dir: Path
    config: TritonConfig
    plugin: Path | None
    readme: Path | None


def export_triton(
    model_file: Path,
    spec: ServingSpec,
    repo: Path,
    opts: TritonOptions,
    plugin: Path | None = None,
    force: bool = False,
    onnx_model: onnx.ModelProto | None = None,
    inputs: Iterable[Path | None] = (),
) -> TritonExport:
    """Write (or with `force`, replace) `repo/NAME`; add the README and the plugin library beside it.

    `inputs` are the command's other input files (labels): the replaced model folder must hold none of them.
    """
    config = triton_config(spec, opts)
    if repo.exists() and not repo.is_dir():
        raise EcaDeployError(f"--repo {repo} exists and is not a folder: choose another --repo")
    sources = [model_file, plugin, *inputs]
    claim_output_dir(repo / opts.name, "--repo/--name", sources, force)
    copy_plugin = plugin is not None and _plugin_needs_copy(repo / plugin.name, plugin)
    filename = PLATFORMS[opts.platform][0]
    with staged_dir(repo / opts.name, force=force, option="--repo/--name", inputs=sources) as stage:
        (stage / "config.pbtxt").write_text(config.text)
        if opts.labels:
            (stage / "labels.txt").write_text("\n".join(opts.labels) + "\n")
        (stage / "README.md").write_text(_readme(repo, spec, opts, config, plugin.name if plugin else None))
        (stage / "1").mkdir()
        if onnx_model is not None and uses_external_data(model_file):
            onnx.save(onnx_model, str(stage / "1" / filename))  # loaded with its data: one self-contained file
        else:
            shutil.copyfile(model_file, stage / "1" / filename)
    copied = None
    if plugin is not None:
        copied = repo / plugin.name
        if copy_plugin:
            atomic_write(copied, lambda tmp: shutil.copyfile(plugin, tmp), mode=0o777)
    readme_path = repo / "README.md"
    if readme_path.is_symlink() or (readme_path.exists() and not readme_path.is_file()):
        return TritonExport(repo, repo / opts.name, config, copied, repo / opts.name / "README.md")
    if readme_path.exists() and README_MARK not in readme_path.read_text(errors="replace"):
        return TritonExport(repo, repo / opts.name, config, copied, repo / opts.name / "README.md")  # the user's
    atomic_write_text(readme_path, repository_readme(repo))
    return TritonExport(repo, repo / opts.name, config, copied, readme_path)


def _plugin_needs_copy(target: Path, plugin: Path) -> bool:
    """Whether `plugin` must be copied to `target`; refused where a different file already lies there."""
    if not os.path.lexists(target):
        return True
    if os.path.realpath(target) == os.path.realpath(plugin):
        return False  # --plugin is the repository's own copy
    if target.is_file() and not target.is_symlink() and sha256_file(target) == sha256_file(plugin):
        return False
    raise EcaDeployError(
        f"{target} exists and differs from --plugin {plugin}: eca-deploy does not replace it; "
        "remove it or choose another --repo"
    )


def _preprocessing_text(prep: Preprocessing) -> str:
    """'resize 256 (bicubic), crop 224, mean 0.485,0.456,0.406, std 0.229,0.224,0.225, RGB'."""
    mean, std = (",".join(f"{v:g}" for v in values) for values in (prep.mean, prep.std))
    return (
        f"resize {prep.resize} ({prep.interpolation}), crop {prep.size}, mean {mean}, std {std}, {prep.channel_order}"
    )
