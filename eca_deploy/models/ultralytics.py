"""ultralytics YOLO models in eca-deploy, without a fork: the ECA layer for model YAMLs, checkpoints, the raw head.

ECA in an ultralytics model YAML: call `register()` once (idempotent) before ultralytics builds the model, then
write `[-1, 1, ECA, []]` after a layer (k from the paper's formula for the layer's input channels) or
`[-1, 1, ECA, [5]]` (k = 5). ultralytics' trainer trains such a model as any other:

    from eca_deploy.models.ultralytics import register
    from ultralytics import YOLO

    register()
    YOLO("yolov8n-eca.yaml").train(data="coco8.yaml", epochs=100, imgsz=640)

How it fits in: ultralytics' `parse_model` looks layer names up in `ultralytics.nn.tasks`' globals, so
`register()` adds `ECA` there; it passes a layer it does not know only the YAML's arguments, so `ECA` reads
its input channels from the `parse_model` call that builds it (the `ch` and `f` it is working on). Nothing of
ultralytics is changed.

`--model` takes an ultralytics model YAML (`yolov8n-eca.yaml`: seeded random weights) or an ultralytics
checkpoint (`best.pt`). A checkpoint is a pickle of the whole module: unpickling runs code from the file, so
eca-deploy loads one only with `--trust-checkpoint`. Exported is YOLO's raw head, [N, 4 + classes, anchors]
(boxes cx, cy, w, h in input pixels, class scores after sigmoid; no NMS), layout `yolov8` in the metadata.
ultralytics is an optional extra, imported when one of these functions is called.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eca_deploy.data.images import Preprocessing
from eca_deploy.errors import EcaDeployError, first_line
from eca_deploy.interface import DetectionSpec
from eca_deploy.models.eca import ECALayer, adaptive_kernel_size

YAML_SUFFIXES = (".yaml", ".yml")
CHECKPOINT_SUFFIXES = (".pt",)
INSTALL_HINT = 'pip install -c <your torch pins> -e ".[ultralytics]" (README: Install)'
DEFAULT_IMG_SIZE = 640  # ultralytics' own default imgsz
OUTPUT_NAME = "output0"  # the name ultralytics' own ONNX export gives the head
TRUST_FLAG = "--trust-checkpoint"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ultralytics logs to stdout (e.g. "Overriding model.yaml nc=80"): silenced while it builds or loads a model,
    so that stdout stays eca-deploy's (`--json -`)."""
    logger = logging.getLogger("ultralytics")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def import_ultralytics() -> Any:
    """ultralytics, or a one-line EcaDeployError saying how to install it."""
    try:
        import ultralytics
        import ultralytics.nn.tasks
    except ImportError:
        raise EcaDeployError(
            f"ultralytics models need the ultralytics package, which is not installed: {INSTALL_HINT}"
        ) from None
    return ultralytics


# -- ECA as an ultralytics layer ------------------------------------------------------------------------------


