"""Real images for verification and calibration, preprocessed like ImageNet evaluation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eca_deploy.errors import EcaDeployError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")

# Photographs that scikit-image ships (no download): colour photos first, then greyscale ones.
_SAMPLE_PHOTOS = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
    "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "camera.png", "coins.png", "moon.png",
)  # fmt: skip


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to `resize`, centre-crop `size`, scale to [0, 1], normalise, NCHW RGB.

    `interpolation` names the PIL filter of the resize (timm's models mostly use bicubic).
    """

    size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"
    interpolation: str = "bilinear"
    crop_width: int | None = None  # None: a square crop of `size`; else the crop is `size` high, this wide

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise EcaDeployError(
                f"unknown interpolation {self.interpolation!r}: choose one of {', '.join(INTERPOLATIONS)}"
            )

    @classmethod
    def for_size(cls, size: int, crop_pct: float | None = None, **kwargs: object) -> Preprocessing:
        """ImageNet evaluation keeps the 256/224 ratio between resize and crop; `crop_pct` sets another
        ratio the way timm does (resize = floor(size / crop_pct))."""
        resize = round(size * 256 / 224) if crop_pct is None else max(size, math.floor(size / crop_pct))
        return cls(size=size, resize=resize, **kwargs)  # type: ignore[arg-type]

    @property
    def crop_pct(self) -> float:
        return self.size / self.resize

    @property
    def height(self) -> int:
        return self.size

    @property
    def width(self) -> int:
        return self.crop_width or self.size

    @property
    def hw(self) -> tuple[int, int]:
        return self.size, self.width

    def at_hw(self, hw: tuple[int, int]) -> Preprocessing:
        """The same preprocessing for an H x W input (the resize ratio kept as `at_size` keeps it)."""
        h, w = hw
        if (h, w) == self.hw:
            return self
        from dataclasses import replace

        return replace(self.at_size(h), crop_width=None if w == h else w)

    def at_size(self, size: int, crop_pct: float | None = None) -> Preprocessing:
        """The same preprocessing for another input size, keeping the resize ratio (or using `crop_pct`)."""
        if size == self.size and crop_pct is None:
            return self
        if crop_pct is None and self.resize * 224 != self.size * 256:
            crop_pct = self.crop_pct  # None keeps the zoo's 256/224, rounded as `for_size` rounds it
        return Preprocessing.for_size(size, crop_pct=crop_pct, mean=self.mean, std=self.std,
                                      channel_order=self.channel_order, interpolation=self.interpolation)  # fmt: skip

    @property
    def pil_filter(self) -> int:
        from PIL import Image

        return int(getattr(Image.Resampling, self.interpolation.upper()))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB -> 3 x height x width float32."""
        from PIL import Image

        pil = Image.fromarray(image)
        w, h = pil.size
        ch, cw = self.hw
        scale = self.resize / min(w, h) if cw == ch else max(self.resize / h, self.resize * cw / ch / w)
        pil = pil.resize((max(cw, round(w * scale)), max(ch, round(h * scale))), self.pil_filter)
        w, h = pil.size
        left, top = (w - cw) // 2, (h - ch) // 2
        pil = pil.crop((left, top, left + cw, top + ch))
        x = np.asarray(pil, dtype=np.float32) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))


def sample_image_paths() -> list[Path]:
    """The photographs scikit-image ships with its package."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    paths = [folder / name for name in _SAMPLE_PHOTOS if (folder / name).is_file()]
    if not paths:
        raise EcaDeployError("scikit-image's sample photographs are missing: reinstall scikit-image or pass --images")
    return paths


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (greyscale and alpha are converted)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise EcaDeployError(f"cannot read image {path}: {exc}") from None


def list_images(folder: str | Path) -> list[Path]:
    """Image files (by suffix) in `folder`, sorted; an error if the folder is missing or has none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EcaDeployError(f"image folder {folder} does not exist: pass a folder of jpg/png files")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise EcaDeployError(f"image folder {folder} holds no jpg/png images: add some or choose another folder")
    return paths


@dataclass
class ImageBatch:
    names: list[str]
    array: np.ndarray  # [N, 3, S, S] float32
    skipped: list[str]


def load_images(
    paths: Sequence[str | Path] | None, preprocessing: Preprocessing, limit: int | None = None
) -> ImageBatch:
    """Read and preprocess images (default: the sample photographs); unreadable files are skipped."""
    paths = list(paths) if paths is not None else sample_image_paths()
    names, arrays, skipped = [], [], []
    for path in paths[:limit] if limit else paths:
        try:
            arrays.append(preprocessing(read_rgb(path)))
            names.append(Path(path).name)
        except EcaDeployError:
            skipped.append(Path(path).name)
    if not arrays:
        raise EcaDeployError(f"none of the {len(paths)} images could be read: pass a folder of valid jpg/png files")
    return ImageBatch(names, np.stack(arrays), skipped)
