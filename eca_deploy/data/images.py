"""Real images for verification and calibration, preprocessed as the model expects.

Two geometries (`Preprocessing.resize_mode`): "crop" (ImageNet evaluation: shorter side to `resize`, centre
crop, PIL's filter) and "letterbox" (ultralytics' YOLO predictor: scale to fit, OpenCV's resize, pad centred
with grey `pad_value`, no crop).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
RESIZE_MODES = ("crop", "letterbox")
LETTERBOX_GREY = 114  # ultralytics' padding value
# OpenCV's resize flags for the letterbox (ultralytics resizes with cv2.INTER_LINEAR); PIL's box/hamming have none.
_CV2_FLAGS = {
    "bilinear": "INTER_LINEAR",
    "bicubic": "INTER_CUBIC",
    "nearest": "INTER_NEAREST",
    "lanczos": "INTER_LANCZOS4",
}


@dataclass(frozen=True)
class Placement:
    """Where a source image lands in the model input: scaled by `scale_x`/`scale_y` (input pixels per source
    pixel) and shifted by (`left`, `top`) input pixels; negative offsets are a crop, positive ones padding."""

    scale_x: float
    scale_y: float
    left: float
    top: float

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """(x1, y1, x2, y2) rows in input pixels -> source pixels (not clipped)."""
        out = np.asarray(boxes, dtype=np.float64).copy()
        out[:, 0::2] = (out[:, 0::2] - self.left) / self.scale_x
        out[:, 1::2] = (out[:, 1::2] - self.top) / self.scale_y
        return out


@dataclass(frozen=True)
class LetterboxBox:
    """ultralytics' LetterBox geometry for one image: resized size and the padding before it (top, left)."""

    scale: float
    width: int
    height: int
    left: int
    top: int

    @classmethod
    def of(cls, height: int, width: int, out_h: int, out_w: int) -> LetterboxBox:
        """As ultralytics.data.augment.LetterBox (centred, scale-up allowed): the same rounding of size and pads."""
        r = min(out_h / height, out_w / width)
        new_w, new_h = max(round(width * r), 1), max(round(height * r), 1)
        dw, dh = (out_w - new_w) / 2, (out_h - new_h) / 2
        return cls(r, new_w, new_h, round(dw - 0.1), round(dh - 0.1))

    def placement(self, height: int, width: int) -> Placement:
        """Per-axis scales of the rounded resize (as ultralytics' scale_boxes undoes it) and the padding."""
        return Placement(self.width / width, self.height / height, self.left, self.top)


