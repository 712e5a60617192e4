"""A DeepStream nvinfer configuration for the classifier, its labels file and a sample pipeline.

nvinfer normalises each pixel as y = net-scale-factor * (x - offsets[c]) with one scale for all channels,
whereas the models expect y = (x / 255 - mean[c]) / std[c]. The offsets reproduce the means exactly
(255 * mean); the single scale is 1 / (255 * s) with s the midpoint of the smallest and largest std,
which minimises the worst relative error |std[c] / s - 1| of every channel (1.1% for ImageNet's std;
the mean std would give 1.3%). `nvinfer_normalisation` reports the error; folding the per-channel std
into the first convolution would make it exact.

nvinfer's built-in classifier parser reads the output as probabilities: it reports the largest value
above `classifier-threshold` (and above 0) and its value as the confidence. Engines output logits, so
from an ONNX model the export appends a Softmax and nvinfer builds its engine from that; with an
engine built from the logits model the labels are right whenever the top logit is positive but the
confidence is a logit, not a probability.

A YOLO raw head (layout yolov8 in the metadata) is a detector: nvinfer runs it with DeepStream-Yolo's
bounding-box parser and clusters with NMS; see eca_deploy.serving.yolo for the parser and the output it reads.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from eca_deploy.data.images import Preprocessing
from eca_deploy.errors import EcaDeployError, SettingError
from eca_deploy.serving.files import staged_dir
from eca_deploy.serving.spec import ServingSpec, TensorSpec
from eca_deploy.serving.yolo import (
    DEEPSTREAM_OUTPUT,
    PARSER_FUNCTION,
    PARSER_LIBRARY,
    PARSER_SOURCE,
    labels_text,
    with_deepstream_yolo_output,
    yolo_detection,
)

NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}
COLOR_FORMAT = {"RGB": 0, "BGR": 1}
SOFTMAX_OUTPUT = "probs"
CONFIG_NAME = "config_infer_primary.txt"


@dataclass(frozen=True)
class NvinferNormalisation:
    net_scale_factor: float
    offsets: tuple[float, float, float]  # in the model's channel order
    model_color_format: int  # 0 RGB, 1 BGR
    std_used: float
    max_relative_error: float  # worst |approximate / exact - 1| of a normalised value
    max_abs_error: float  # worst |approximate - exact| over pixel values 0..255, normalised units

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """What nvinfer computes for HxWx3 (or NxHxWx3) pixel values in the model's channel order."""
        return (self.net_scale_factor * (np.asarray(pixels, np.float64) - np.asarray(self.offsets))).astype(np.float32)


def nvinfer_normalisation(prep: Preprocessing) -> NvinferNormalisation:
    """net-scale-factor and offsets closest to (x / 255 - mean) / std, with the error that remains."""
    mean, std = np.asarray(prep.mean, np.float64), np.asarray(prep.std, np.float64)
    std_used = float((std.min() + std.max()) / 2)
    rel = float(np.max(np.abs(std / std_used - 1)))
    # |y_approx - y_exact| = |x - 255 m| / 255 * |1/s - 1/std_c|, largest at x = 0 or 255
    reach = np.maximum(mean, 1 - mean)
    abs_err = float(np.max(reach * np.abs(1 / std_used - 1 / std)))
    order = prep.channel_order.upper()
    if order not in COLOR_FORMAT:
        raise EcaDeployError(f"nvinfer takes RGB or BGR models, not {prep.channel_order}")
    return NvinferNormalisation(
        net_scale_factor=1.0 / (255.0 * std_used),
        offsets=tuple(float(v) for v in 255.0 * mean),  # type: ignore[arg-type]
        model_color_format=COLOR_FORMAT[order],
        std_used=std_used,
        max_relative_error=rel,
        max_abs_error=abs_err,
    )


