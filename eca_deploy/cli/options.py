"""Option parsing shared by several commands."""

from __future__ import annotations

from eca_deploy.data.images import Preprocessing
from eca_deploy.errors import EcaDeployError


def parse_batch(value: str) -> int | None:
    """'dynamic' -> None, 'N' -> N."""
    if value.strip().lower() == "dynamic":
        return None
    try:
        batch = int(value)
    except ValueError:
        raise EcaDeployError(f"--batch must be 'dynamic' or a positive integer, got {value!r}") from None
    if batch < 1:
        raise EcaDeployError(f"--batch must be 'dynamic' or a positive integer, got {value!r}")
    return batch


def parse_k_sizes(value: str | None) -> tuple[int, ...] | None:
    """'3,5,5,7' or '3557' -> (3, 5, 5, 7)."""
    if value is None:
        return None
    parts = value.split(",") if "," in value else list(value)
    try:
        ks = tuple(int(p) for p in parts)
    except ValueError:
        raise EcaDeployError(f"--k-size must be four odd integers such as 3,5,5,7, got {value!r}") from None
    if len(ks) != 4 or any(k < 1 or k % 2 == 0 for k in ks):
        raise EcaDeployError(f"--k-size must be four odd integers such as 3,5,5,7, got {value!r}")
    return ks


def parse_sizes(value: str, option: str = "--batch", example: str = "1,8,32") -> tuple[int, ...]:
    """'1,8,32' -> (1, 8, 32): positive integers, comma-separated."""
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise EcaDeployError(f"{option} takes batch sizes such as {example}, got {value!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise EcaDeployError(f"{option} takes positive batch sizes such as {example}, got {value!r}")
    return sizes


def parse_triplet(value: str | None, option: str) -> tuple[float, float, float] | None:
    """'0.485,0.456,0.406' -> (0.485, 0.456, 0.406): one value per RGB channel."""
    if value is None:
        return None
    try:
        values = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise EcaDeployError(f"{option} takes three numbers (R,G,B) such as 0.485,0.456,0.406, got {value!r}") from None
    if len(values) != 3:
        raise EcaDeployError(f"{option} takes three numbers (R,G,B) such as 0.485,0.456,0.406, got {value!r}")
    if option == "--std" and any(v <= 0 for v in values):
        raise EcaDeployError(f"--std values must be positive, got {value!r}")
    return values  # type: ignore[return-value]


# Help texts of options several commands share (declared once, used by export, check, deploy, serving).
MODEL_HELP = "Zoo name (`eca-deploy models`), timm:NAME (`models --timm`) or path/to/file.py:factory."
WEIGHTS_HELP = "Checkpoint: .pth/.pth.tar/.safetensors (plain state_dict or wrapped in state_dict/model)."
PRETRAINED_HELP = "timm:NAME only: timm's published weights, downloaded by timm (Hugging Face Hub) and cached."
MEAN_HELP = "Normalisation mean per RGB channel (default: the model's; ImageNet 0.485,0.456,0.406)."
STD_HELP = "Normalisation std per RGB channel (default: the model's; ImageNet 0.229,0.224,0.225)."
INTERPOLATION_HELP = "Resize filter: bilinear or bicubic (default: the model's; bilinear without metadata)."


def preprocessing_override(
    base: Preprocessing | None,
    img_size: int | None,
    mean: str | None,
    std: str | None,
    interpolation: str | None = None,
) -> Preprocessing:
    """`base` (None: ImageNet's, at --img-size or 224) with the flags given on the command line."""
    from dataclasses import replace

    prep = base if base is not None else Preprocessing.for_size(img_size or 224)
    if img_size is not None:
        prep = prep.at_size(img_size)
    changes: dict[str, object] = {}
    if (m := parse_triplet(mean, "--mean")) is not None:
        changes["mean"] = m
    if (s := parse_triplet(std, "--std")) is not None:
        changes["std"] = s
    if interpolation is not None:
        changes["interpolation"] = interpolation
    return replace(prep, **changes) if changes else prep