@dataclass(frozen=True)
class Preprocessing:
    """Resize and crop (or letterbox) to `size` x `width`, scale to [0, 1], normalise, NCHW RGB.

    "crop": resize the shorter side to `resize` with the PIL filter `interpolation` (timm's models mostly use
    bicubic), centre-crop. "letterbox": scale to fit (min of the two ratios), OpenCV resize, pad centred with
    `pad_value`; `resize` is unused (kept equal to `size`). `describe()` says which in one phrase.
    """

    size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"
    interpolation: str = "bilinear"
    crop_width: int | None = None  # None: a square crop of `size`; else the crop is `size` high, this wide
    resize_mode: str = "crop"  # "crop" or "letterbox" (RESIZE_MODES)
    pad_value: int = LETTERBOX_GREY  # the letterbox's grey (0..255); unused by "crop"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise EcaDeployError(
                f"unknown interpolation {self.interpolation!r}: choose one of {', '.join(INTERPOLATIONS)}"
            )
        if self.resize_mode not in RESIZE_MODES:
            raise EcaDeployError(f"unknown resize mode {self.resize_mode!r}: choose one of {', '.join(RESIZE_MODES)}")
        if self.letterbox and self.interpolation not in _CV2_FLAGS:
            raise EcaDeployError(
                f"the letterbox resizes with OpenCV, which has no {self.interpolation!r} filter: "
                f"choose one of {', '.join(_CV2_FLAGS)}"
            )
        if not 0 <= self.pad_value <= 255:
            raise EcaDeployError(f"the letterbox grey must be between 0 and 255, got {self.pad_value}")

    @classmethod
    def yolo(cls, size: int, width: int | None = None, pad_value: int = LETTERBOX_GREY) -> Preprocessing:
        """ultralytics' detection preprocessing: letterbox to size x width, grey padding, RGB / 255."""
        return cls(
            size=size,
            resize=size,
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            resize_mode="letterbox",
            crop_width=width if width not in (None, size) else None,
            pad_value=pad_value,
        )

    def with_resize_mode(self, mode: str) -> Preprocessing:
        """The same size, values and filter, letterboxed or cropped (crop: ImageNet's 256/224 resize ratio)."""
        from dataclasses import replace

        if mode == self.resize_mode:
            return self
        if mode == "letterbox":
            return replace(self, resize_mode=mode, resize=self.size)
        if mode not in RESIZE_MODES:
            raise EcaDeployError(f"unknown resize mode {mode!r}: choose one of {', '.join(RESIZE_MODES)}")
        cropped = Preprocessing.for_size(
            self.size, mean=self.mean, std=self.std, channel_order=self.channel_order, interpolation=self.interpolation
        )
        return cropped.at_hw(self.hw)

    @property
    def letterbox(self) -> bool:
        return self.resize_mode == "letterbox"

    def describe(self) -> str:
        """The preprocessing in one short phrase: "letterbox 320x320, grey 114, RGB/255" or "resize 256, centre crop
        224x224, ImageNet mean/std" (the one place this phrase is made)."""
        h, w = self.hw
        if self.letterbox:
            geometry = f"letterbox {h}x{w}, grey {self.pad_value}"
        else:
            geometry = f"resize {self.resize}, centre crop {h}x{w}"
        if self.interpolation != "bilinear":
            geometry += f", {self.interpolation}"
        order = self.channel_order.upper()
        if tuple(self.mean) == IMAGENET_MEAN and tuple(self.std) == IMAGENET_STD:
            values = "ImageNet mean/std" if order == "RGB" else f"{order}, ImageNet mean/std"
        elif all(m == 0 for m in self.mean) and all(s == 1 for s in self.std):
            values = f"{order}/255"
        else:
            numbers = ",".join(f"{v:g}" for v in self.mean), ",".join(f"{v:g}" for v in self.std)
            values = f"{order}, mean {numbers[0]} std {numbers[1]}"
        return f"{geometry}, {values}"

    def placement(self, height: int, width: int) -> Placement:
        """Where a `height` x `width` source image lands in the model input (to map boxes back to it)."""
        ch, cw = self.hw
        if self.letterbox:
            return LetterboxBox.of(height, width, ch, cw).placement(height, width)
        new_w, new_h = self._crop_resized(height, width)
        return Placement(new_w / width, new_h / height, -((new_w - cw) // 2), -((new_h - ch) // 2))

    def _crop_resized(self, height: int, width: int) -> tuple[int, int]:
        """(width, height) after the crop mode's resize, before the centre crop."""
        ch, cw = self.hw
        scale = (
            self.resize / min(width, height) if cw == ch else max(self.resize / height, self.resize * cw / ch / width)
        )
        return max(cw, round(width * scale)), max(ch, round(height * scale))

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

        if self.letterbox:
            return replace(self, size=h, resize=h, crop_width=None if w == h else w)
        return replace(self.at_size(h), crop_width=None if w == h else w)

    def at_size(self, size: int, crop_pct: float | None = None) -> Preprocessing:
        """The same preprocessing for another input size, keeping the resize ratio (or using `crop_pct`)."""
        if size == self.size and crop_pct is None:
            return self
        if self.letterbox:
            from dataclasses import replace

            return replace(self, size=size, resize=size, crop_width=None)
        if crop_pct is None and self.resize * 224 != self.size * 256:
            crop_pct = self.crop_pct  # None keeps the zoo's 256/224, rounded as `for_size` rounds it
        return Preprocessing.for_size(
            size,
            crop_pct=crop_pct,
            mean=self.mean,
            std=self.std,
            channel_order=self.channel_order,
            interpolation=self.interpolation,
        )

    @property
    def pil_filter(self) -> int:
        from PIL import Image

        return int(getattr(Image.Resampling, self.interpolation.upper()))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB -> 3 x height x width float32."""
        pixels = self.letterboxed(image) if self.letterbox else self._cropped(image)
        x = pixels.astype(np.float32) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def _cropped(self, image: np.ndarray) -> np.ndarray:
        from PIL import Image

        pil = Image.fromarray(image)
        ch, cw = self.hw
        pil = pil.resize(self._crop_resized(pil.size[1], pil.size[0]), self.pil_filter)
        w, h = pil.size
        left, top = (w - cw) // 2, (h - ch) // 2
        return np.asarray(pil.crop((left, top, left + cw, top + ch)))

    def letterboxed(self, image: np.ndarray) -> np.ndarray:
        """ultralytics' LetterBox on one HxWx3 uint8 image (channels untouched): height x width x 3 uint8."""
        import cv2

        ch, cw = self.hw
        box = LetterboxBox.of(image.shape[0], image.shape[1], ch, cw)
        if (box.width, box.height) != (image.shape[1], image.shape[0]):
            flag = getattr(cv2, _CV2_FLAGS[self.interpolation])
            image = cv2.resize(np.ascontiguousarray(image), (box.width, box.height), interpolation=flag)
        out = np.full((ch, cw, 3), self.pad_value, np.uint8)
        out[box.top : box.top + box.height, box.left : box.left + box.width] = image
        return out


def sample_image_paths() -> list[Path]:
    """The photographs scikit-image ships with its package."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    paths = [folder / name for name in _SAMPLE_PHOTOS if (folder / name).is_file()]
    if not paths:
        raise EcaDeployError("scikit-image's sample photographs are missing: reinstall scikit-image or pass --images")
    return paths


def open_image(path: str | Path) -> Any:
    """PIL's own `Image.open`. Importing ultralytics replaces it with a wrapper that, on the first file PIL cannot
    identify, tries to pip-install a HEIF plugin (network, a changed environment, log lines on stderr); the wrapper
    keeps the original as `_image_open`, which is what this calls then."""
    from PIL import Image

    opener = Image.open
    if getattr(opener, "__module__", "") == "ultralytics.utils.patches":
        opener = getattr(sys.modules["ultralytics.utils.patches"], "_image_open", opener)
    return opener(path)


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (greyscale and alpha are converted)."""
    from PIL import UnidentifiedImageError

    try:
        with open_image(path) as img:
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