def with_softmax(model: onnx.ModelProto, output: str = SOFTMAX_OUTPUT) -> onnx.ModelProto:
    """A copy of `model` whose first output is followed by a Softmax, named `output` (probabilities)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    logits = out.graph.output[0]
    node = onnx.helper.make_node("Softmax", [logits.name], [output], axis=-1, name="eca_deploy_softmax")
    out.graph.node.append(node)
    probs = onnx.ValueInfoProto()
    probs.CopyFrom(logits)
    probs.name = output
    del out.graph.output[:]
    out.graph.output.append(probs)
    return out


def labels_line(labels: tuple[str, ...]) -> str:
    """DeepStream's classifier labels: one line per output layer, class names separated by ';'."""
    return ";".join(label.replace(";", ",") for label in labels) + "\n"


@dataclass(frozen=True)
class DeepStreamOptions:
    batch: int = 1
    threshold: float = 0.0
    gpu_id: int = 0
    unique_id: int = 1


def _check_batch(spec: ServingSpec, batch: int) -> None:
    b = spec.batch
    if batch < 1:
        raise SettingError(f"{{batch}} must be at least 1, got {batch}")
    if batch < b.min or (b.max is not None and batch > b.max):
        top = "any" if b.max is None else str(b.max)
        raise EcaDeployError(
            f"--batch {batch} is outside the model's batch range {b.min}..{top}: choose one inside it "
            "(nvinfer's batch-size is the number of frames, one per stream, inferred together)"
        )


# nvinfer's scaling-filter (NvBufSurfTransform_Inter): 0 nearest, 1 bilinear, 2 Algo1 (cubic on the GPU).
SCALING_FILTERS = {"nearest": 0, "bilinear": 1, "bicubic": 2}


def nvinfer_config(
    spec: ServingSpec,
    opts: DeepStreamOptions,
    *,
    engine_file: str | None,
    onnx_file: str | None = None,
    plugin_file: str | None = None,
) -> str:
    """The nvinfer config text ([property] group); file names are relative to the config's folder."""
    if spec.metadata is None:
        raise EcaDeployError(
            "the model carries no eca-deploy metadata (mean/std, input size): pass --mean and --std "
            "(ImageNet: --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225), or export it with eca-deploy"
        )
    _check_batch(spec, opts.batch)
    prep = spec.metadata.preprocessing
    norm = nvinfer_normalisation(prep)
    c, h, w = spec.inputs[0].dims
    if yolo_detection(spec.metadata) is not None:
        return _yolo_config(spec, opts, norm, engine_file=engine_file, onnx_file=onnx_file, plugin_file=plugin_file)
    lines = [
        f"# nvinfer configuration for {spec.name} (eca-deploy export-deepstream)",
        f"# normalisation: one scale for all channels; worst relative error {norm.max_relative_error:.2%}, "
        f"worst absolute error {norm.max_abs_error:.4f} (normalised units)",
        "[property]",
        f"gpu-id={opts.gpu_id}",
    ]
    if onnx_file:
        lines.append(f"onnx-file={onnx_file}")
    if engine_file:
        lines.append(f"model-engine-file={engine_file}")
    if plugin_file:
        lines.append(f"custom-lib-path={plugin_file}")
    lines += [
        "labelfile-path=labels.txt",
        f"batch-size={opts.batch}",
        f"network-mode={NETWORK_MODE.get(spec.precision, 0)}",
        "network-type=1",
        "process-mode=1",
        f"gie-unique-id={opts.unique_id}",
        f"model-color-format={norm.model_color_format}",
        f"net-scale-factor={norm.net_scale_factor!r}",
        "offsets=" + ";".join(f"{o:.6g}" for o in norm.offsets),
        f"infer-dims={c};{h};{w}",
        f"output-blob-names={spec.outputs[0].name}",
        f"classifier-threshold={opts.threshold:g}",
        "maintain-aspect-ratio=0",
        f"scaling-filter={SCALING_FILTERS.get(prep.interpolation, 1)}",
    ]
    return "\n".join(lines) + "\n"