def _parse_model_input_channels() -> int | None:
    """The input channels of the layer ultralytics' parse_model is building (its `ch[f]`), or None."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "parse_model" and frame.f_globals.get("__name__") == "ultralytics.nn.tasks":
            ch, f = frame.f_locals.get("ch"), frame.f_locals.get("f")
            return int(ch[f]) if isinstance(ch, list) and isinstance(f, int) else None
        frame = frame.f_back
    return None


class ECA(ECALayer):
    """The ECA layer (eca_deploy.models.eca.ECALayer) as an ultralytics YAML layer: `[-1, 1, ECA, [k]]`.

    `k_size` None: the paper's k = |log2(C)/2 + 1/2|_odd for the input channels C. Built by parse_model, the
    channels are the input's; elsewhere pass `channels` (with `k_size` None) or a `k_size`.
    """

    def __init__(self, k_size: int | None = None, channels: int | None = None) -> None:
        channels = channels or _parse_model_input_channels()
        if k_size is None and channels is None:
            raise ValueError("ECA needs its input channels or a k_size: ECA(channels=C) or ECA(k_size)")
        super().__init__(channels or 0, k_size or adaptive_kernel_size(channels))  # type: ignore[arg-type]


def register() -> type[ECA]:
    """Make `ECA` a layer name ultralytics' model YAMLs can use (idempotent); returns the class registered.

    A different `ECA` already in ultralytics.nn.tasks (ultralytics' own, or another package's) is left alone.
    """
    import_ultralytics()
    import ultralytics.nn.tasks as tasks

    existing = tasks.__dict__.setdefault("ECA", ECA)
    return existing  # type: ignore[no-any-return]


# -- model files ------------------------------------------------------------------------------------------------


def is_reference(ref: str) -> bool:
    """Whether `--model ref` names an ultralytics model YAML or checkpoint."""
    return ref.lower().endswith(YAML_SUFFIXES + CHECKPOINT_SUFFIXES)


def is_checkpoint(ref: str) -> bool:
    return ref.lower().endswith(CHECKPOINT_SUFFIXES)


def validate(ref: str, trust_checkpoint: bool = False) -> None:
    """Before any work: the file exists, ultralytics is installed, a checkpoint is trusted (one-line errors)."""
    path = Path(ref)
    if not path.is_file():
        what = "ultralytics checkpoint" if is_checkpoint(ref) else "ultralytics model YAML"
        raise EcaDeployError(f"{what} {path} does not exist: check the path given to --model")
    if is_checkpoint(ref):
        refuse_untrusted(path, trust_checkpoint)
    import_ultralytics()


def _checkpoint_classes(path: Path) -> list[str] | None:
    """The classes a torch.save file's pickle references beyond tensors (None: not a torch.save zip file)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # not a zip archive, truncated, ...: the input's fault
        return None


def refuse_untrusted(path: Path, trust_checkpoint: bool) -> None:
    """One line when `path` cannot or may not be loaded as an ultralytics checkpoint."""
    classes = _checkpoint_classes(path)
    if classes is None:
        raise EcaDeployError(
            f"{path} is not a PyTorch checkpoint (torch.load cannot read it): pass an ultralytics "
            "best.pt/last.pt or a model YAML"
        )
    if not classes:
        raise EcaDeployError(
            f"{path} holds only tensors (a state_dict), not an ultralytics model: build the network "
            "with --model MODEL.yaml or FILE.py:factory and pass this file as --weights"
        )
    if trust_checkpoint:
        return
    models = [c.rpartition(".")[2] for c in classes if c.startswith("ultralytics.nn.tasks.")]
    what = f"an ultralytics checkpoint (a pickled {models[0]})" if models else "a pickled Python object"
    raise EcaDeployError(
        f"{path} is {what}: loading it runs code from the file; pass {TRUST_FLAG} if you trust where it came from"
    )


def load_checkpoint(path: Path) -> tuple[nn.Module, int]:
    """The module an ultralytics checkpoint holds (its EMA if saved, else `model`), in float32, eval mode, and
    the image size it was trained at (`train_args['imgsz']`, else the module's own args, else 640).

    Call only after the user opted in (`--trust-checkpoint`): this unpickles the file.
    """
    import_ultralytics()
    register()  # a checkpoint of a YOLO-ECA refers to eca_deploy.models.ultralytics.ECA by name
    try:
        with _quiet():
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # the file's own code or data; the input's fault
        raise EcaDeployError(f"{path} cannot be loaded ({type(exc).__name__}: {first_line(exc, 160)})") from None
    model = None
    if isinstance(ckpt, Mapping):
        model = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("model")
    if not isinstance(model, nn.Module):
        raise EcaDeployError(
            f"{path} holds no ultralytics model (no 'model' or 'ema' module): pass a best.pt or "
            "last.pt written by ultralytics' trainer"
        )
    train_args = ckpt.get("train_args")  # type: ignore[union-attr]
    size = _img_size(train_args.get("imgsz") if isinstance(train_args, Mapping) else None)
    return model.float().eval(), size or default_img_size(model)


def build_from_yaml(path: Path, num_classes: int | None = None) -> nn.Module:
    """A DetectionModel from an ultralytics model YAML (ECA registered), in eval mode; the caller seeds it."""
    import_ultralytics()
    register()
    from ultralytics.nn.tasks import DetectionModel, guess_model_task, yaml_model_load

    try:
        with _quiet():
            cfg = yaml_model_load(path)
        task = guess_model_task(cfg)
    except Exception as exc:  # YAML syntax, unknown keys
        raise EcaDeployError(
            f"{path} is not an ultralytics model YAML ({type(exc).__name__}: {first_line(exc, 160)})"
        ) from None
    if task != "detect":
        raise EcaDeployError(
            f"{path} describes an ultralytics {task!r} model: eca-deploy exports detection models "
            "(task 'detect', a Detect head)"
        )
    try:
        with _quiet():
            return DetectionModel(cfg, ch=3, nc=num_classes, verbose=False).eval()
    except Exception as exc:  # a layer the YAML names that ultralytics does not know, wrong arguments, ...
        raise EcaDeployError(
            f"ultralytics cannot build {path} ({type(exc).__name__}: {first_line(exc, 160)})"
        ) from None


