"""Command-line options, each declared once, in the groups that commands subscribe to.

A command takes an option by annotating its parameter with one of these aliases; the default stays in the
command's signature (`batch: Batch = 8`), so one declaration serves commands with different defaults.
Groups: model source, target, detector, input (size, preprocessing, photos, calibration), batch, timing,
precision, output.
Parsing and checking the values lives in `eca_deploy.cli.options`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from eca_deploy.interface import DETECTION_LAYOUTS

# -- model source: the PyTorch model an ONNX comes from (export, check, deploy) ------------------------------

MODEL_HELP = (
    "Zoo name (`eca-deploy models`), timm:NAME (`models --timm`), path/to/file.py:factory, or an "
    "ultralytics model YAML (x.yaml) or checkpoint (best.pt, with --trust-checkpoint). check: default the model "
    "its file's metadata names."
)
WEIGHTS_HELP = "Checkpoint: .pth/.pth.tar/.safetensors (plain state_dict or wrapped in state_dict/model)."
PRETRAINED_HELP = "timm:NAME only: timm's published weights, downloaded by timm (Hugging Face Hub) and cached."
TRUST_CHECKPOINT_HELP = (
    "Load an ultralytics checkpoint (--model best.pt), a pickle of a whole module: "
    "unpickling runs code from the file, so pass this only for files you trust."
)

_MODEL = typer.Option("--model", "-m", help=MODEL_HELP)
Model = Annotated[str, _MODEL]
ModelOrMetadata = Annotated[str | None, _MODEL]
Weights = Annotated[Path | None, typer.Option("--weights", "-w", help=WEIGHTS_HELP, show_default=False)]
Pretrained = Annotated[bool, typer.Option("--pretrained", help=PRETRAINED_HELP)]
TrustCheckpoint = Annotated[bool, typer.Option("--trust-checkpoint", help=TRUST_CHECKPOINT_HELP)]

# -- target: the model file a command opens, and what runs it ------------------------------------------------

ONNX_HELP = "ONNX model (.onnx); deploy starts from it instead of --model."
ENGINE_HELP = "TensorRT engine (.plan, with its .json sidecar)."
RUNTIME_HELP = (
    "What runs an ONNX model: onnxruntime or openvino (CPU; fused models need the ECA extension); bench takes "
    "several (onnxruntime,openvino: each ONNX model on each), deploy auto (each one installed)."
)
PROVIDER_HELP = "ONNX Runtime provider: cpu, cuda or tensorrt."
PLUGIN_HELP = (
    "ECA plugin library for TensorRT (default: the engine's sidecar's, else the built one); build also takes auto "
    "(C++ library, else AOT plugin), aot or off."
)
THREADS_HELP = "ONNX Runtime intra-op (or OpenVINO) threads."

_ONNX = typer.Option("--onnx", help=ONNX_HELP, show_default=False)
Onnx = Annotated[Path, _ONNX]
OptionalOnnx = Annotated[Path | None, _ONNX]
Engine = Annotated[Path | None, typer.Option("--engine", help=ENGINE_HELP, show_default=False)]
Runtime = Annotated[str, typer.Option("--runtime", help=RUNTIME_HELP)]
Provider = Annotated[str, typer.Option("--provider", help=PROVIDER_HELP)]
_PLUGIN = typer.Option("--plugin", metavar="LIBRARY", help=PLUGIN_HELP)
Plugin = Annotated[str | None, _PLUGIN]
PluginFile = Annotated[Path | None, _PLUGIN]
Threads = Annotated[int | None, typer.Option("--threads", help=THREADS_HELP, show_default=False)]

# -- detector: how a detector's raw outputs become boxes (check, run) ----------------------------------------

LAYOUT_HELP = f"Detection head layout when the metadata has none: {', '.join(DETECTION_LAYOUTS)}."
DECODER_HELP = "FILE.py:FUNCTION turning one frame's outputs into boxes, scores and class ids (a detector's decoder)."

Layout = Annotated[str | None, typer.Option("--layout", metavar="NAME", help=LAYOUT_HELP, show_default=False)]
Decoder = Annotated[
    str | None, typer.Option("--decoder", metavar="FILE.py:FUNCTION", help=DECODER_HELP, show_default=False)
]

# -- input: the images a model is fed (size, preprocessing, photos, calibration) ---------------------------

IMG_SIZE_HELP = (
    "Input size N or HxW (e.g. 320 or 320x256): for a model with a dynamic size, the size to export, build, run, "
    "calibrate and verify at (default: its own, or its metadata's); a static model's own size is used and a "
    "different one is an error."
)
MEAN_HELP = "Normalisation mean per RGB channel (default: the model's; ImageNet 0.485,0.456,0.406)."
STD_HELP = "Normalisation std per RGB channel (default: the model's; ImageNet 0.229,0.224,0.225)."
INTERPOLATION_HELP = "Resize filter: bilinear or bicubic (default: the model's; bilinear without metadata)."
RESIZE_MODE_HELP = (
    "How images reach the input size: crop (shorter side resized, centre crop: ImageNet) or letterbox (scaled to "
    "fit, padded with grey 114: ultralytics YOLO, with --mean 0,0,0 --std 1,1,1). Default: the model's; crop "
    "without metadata."
)
IMAGES_HELP = "Folder of jpg/png photos the results are checked on (default: sample photos)."
CALIB_IMAGES_HELP = "Folder of real jpg/png photos to calibrate INT8 on."
CALIB_COUNT_HELP = "Calibration photos to use at most (spread over the folder)."
METHOD_HELP = "INT8 calibration: entropy, minmax or percentile (99.99%)."

ImgSize = Annotated[str | None, typer.Option("--img-size", metavar="N|HxW", help=IMG_SIZE_HELP, show_default=False)]
Mean = Annotated[str | None, typer.Option("--mean", metavar="R,G,B", help=MEAN_HELP, show_default=False)]
Std = Annotated[str | None, typer.Option("--std", metavar="R,G,B", help=STD_HELP, show_default=False)]
Interpolation = Annotated[
    str | None, typer.Option("--interpolation", metavar="FILTER", help=INTERPOLATION_HELP, show_default=False)
]
ResizeMode = Annotated[
    str | None, typer.Option("--resize-mode", metavar="crop|letterbox", help=RESIZE_MODE_HELP, show_default=False)
]
Images = Annotated[Path | None, typer.Option("--images", help=IMAGES_HELP, show_default=False)]
_CALIB_IMAGES = typer.Option("--calib-images", help=CALIB_IMAGES_HELP, show_default=False)
CalibImages = Annotated[Path, _CALIB_IMAGES]
OptionalCalibImages = Annotated[Path | None, _CALIB_IMAGES]
CalibCount = Annotated[int, typer.Option("--calib-count", help=CALIB_COUNT_HELP)]
Method = Annotated[str, typer.Option("--method", help=METHOD_HELP)]

# -- batch: one name per meaning ----------------------------------------------------------------------------

BATCH_HELP = "Images (or frames) per inference."
BATCH_SIZES_HELP = "Batch sizes to time, comma-separated (deploy: the largest is the engine profile's max)."
BATCH_RANGE_HELP = "The engine's batch range min:opt:max (its optimisation profile), or N for one fixed size."
BATCH_DIM_HELP = "The exported model's batch dimension: 'dynamic' or a fixed size."

Batch = Annotated[int, typer.Option("--batch", metavar="N", help=BATCH_HELP)]
BatchSizes = Annotated[str, typer.Option("--batch-sizes", metavar="N,N,...", help=BATCH_SIZES_HELP)]
BatchRange = Annotated[str, typer.Option("--batch-range", metavar="MIN:OPT:MAX", help=BATCH_RANGE_HELP)]
BatchDim = Annotated[str, typer.Option("--batch-dim", metavar="dynamic|N", help=BATCH_DIM_HELP)]

# Old spellings that still work, hidden from --help: (command, option) -> the option's name now.
RENAMED = {
    ("bench", "--batch"): "--batch-sizes",
    ("deploy", "--batch"): "--batch-sizes",
    ("build", "--batch"): "--batch-range",
    ("export", "--batch"): "--batch-dim",
}

# -- timing: how long bench and deploy measure -------------------------------------------------------------

DURATION_HELP = "Measuring time per batch size (and model or precision), e.g. 10s, 500ms, 1min."
ROUNDS_HELP = "Measuring rounds per figure, interleaved across the models (or precisions) timed."

Duration = Annotated[str, typer.Option("--duration", help=DURATION_HELP)]
Rounds = Annotated[int, typer.Option("--rounds", help=ROUNDS_HELP)]

# -- precision ----------------------------------------------------------------------------------------------

FP16_HELP = "Convert the model to FP16 (build: first, then build the engine from it)."

Fp16 = Annotated[bool, typer.Option("--fp16", help=FP16_HELP)]

# -- output: what a command writes ---------------------------------------------------------------------------

JSON_HELP = "Results as JSON: bare --json (or --json -) prints them on stdout, nothing else; --json FILE writes FILE."
FORCE_HELP = (
    "Replace existing outputs that eca-deploy did not write (its own files are replaced anyway): files, an "
    "output folder; deploy also redoes every stage, even those up to date."
)
OUTPUT_HELP = "File to write."
OUT_HELP = "Folder to write (created; an existing one is replaced only with --force)."
VERIFY_HELP = "Compare the written model with the one it was made from (PyTorch or the input ONNX)."
TOLERANCE_HELP = "Largest fused-vs-unfused difference, fraction of the largest logit (1e-4)."
LABELS_HELP = "Class names, one per line (default: ImageNet)."

Json = Annotated[str | None, typer.Option("--json", metavar="FILE", help=JSON_HELP, show_default=False)]
Force = Annotated[bool, typer.Option("--force", help=FORCE_HELP)]
_OUT = typer.Option("--out", "-o", help=OUT_HELP)
OutFolder = Annotated[Path, _OUT]
Verify = Annotated[bool, typer.Option("--verify/--no-verify", help=VERIFY_HELP)]
Tolerance = Annotated[float | None, typer.Option("--tolerance", help=TOLERANCE_HELP, show_default=False)]
Labels = Annotated[Path | None, typer.Option("--labels", help=LABELS_HELP, show_default=False)]


def output_file(default: str | None = None) -> Any:
    """`--output/-o FILE`; `default` names the file written without it (shown in --help), None: nothing written."""
    return Annotated[
        Path | None,
        typer.Option("--output", "-o", help=OUTPUT_HELP, show_default=default if default is not None else False),
    ]