def _yolo_config(
    spec: ServingSpec,
    opts: DeepStreamOptions,
    norm: NvinferNormalisation,
    *,
    engine_file: str | None,
    onnx_file: str | None,
    plugin_file: str | None,
) -> str:
    """nvinfer as a detector on YOLO's head: DeepStream-Yolo's parser, NMS clustering, letterboxed input."""
    c, h, w = spec.inputs[0].dims
    lines = [
        f"# nvinfer configuration for {spec.name}, a YOLO detector (eca-deploy export-deepstream)",
        f"# input: RGB / 255, letterboxed to {w}x{h} (maintain-aspect-ratio, symmetric-padding), as ultralytics does",
        f"# {PARSER_LIBRARY} (function {PARSER_FUNCTION}) is not part of eca-deploy or DeepStream: build it from",
        f"# {PARSER_SOURCE} (CUDA_VER=<your CUDA> make -C nvdsinfer_custom_impl_Yolo) and copy it here",
        "[property]",
        f"gpu-id={opts.gpu_id}",
    ]
    if onnx_file:
        lines.append(f"onnx-file={onnx_file}")
    if engine_file:
        lines.append(f"model-engine-file={engine_file}")
    lines += [
        "labelfile-path=labels.txt",
        f"batch-size={opts.batch}",
        f"network-mode={NETWORK_MODE.get(spec.precision, 0)}",
        f"num-detected-classes={spec.num_classes}",
        "network-type=0",
        "process-mode=1",
        f"gie-unique-id={opts.unique_id}",
        f"model-color-format={norm.model_color_format}",
        f"net-scale-factor={norm.net_scale_factor!r}",
        f"infer-dims={c};{h};{w}",
        f"output-blob-names={spec.outputs[0].name}",
        "cluster-mode=2",
        "maintain-aspect-ratio=1",
        "symmetric-padding=1",
        f"parse-bbox-func-name={PARSER_FUNCTION}",
        f"custom-lib-path={PARSER_LIBRARY}",
    ]
    if plugin_file:
        lines.append(f"# the ECA plugin {plugin_file} is loaded with LD_PRELOAD (custom-lib-path holds the parser)")
    lines += [
        "",
        "[class-attrs-all]",
        f"pre-cluster-threshold={opts.threshold or 0.25:g}",
        "nms-iou-threshold=0.45",
        "topk=300",
    ]
    return "\n".join(lines) + "\n"


def _yolo_readme(spec: ServingSpec, opts: DeepStreamOptions, plugin: str | None) -> str:
    _, h, w = spec.inputs[0].dims
    preload = f"LD_PRELOAD=$PWD/{plugin} " if plugin else ""
    return "\n".join(
        [
            f"# DeepStream: {spec.name} as a primary detector (YOLO)",
            "",
            f"`{CONFIG_NAME}` configures nvinfer to detect objects ({w}x{h} input, letterboxed, batch {opts.batch}, "
            f"{spec.num_classes} classes from `labels.txt`, one per line).",
            "",
            f"The model's raw head [4 + classes, anchors] ends here in `{spec.outputs[0].name}` [anchors, 6] (x1, y1, "
            "x2, y2, best score, class index), the output that DeepStream-Yolo's parser reads. nvinfer needs that "
            f"parser: build `{PARSER_LIBRARY}` from {PARSER_SOURCE} (`CUDA_VER=<your CUDA> make -C "
            "nvdsinfer_custom_impl_Yolo`) and copy it into this folder; `parse-bbox-func-name="
            f"{PARSER_FUNCTION}` calls it, `cluster-mode=2` runs NMS (`nms-iou-threshold`, `pre-cluster-threshold` "
            "under [class-attrs-all]).",
            "",
            "```bash",
            f"{preload}gst-launch-1.0 uridecodebin uri=file://$PWD/sample_720p.mp4 ! m.sink_0 \\",
            f"  nvstreammux name=m batch-size={opts.batch} width=1280 height=720 ! \\",
            f"  nvinfer config-file-path={CONFIG_NAME} ! nvvideoconvert ! nvdsosd ! \\",
            "  nvvideoconvert ! x264enc ! mp4mux ! filesink location=annotated.mp4",
            "```",
            "",
            "Differences from `eca-deploy run`: nvinfer letterboxes with its own padding value (ultralytics pads with "
            "grey 114) and scales with its own filter."
            + (
                f" The ECA plugin `{plugin}` is preloaded (LD_PRELOAD): custom-lib-path holds the parser."
                if plugin
                else ""
            ),
            "",
        ]
    )


