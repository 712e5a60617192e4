"""Class names: the ImageNet-1k list that ships with the package, a user's file, or "class N"."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from eca_deploy.errors import EcaDeployError

IMAGENET_CLASSES = 1000


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (the torchvision / PyTorch Hub list)."""
    text = resources.files("eca_deploy.runtime").joinpath("imagenet_labels.txt").read_text(encoding="utf-8")
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    assert len(labels) == IMAGENET_CLASSES, "the packaged ImageNet label list is damaged"
    return labels


def read_labels(path: str | Path) -> tuple[str, ...]:
    """One class name per line (blank lines ignored)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EcaDeployError(f"cannot read the labels file {path}: {type(exc).__name__}") from None
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def labels_for(num_classes: int, path: str | Path | None = None) -> tuple[str, ...]:
    """Labels from `path`, else ImageNet's for a 1000-class model, else "class 0" .. "class N-1"."""
    if path is not None:
        labels = read_labels(path)
        if len(labels) != num_classes:
            raise EcaDeployError(
                f"the labels file {path} has {len(labels)} names but the model has {num_classes} classes: "
                "give one name per line, in class order"
            )
        return labels
    if num_classes == IMAGENET_CLASSES:
        return imagenet_labels()
    return tuple(f"class {i}" for i in range(num_classes))
