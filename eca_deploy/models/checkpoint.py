"""Load official ECA-Net checkpoints (and plain state_dicts) into zoo models, k and classes by shape."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from eca_deploy.errors import EcaDeployError, first_line
from eca_deploy.models.eca import eca_layers
from eca_deploy.models.registry import ZOO, build_on_meta, create_model, get_spec

_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")
_CLASSIFIER_KEYS = ("fc.weight", "classifier.1.weight")


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint (.pth with `weights_only=True`, or .safetensors); its state_dict without `module.` prefixes."""
    path = Path(path)
    if not path.is_file():
        raise EcaDeployError(f"weights file {path} does not exist: check the path given to --weights")
    if path.suffix == ".safetensors":
        return {_strip_prefix(k): v for k, v in _read_safetensors(path).items()}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a corrupt or hostile file can fail in many ways; all are the input's fault
        raise EcaDeployError(
            f"{path} is not a PyTorch checkpoint (torch.load cannot read it): pass a .pth/.pth.tar file saved "
            "by torch.save"
        ) from None
    state = _find_state_dict(obj, path)
    return {_strip_prefix(k): v for k, v in state.items()}


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise EcaDeployError(f"{path} is a safetensors file: pip install safetensors") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # a damaged header or truncated file; the input's fault
        raise EcaDeployError(f"{path} is not a readable safetensors file ({first_line(exc, 120)})") from None


def _find_state_dict(obj: object, path: Path) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in _STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise EcaDeployError(
        f"{path} holds no state_dict (expected a dict of tensors or a dict with 'state_dict'): "
        "save the model with torch.save(model.state_dict(), path)"
    )


def _strip_prefix(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        while key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def infer_num_classes(state: Mapping[str, torch.Tensor]) -> int | None:
    for key in _CLASSIFIER_KEYS:
        if key in state and state[key].ndim == 2:
            return int(state[key].shape[0])
    return None


def apply_checkpoint_k_sizes(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Give every ECA layer the kernel size of its weight in `state` ([1, 1, k])."""
    for name, layer in eca_layers(model):
        weight = state.get(f"{name}.conv.weight")
        if weight is not None and weight.ndim == 3 and weight.shape[:2] == (1, 1) and weight.shape[2] % 2 == 1:
            layer.set_k_size(int(weight.shape[2]))


def _preview(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


def check_state_dict_fits(model: nn.Module, state: Mapping[str, torch.Tensor], model_name: str) -> None:
    """Raise one readable line naming missing and unexpected keys and shape conflicts, if any."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    conflicts = [
        f"{k} {list(state[k].shape)} vs {list(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or conflicts):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_preview(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_preview(unexpected)})")
    if conflicts:
        parts.append(f"{len(conflicts)} shape conflicts (checkpoint vs model: {_preview(conflicts)})")
    guess = guess_architecture(state)  # a zoo model first: ECA-MobileNetV2's ECA weights are `conv.N.conv.weight`
    if guess is None and not any(k.endswith(ECA_WEIGHT_SUFFIXES) for k in state):
        plain = guess_plain_network(state)
        looks = f"it looks like a plain {plain}" if plain else "it is not an ECA-Net"
        raise EcaDeployError(
            f"checkpoint has no ECA layers (no '*.eca.conv.weight' parameters): {looks}, not {model_name}; "
            "eca-deploy deploys ECA-Net models: pass an ECA-Net checkpoint"
        )
    if guess and guess != model_name:
        hint = f"it is the zoo's {display_name(guess)}: try --model {guess}"
    else:
        hint = "check --model"
    raise EcaDeployError(f"checkpoint does not fit {model_name}: {'; '.join(parts)}; {hint}")


def display_name(name: str) -> str:
    """'eca_mobilenetv2' -> 'ECA-MobileNetV2' (the paper's naming)."""
    return f"ECA-{PLAIN_NAMES[name]}" if name in PLAIN_NAMES else name


ECA_WEIGHT_SUFFIXES = (".eca.conv.weight", ".se.conv.weight")  # the zoo's (official) and timm's ECA layers
PLAIN_NAMES = {
    "eca_resnet18": "ResNet-18",
    "eca_resnet34": "ResNet-34",
    "eca_resnet50": "ResNet-50",
    "eca_resnet101": "ResNet-101",
    "eca_resnet152": "ResNet-152",
    "eca_mobilenetv2": "MobileNetV2",
}


def guess_plain_network(state: Mapping[str, torch.Tensor]) -> str | None:
    """The plain network (torchvision naming) whose ECA variant, less its ECA layers, has `state`'s parameters."""
    keys = set(state)
    for name in ZOO:
        model = build_on_meta(name)
        gates = tuple(f"{layer}." for layer, _ in eca_layers(model))
        own = {k for k in model.state_dict() if not k.startswith(gates)}
        if own == keys:
            return PLAIN_NAMES.get(name, name.removeprefix("eca_"))
    return None


def guess_architecture(state: Mapping[str, torch.Tensor]) -> str | None:
    """The zoo model whose parameter names match `state` exactly, if any."""
    keys = set(state)
    for name in ZOO:
        if set(build_on_meta(name).state_dict()) == keys:
            return name
    return None


def load_model(name: str, weights: str | Path | None = None, num_classes: int | None = None) -> nn.Module:
    """A zoo model in eval mode; with `weights`, shaped by the checkpoint (classes, per-block k) and loaded."""
    get_spec(name)
    if weights is None:
        return create_model(name, num_classes=num_classes or 1000)
    state = read_checkpoint(weights)
    found = infer_num_classes(state)
    if num_classes is not None and found is not None and num_classes != found:
        raise EcaDeployError(
            f"--num-classes {num_classes} disagrees with the checkpoint's classifier ({found} classes): drop the option"
        )
    model = create_model(name, num_classes=found or num_classes or 1000, seed=None)
    apply_checkpoint_k_sizes(model, state)
    check_state_dict_fits(model, state, name)
    model.load_state_dict(state, strict=True)
    return model.eval()