def _readme(spec: ServingSpec, opts: DeepStreamOptions, probabilities: bool, plugin: str | None) -> str:
    _, h, w = spec.inputs[0].dims
    src = "sample_720p.mp4"
    loads = f" `custom-lib-path` loads the ECA plugin `{plugin}` before nvinfer builds or loads the engine."
    lines = [
        f"# DeepStream: {spec.name} as a primary classifier",
        "",
        f"`{CONFIG_NAME}` configures nvinfer to classify whole frames ({w}x{h} input, batch {opts.batch}, "
        "labels from `labels.txt`)." + (loads if plugin else ""),
        "",
        "```bash",
        f"gst-launch-1.0 uridecodebin uri=file://$PWD/{src} ! m.sink_0 \\",
        f"  nvstreammux name=m batch-size={opts.batch} width=1280 height=720 ! \\",
        f"  nvinfer config-file-path={CONFIG_NAME} ! nvvideoconvert ! nvdsosd ! \\",
        "  nvvideoconvert ! x264enc ! mp4mux ! filesink location=annotated.mp4",
        "```",
        "",
        "nvinfer attaches the top-1 label to one object covering the whole frame, which nvdsosd draws; read it "
        "in a pad probe from the object's classifier metadata. With N streams, link them to "
        "`m.sink_0` .. `m.sink_N-1` and set the batch sizes to N.",
        "",
        "Differences from `eca-deploy run`:",
        "",
        "- nvinfer scales the whole frame to the input size (no resize of the shorter side and centre crop): "
        "crop upstream (`nvvideoconvert src-crop=left:top:width:height`) to a centred square to match.",
        "- The normalisation uses one scale for all channels (see the comment in the config for the error).",
    ]
    if not probabilities:
        lines.append(
            "- The engine outputs logits, but nvinfer's classifier parser expects probabilities: labels are "
            "attached only when the top logit is positive, and the reported confidence is the logit. Export "
            "from the ONNX model (`--onnx`) to get a Softmax output."
        )
    return "\n".join(lines) + "\n"


@dataclass
class DeepStreamExport:
    out: Path
    config: Path
    normalisation: NvinferNormalisation


