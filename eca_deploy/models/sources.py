"""Where a model comes from, and how to build it again for `check`.

A model reference is one of:

- a zoo name: `eca_resnet50` (see `eca-deploy models`);
- a timm name: `timm:ecaresnet50d` (needs the `timm` extra);
- a Python file and a factory in it: `path/to/net.py:build` (a function returning an `nn.Module`);
- an ultralytics model YAML (`yolov8n-eca.yaml`) or checkpoint (`best.pt`, with --trust-checkpoint): see
  eca_deploy.models.ultralytics (the `ultralytics` extra);
- `module:NAME` for a module handed to the Python API (`eca_deploy.export`) and `onnx:NAME` for an ONNX
  made elsewhere: they cannot be rebuilt, so `check` compares with the unfused ONNX instead.

A factory's module is the user's model: eca-deploy calls the factory (seeded before the call, so that a
factory building a random network builds the same one again), passes `num_classes` only when the factory
takes it, and never changes the module's weights or BatchNorm statistics. Only the zoo's and timm's own
random initialisation (no weights at all) is seeded and then given BatchNorm statistics of the sample
photos; an ultralytics YAML is built seeded, as ultralytics initialises it. So the same reference gives the
same network in `export` and later in `check`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eca_deploy.data.images import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, load_images
from eca_deploy.errors import EcaDeployError, first_line
from eca_deploy.fileio import sha256_file
from eca_deploy.interface import DEFAULT_SIZE
from eca_deploy.memory import check_torch_memory
from eca_deploy.models import ultralytics
from eca_deploy.models.checkpoint import check_state_dict_fits, load_model, read_checkpoint
from eca_deploy.models.registry import ZOO, block_k_sizes, create_model, get_spec, recalibrate_batchnorm
from eca_deploy.models.seeded import RANDOM_WEIGHTS, SEED, seeded_model
from eca_deploy.models.timm_models import (
    PREFIX,
    check_name,
    create_timm,
    default_cfg,
    preprocessing_from_cfg,
    pretrained_source,
    timm_name,
)
from eca_deploy.models.ultralytics import DEFAULT_IMG_SIZE, is_reference, yolo_preprocessing
from eca_deploy.user_code import function_of, import_file

MODULE_PREFIX = "module:"
ONNX_PREFIX = "onnx:"  # an ONNX made elsewhere (deploy --onnx): compared with itself, never rebuilt
FACTORY_WEIGHTS = "factory"  # weights "factory FILE.py:NAME": whatever the factory's module holds (its own)


@dataclass
class LoadedModel:
    """A network ready to export: the module, its reference, its preprocessing and where its weights came from."""

    ref: str
    module: nn.Module
    preprocessing: Preprocessing
    weights: str  # RANDOM_WEIGHTS, "<file> sha256:<hex>", "timm pretrained <hub id>" or "factory <ref>"

    @property
    def random(self) -> bool:
        return self.weights == RANDOM_WEIGHTS


def kind(ref: str) -> str:
    """'zoo', 'timm', 'file', 'ultralytics' or 'module'."""
    if ref.startswith((PREFIX, "timm/")):
        return "timm"
    if ref.startswith((MODULE_PREFIX, ONNX_PREFIX)):
        return "module"
    if ".py:" in ref or ref.endswith(".py"):
        return "file"
    if is_reference(ref):
        return "ultralytics"
    return "zoo"


def rebuildable(ref: str) -> bool:
    return kind(ref) != "module"


def validate(ref: str, trust_checkpoint: bool = False) -> None:
    """Fail early, before any work, when `ref` names nothing that can be built here (or may not be unpickled)."""
    k = kind(ref)
    if k == "zoo":
        if ref not in ZOO:
            raise EcaDeployError(
                f"unknown model {ref!r}: choose one of {', '.join(ZOO)}, a timm model as timm:NAME "
                "(e.g. timm:ecaresnet50d) or your own as path/to/file.py:factory"
            )
    elif k == "timm":
        check_name(timm_name(ref))
    elif k == "file":
        _split_file_ref(ref)
    elif k == "ultralytics":
        ultralytics.validate(ref, trust_checkpoint)
    elif ref.startswith(ONNX_PREFIX):
        raise EcaDeployError(
            f"{ref} is an ONNX file made outside eca-deploy, with no PyTorch model to rebuild: pass --reference-onnx "
            "with its FP32 ONNX (e.g. the file before fuse/quantize)"
        )
    else:
        raise EcaDeployError(f"{ref} was exported from a Python module and cannot be rebuilt: pass --reference-onnx")


def default_preprocessing(ref: str, img_size: int | None = None) -> Preprocessing:
    """The preprocessing `ref` is evaluated with, without building it (zoo and timm), at `img_size`."""
    k = kind(ref)
    if k == "zoo":
        spec = get_spec(ref)
        return Preprocessing.for_size(img_size or spec.input_size, mean=spec.mean, std=spec.std)
    if k == "timm":
        return preprocessing_from_cfg(default_cfg(timm_name(ref)), img_size)
    if k == "ultralytics":
        return yolo_preprocessing(img_size or DEFAULT_IMG_SIZE)
    return Preprocessing.for_size(img_size or DEFAULT_SIZE)


def load(
    ref: str,
    *,
    weights: Path | None = None,
    pretrained: bool = False,
    pretrained_file: Path | None = None,
    num_classes: int | None = None,
    recorded_classes: int | None = None,
    img_size: int | None = None,
    k_size: tuple[int, ...] | None = None,
    block_k: Sequence[int] | None = None,
    preprocessing: Preprocessing | None = None,
    adjust: Callable[[Preprocessing], Preprocessing] | None = None,
    trust_checkpoint: bool = False,
) -> LoadedModel:
    """Build the model `ref` names, with `weights`, timm's pretrained weights or the seeded initialisation.

    The preprocessing is the model's own (zoo spec, timm's pretrained config, a file model's `pretrained_cfg`,
    YOLO's letterbox for ultralytics models) at `img_size`, then `adjust`ed (command-line --mean/--std);
    `preprocessing` replaces it outright (as `check` does with an ONNX file's metadata). `block_k` gives a
    seeded zoo model the per-block ECA kernel sizes recorded in an ONNX file's metadata. `num_classes` is
    the user's --num-classes; `recorded_classes` the metadata's, given to a factory only if it takes it.
    `trust_checkpoint` allows unpickling an ultralytics checkpoint (--trust-checkpoint).
    """
    validate(ref, trust_checkpoint)
    k = kind(ref)
    if (pretrained or pretrained_file) and k != "timm":
        raise EcaDeployError(f"--pretrained loads timm's published weights: use it with timm:NAME, not {ref}")
    if k_size is not None and k != "zoo":
        raise EcaDeployError("--k-size shapes a random zoo ResNet; a timm or own model sets its ECA k itself")
    if weights is not None and k == "ultralytics":
        raise EcaDeployError(
            f"--weights loads a state_dict into a zoo or file model; {ref} is an ultralytics "
            "model: pass a trained ultralytics checkpoint as --model best.pt"
        )
    if weights is not None:
        source = f"{weights.name} sha256:{sha256_file(weights)}" if weights.is_file() else str(weights)
    elif pretrained_file is not None:
        source = f"{pretrained_file.name} sha256:{sha256_file(pretrained_file)}"
    elif pretrained:
        source = pretrained_source(timm_name(ref))
    elif k == "file":
        source = f"{FACTORY_WEIGHTS} {ref}"  # the factory's module as it is: its own weights, never altered
    elif k == "ultralytics" and Path(ref).suffix.lower() == ".pt":
        source = f"{Path(ref).name} sha256:{sha256_file(Path(ref))}"
    else:
        source = RANDOM_WEIGHTS

    def settle(prep: Preprocessing) -> Preprocessing:
        return preprocessing or (adjust(prep) if adjust else prep)

    if k == "zoo":
        prep = settle(default_preprocessing(ref, img_size))
        if weights is not None:
            return LoadedModel(ref, load_model(ref, weights, num_classes), prep, source)
        if k_size is not None:
            block_k = block_k_sizes(create_model(ref, num_classes or 1000, k_size))
        return LoadedModel(ref, seeded_model(ref, num_classes or 1000, block_k, prep.size, prep), prep, source)

    if k == "timm":
        prep = settle(default_preprocessing(ref, img_size))

        def build() -> nn.Module:
            return create_timm(
                timm_name(ref),
                weights=weights,
                pretrained=pretrained,
                pretrained_file=pretrained_file,
                num_classes=num_classes,
                img_size=prep.size,
            )
    elif k == "ultralytics":

        def build() -> nn.Module:
            return ultralytics.load(ref, num_classes=num_classes or recorded_classes, trust_checkpoint=trust_checkpoint)
    else:

        def build() -> nn.Module:
            return _load_file_model(ref, weights, num_classes, recorded_classes)

    # Seeded before the call: a network initialised at random (timm's, a YAML's, a factory's) is the same one
    # in export and check. Nothing is reseeded or changed after the call.
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        module = build()
    if k == "file":
        prep = settle(preprocessing_of(module, img_size))
    elif k == "ultralytics":
        prep = settle(yolo_preprocessing(img_size or getattr(module, "img_size", DEFAULT_IMG_SIZE)))
    if source == RANDOM_WEIGHTS and k == "timm":  # timm's own random initialisation only
        module = _recalibrated(ref, module, prep)
    return LoadedModel(ref, module.eval(), prep, source)


def has_random_weights(ref: str, weights: Path | None = None, pretrained: bool = False) -> bool:
    """Whether `load(ref, weights=..., pretrained=...)` gives random weights: a zoo, timm or YAML model with
    neither. A factory's module and an ultralytics checkpoint hold their own weights."""
    k = kind(ref)
    if weights is not None or pretrained or k in ("file", "module"):
        return False
    return not (k == "ultralytics" and Path(ref).suffix.lower() == ".pt")


def _recalibrated(ref: str, module: nn.Module, prep: Preprocessing) -> nn.Module:
    size = prep.size  # the sample photos at this size go through the network in batches of 8
    check_torch_memory(module, size, size, 8, 12, f"recalibrating the random {ref} at {size}x{size}, batch 8")
    try:
        return recalibrate_batchnorm(module, load_images(None, prep).array)
    except Exception as exc:  # the network's own forward refused this input (e.g. a size its attention can't tile)
        raise EcaDeployError(
            f"{ref} does not run on {prep.size}x{prep.size} images ({type(exc).__name__}: {first_line(exc)}): "
            "pass an --img-size the network supports (its default, `eca-deploy models --timm`)"
        ) from None


def preprocessing_of(module: nn.Module, img_size: int | None = None) -> Preprocessing:
    """A module's own preprocessing if it carries timm's `pretrained_cfg`, else ImageNet's at `img_size` (224)."""
    cfg = getattr(module, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("mean"):
        return preprocessing_from_cfg(cfg, img_size)
    return Preprocessing.for_size(img_size or DEFAULT_SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _split_file_ref(ref: str) -> tuple[Path, str]:
    path_text, _, factory = ref.rpartition(":") if ".py:" in ref else (ref, "", "")
    path = Path(path_text)
    if not factory:
        raise EcaDeployError(f"--model {ref} names a file but no factory: write path/to/file.py:FUNCTION")
    if path.suffix != ".py" or not path.is_file():
        raise EcaDeployError(f"model file {path} does not exist: --model takes path/to/file.py:FUNCTION")
    return path, factory


def takes_num_classes(factory: Callable[..., Any]) -> bool:
    """Whether `factory` accepts a `num_classes` keyword (named, or through **kwargs)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin or C extension without a signature
        return False
    return any(p.name == "num_classes" or p.kind is p.VAR_KEYWORD for p in params)


def _load_file_model(
    ref: str, weights: Path | None, num_classes: int | None, recorded_classes: int | None = None
) -> nn.Module:
    """Import the file and call its factory: with num_classes only when it takes it (--num-classes, or the count
    the metadata records); then load `weights` (--weights) into the module. Otherwise the module is untouched."""
    path, factory_name = _split_file_ref(ref)
    factory = function_of(import_file(path, "eca_deploy_user_"), path, factory_name)
    takes = takes_num_classes(factory)
    if num_classes is not None and not takes:
        raise EcaDeployError(f"{ref}() takes no num_classes argument: drop --num-classes (the factory sets it)")
    classes = num_classes if num_classes is not None else recorded_classes
    kwargs: dict[str, Any] = {"num_classes": classes} if classes is not None and takes else {}
    try:
        model = factory(**kwargs)
    except Exception as exc:  # the user's factory
        raise EcaDeployError(f"{ref}() failed: {type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise EcaDeployError(f"{ref}() returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        state = read_checkpoint(weights)
        check_state_dict_fits(model, state, ref)
        model.load_state_dict(state, strict=True)
    return model.eval()


def from_module(
    module: nn.Module, name: str | None = None, preprocessing: Preprocessing | None = None, weights: str = ""
) -> LoadedModel:
    """Wrap a module handed to the Python API (weights as they are)."""
    ref = f"{MODULE_PREFIX}{name or type(module).__name__}"
    return LoadedModel(ref, module.eval(), preprocessing or preprocessing_of(module), weights or "in-memory module")