def yolo_preprocessing(size: int) -> Any:
    """YOLO's input: letterboxed to size x size with ultralytics' grey, RGB / 255, no mean/std."""
    return Preprocessing.yolo(size)


def _img_size(value: object) -> int | None:
    """ultralytics' imgsz (an int, or [h, w]: its first value), or None."""
    if isinstance(value, list | tuple) and value:
        value = value[0]
    return int(value) if isinstance(value, int) and value > 0 else None


def default_img_size(module: nn.Module) -> int:
    """The image size the model was trained at (its `args['imgsz']`), else ultralytics' default 640."""
    args = getattr(module, "args", None)
    return _img_size(args.get("imgsz") if isinstance(args, Mapping) else getattr(args, "imgsz", None)) or (
        DEFAULT_IMG_SIZE
    )


# -- the raw head -----------------------------------------------------------------------------------------------


def detect_head(model: nn.Module) -> nn.Module:
    """The model's Detect head; one line when the model is another task or an end-to-end (NMS-free) head."""
    from ultralytics.nn.modules.head import Detect

    layers = getattr(model, "model", None)
    head = layers[-1] if isinstance(layers, nn.Sequential) and len(layers) else None
    if head is None or type(head) is not Detect:
        found = type(head).__name__ if head is not None else type(model).__name__
        raise EcaDeployError(
            f"the ultralytics model ends in {found}, not a Detect head: eca-deploy exports "
            "detection models (task 'detect')"
        )
    if getattr(head, "end2end", False):
        raise EcaDeployError(
            "the ultralytics model has an end-to-end (NMS-free) head, whose output is not the "
            "[N, 4 + classes, anchors] raw head: train or export it with end2end=False"
        )
    return head


class YoloRawHead(nn.Module):
    """A YOLO DetectionModel, untouched, returning only its decoded raw head [N, 4 + classes, anchors].

    In eval mode ultralytics' Detect returns (head, per-level predictions); in export mode the head alone,
    the same tensor. This wrapper takes the first element and leaves the model's flags as they are.
    """

    output_names = (OUTPUT_NAME,)

    def __init__(self, model: nn.Module, img_size: int | None = None) -> None:
        super().__init__()
        self.output_kinds = {OUTPUT_NAME: "detection"}
        self.model = model
        names = getattr(model, "names", None) or {}
        self.class_names = (
            tuple(str(names[i]) for i in sorted(names)) if isinstance(names, Mapping) else tuple(str(n) for n in names)
        )
        self.num_classes = int(detect_head(model).nc)  # also refuses a model that is not a YOLO detector
        self.strides = tuple(int(s) for s in getattr(model, "stride", torch.tensor([])).tolist())
        self.img_size = img_size or default_img_size(model)  # the size it was trained at, else ultralytics' 640

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y[0] if isinstance(y, tuple | list) else y

    def detection(self) -> Any:
        """The DetectionSpec recorded in the metadata: layout yolov8, output0, class names, strides."""
        return DetectionSpec("yolov8", (OUTPUT_NAME,), self.class_names, self.strides)


def load(ref: str, *, num_classes: int | None = None, trust_checkpoint: bool = False) -> YoloRawHead:
    """The model `--model ref` names (YAML: built here, the caller seeds it; checkpoint: loaded), its raw head."""
    path = Path(ref)
    validate(ref, trust_checkpoint)
    if is_checkpoint(ref):
        raw = YoloRawHead(*load_checkpoint(path))
        if num_classes is not None and num_classes != raw.num_classes:
            raise EcaDeployError(
                f"--num-classes {num_classes} disagrees with {path.name}, a {raw.num_classes}-class "
                "model: drop the option"
            )
        return raw
    return YoloRawHead(build_from_yaml(path, num_classes))