def export_deepstream(
    spec: ServingSpec,
    out: Path,
    opts: DeepStreamOptions,
    *,
    engine: Path | None = None,
    onnx_model: onnx.ModelProto | None = None,
    onnx_name: str = "model",
    plugin: Path | None = None,
    labels: tuple[str, ...] = (),
    force: bool = False,
    inputs: Iterable[Path | None] = (),
) -> DeepStreamExport:
    """Write the config, labels, model (engine copied, or ONNX with Softmax), plugin and README into `out`.

    `inputs` are the command's input files (the ONNX, labels): a replaced `out` must hold none of them.
    """
    if (engine is None) == (onnx_model is None):
        raise EcaDeployError("pass exactly one of --engine MODEL.plan or --onnx MODEL.onnx")
    yolo = yolo_detection(spec.metadata)
    if yolo is not None:
        return _export_yolo(
            spec,
            out,
            opts,
            yolo,
            engine=engine,
            onnx_model=onnx_model,
            onnx_name=onnx_name,
            plugin=plugin,
            labels=labels,
            force=force,
            inputs=inputs,
        )
    probabilities = onnx_model is not None
    onnx_file = None
    if onnx_model is not None:
        probs = TensorSpec(SOFTMAX_OUTPUT, "float32", spec.outputs[0].dims)
        spec = dataclasses.replace(spec, outputs=(probs,))
        onnx_file = f"{onnx_name}.softmax.onnx"
    # nvinfer builds an engine from onnx-file and saves it under this name (its own naming), reused next time
    engine_file = (
        engine.name if engine is not None else f"{onnx_file}_b{opts.batch}_gpu{opts.gpu_id}_{spec.precision}.engine"
    )
    plugin_file = plugin.name if plugin is not None else None
    text = nvinfer_config(spec, opts, engine_file=engine_file, onnx_file=onnx_file, plugin_file=plugin_file)
    sources = [engine, plugin, *inputs]
    # nvinfer writes the engine it builds from onnx-file into the folder: --force may replace it too
    later = (engine_file,) if onnx_model is not None else ()
    with staged_dir(out, force=force, option="--out", inputs=sources, expected=later) as stage:
        (stage / CONFIG_NAME).write_text(text)
        (stage / "labels.txt").write_text(labels_line(labels))
        (stage / "README.md").write_text(_readme(spec, opts, probabilities, plugin_file))
        if engine is not None:
            shutil.copyfile(engine, stage / engine.name)
        if onnx_model is not None:
            onnx.save(with_softmax(onnx_model), str(stage / onnx_file))  # type: ignore[operator]
        if plugin is not None:
            shutil.copyfile(plugin, stage / plugin.name)
            (stage / plugin.name).chmod(0o755)
    return DeepStreamExport(out, out / CONFIG_NAME, nvinfer_normalisation(spec.metadata.preprocessing))  # type: ignore[union-attr]


def _export_yolo(
    spec: ServingSpec,
    out: Path,
    opts: DeepStreamOptions,
    detection: Any,
    *,
    engine: Path | None,
    onnx_model: onnx.ModelProto | None,
    onnx_name: str,
    plugin: Path | None,
    labels: tuple[str, ...],
    force: bool,
    inputs: Iterable[Path | None],
) -> DeepStreamExport:
    """A YOLO detector: the ONNX with DeepStream-Yolo's output appended (nvinfer builds the engine), its config."""
    if onnx_model is None:
        raise EcaDeployError(
            f"{engine.name if engine else 'the engine'} outputs YOLO's raw head, which DeepStream's YOLO parser does "
            "not read: pass the ONNX model (--onnx) so that its output is converted and nvinfer builds the engine"
        )
    raw = detection.outputs[0]
    anchors = next(t for t in spec.outputs if t.name == raw).dims[-1]
    spec = dataclasses.replace(spec, outputs=(TensorSpec(DEEPSTREAM_OUTPUT, spec.outputs[0].dtype, (anchors, 6)),))
    onnx_file = f"{onnx_name}.deepstream.onnx"
    engine_file = f"{onnx_file}_b{opts.batch}_gpu{opts.gpu_id}_{spec.precision}.engine"
    plugin_file = plugin.name if plugin is not None else None
    text = nvinfer_config(spec, opts, engine_file=engine_file, onnx_file=onnx_file, plugin_file=plugin_file)
    with staged_dir(out, force=force, option="--out", inputs=[plugin, *inputs], expected=(engine_file,)) as stage:
        (stage / CONFIG_NAME).write_text(text)
        (stage / "labels.txt").write_text(labels_text(detection, labels))
        (stage / "README.md").write_text(_yolo_readme(spec, opts, plugin_file))
        onnx.save(with_deepstream_yolo_output(onnx_model, raw), str(stage / onnx_file))
        if plugin is not None:
            shutil.copyfile(plugin, stage / plugin.name)
            (stage / plugin.name).chmod(0o755)
    return DeepStreamExport(out, out / CONFIG_NAME, nvinfer_normalisation(spec.metadata.preprocessing))  # type: ignore[union-attr]
