"""Option parsing shared by several commands."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

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


PROVIDERS = ("cpu", "cuda", "tensorrt")  # ONNX Runtime's --provider choices
RUNTIME_HELP = "What runs an ONNX model: onnxruntime or openvino (CPU; fused models need the ECA extension)."


def runtime_option(default: str = "onnxruntime") -> Any:
    """The shared `--runtime` option of check, bench, run and deploy (validated by `parse_runtime`)."""
    import typer

    return typer.Option(default, "--runtime", help=RUNTIME_HELP)


DECODER_HELP = "FILE.py:FUNCTION turning one frame's outputs into boxes, scores and class ids (a detector's decoder)."


def decoder_option(help: str = DECODER_HELP) -> Any:
    """--decoder FILE.py:FUNCTION (run draws its boxes; check/convert/quantize judge a detector by them)."""
    return typer.Option(None, "--decoder", metavar="FILE.py:FUNCTION", help=help, show_default=False)


def layout_option() -> Any:
    """--layout NAME: a detector's raw head layout, for a model whose metadata does not record it."""
    from eca_deploy.interface import DETECTION_LAYOUTS

    names = ", ".join(DETECTION_LAYOUTS)
    help = f"Detection head layout when the metadata has none: {names}."
    return typer.Option(None, "--layout", metavar="NAME", show_default=False, help=help)


def parse_layout(value: str | None) -> str | None:
    """--layout NAME checked against the known layouts (before any work)."""
    from eca_deploy.interface import DETECTION_LAYOUTS

    return None if value is None else check_choice(value, "--layout", tuple(DETECTION_LAYOUTS))


def detector_options(layout: str | None, decoder: str | None, output_names: Sequence[str]) -> tuple[Any, Any]:
    """(DetectionSpec from --layout, Decoder from --decoder) for a model with these outputs; one of them at most."""
    if layout is not None and decoder is not None:
        raise EcaDeployError("pass --layout NAME or --decoder FILE.py:FUNCTION, not both")
    if layout is not None:
        from eca_deploy.detection.decoders import spec_for

        return spec_for(layout, output_names), None
    if decoder is not None:
        from eca_deploy.runtime.decoder import Decoder

        return None, Decoder.load(decoder, output_names)
    return None, None


def parse_runtime(value: str) -> str:
    from eca_deploy.backends.handle import RUNTIMES

    runtime = value.strip().lower()
    if runtime not in RUNTIMES:
        raise EcaDeployError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {value!r}")
    return runtime


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


IMG_SIZE_HELP = (
    "Input size N or HxW (e.g. 320 or 320x256): for a model with a dynamic size, the size to run, calibrate and "
    "verify at (default: its metadata's); a static model's own size is used and a different one is an error."
)


def img_size_option(help: str = IMG_SIZE_HELP) -> Any:
    """The shared `--img-size N|HxW` option of check, convert, quantize, bench, deploy and run (`parse_img_size`)."""
    return typer.Option(None, "--img-size", metavar="N|HxW", help=help, show_default=False)


def parse_img_size(value: str | None) -> tuple[int, int] | None:
    """'320' -> (320, 320), '96x64' -> (96, 64); <= 0 or > 4096 per side is a one-line error naming --img-size."""
    from eca_deploy.interface import parse_img_size as parse

    return parse(value, "--img-size")


# Help texts of options several commands share (declared once, used by export, check, deploy, serving).
MODEL_HELP = (
    "Zoo name (`eca-deploy models`), timm:NAME (`models --timm`), path/to/file.py:factory, or an "
    "ultralytics model YAML (x.yaml) or checkpoint (best.pt, with --trust-checkpoint)."
)
WEIGHTS_HELP = "Checkpoint: .pth/.pth.tar/.safetensors (plain state_dict or wrapped in state_dict/model)."
TRUST_CHECKPOINT_HELP = (
    "Load an ultralytics checkpoint (--model best.pt), a pickle of a whole module: "
    "unpickling runs code from the file, so pass this only for files you trust."
)


def trust_checkpoint_option() -> Any:
    """The shared `--trust-checkpoint` flag of every command that takes --model (export, check, deploy)."""
    return typer.Option(False, "--trust-checkpoint", help=TRUST_CHECKPOINT_HELP)


PRETRAINED_HELP = "timm:NAME only: timm's published weights, downloaded by timm (Hugging Face Hub) and cached."
MEAN_HELP = "Normalisation mean per RGB channel (default: the model's; ImageNet 0.485,0.456,0.406)."
STD_HELP = "Normalisation std per RGB channel (default: the model's; ImageNet 0.229,0.224,0.225)."
INTERPOLATION_HELP = "Resize filter: bilinear or bicubic (default: the model's; bilinear without metadata)."
RESIZE_MODE_HELP = (
    "How images reach the input size: crop (shorter side resized, centre crop: ImageNet) or letterbox (scaled to "
    "fit, padded with grey 114: ultralytics YOLO, with --mean 0,0,0 --std 1,1,1). Default: the model's; crop "
    "without metadata."
)


# -- The preprocessing options: declared once, on every command that feeds images --------------------------


def mean_option(help: str = MEAN_HELP) -> Any:
    return typer.Option(None, "--mean", metavar="R,G,B", help=help, show_default=False)


def std_option(help: str = STD_HELP) -> Any:
    return typer.Option(None, "--std", metavar="R,G,B", help=help, show_default=False)


def interpolation_option(help: str = INTERPOLATION_HELP) -> Any:
    return typer.Option(None, "--interpolation", metavar="FILTER", help=help, show_default=False)


def resize_mode_option(help: str = RESIZE_MODE_HELP) -> Any:
    return typer.Option(None, "--resize-mode", metavar="crop|letterbox", help=help, show_default=False)


@dataclass(frozen=True)
class PreprocessingFlags:
    """--mean/--std/--interpolation/--resize-mode as typed; `of` checks them all before any work starts."""

    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    interpolation: str | None = None
    resize_mode: str | None = None

    @classmethod
    def of(
        cls, mean: str | None = None, std: str | None = None, interpolation: str | None = None,
        resize_mode: str | None = None,
    ) -> PreprocessingFlags:  # fmt: skip
        from eca_deploy.data.images import INTERPOLATIONS, RESIZE_MODES

        flags = cls(
            parse_triplet(mean, "--mean"),
            parse_triplet(std, "--std"),
            None if interpolation is None else check_choice(interpolation, "--interpolation", INTERPOLATIONS),
            None if resize_mode is None else check_choice(resize_mode, "--resize-mode", RESIZE_MODES),
        )
        if flags.resize_mode == "letterbox" and flags.interpolation is not None:
            try:
                Preprocessing(resize_mode="letterbox", interpolation=flags.interpolation)
            except EcaDeployError as exc:
                raise EcaDeployError(
                    f"--interpolation {flags.interpolation} with --resize-mode letterbox: {exc}"
                ) from None
        return flags

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.mean, self.std, self.interpolation, self.resize_mode))

    def apply(self, prep: Preprocessing) -> Preprocessing:
        """`prep` with the flags given on the command line."""
        from dataclasses import replace

        changes = {k: v for k, v in (("mean", self.mean), ("std", self.std), ("interpolation", self.interpolation))
                   if v is not None}  # fmt: skip
        prep = replace(prep, **changes) if changes else prep  # the filter first: the letterbox checks it
        return prep.with_resize_mode(self.resize_mode) if self.resize_mode is not None else prep

    @property
    def adjust(self) -> Callable[[Preprocessing], Preprocessing] | None:
        """`apply` when any flag was given (what `build_interface(adjust=...)` takes), else None."""
        return self.apply if self.given else None


def preprocessing_override(
    base: Preprocessing | None,
    img_size: int | None,
    mean: str | None,
    std: str | None,
    interpolation: str | None = None,
    resize_mode: str | None = None,
) -> Preprocessing:
    """`base` (None: ImageNet's, at --img-size or 224) with the flags given on the command line."""
    from eca_deploy.interface import DEFAULT_SIZE

    prep = base if base is not None else Preprocessing.for_size(img_size or DEFAULT_SIZE)
    if img_size is not None:
        prep = prep.at_size(img_size)
    return PreprocessingFlags.of(mean, std, interpolation, resize_mode).apply(prep)


# -- --json: one option for every command ------------------------------------------------------------------

JSON_HELP = "Results as JSON: bare --json (or --json -) prints them on stdout, nothing else; --json FILE writes FILE."
MODEL_SUFFIXES = (".onnx", ".plan", ".engine", ".trt", ".pth", ".pt", ".tar", ".so")


FORCE_HELP = "Replace existing output files that eca-deploy did not write (its own are replaced anyway)."


def force_option(help: str = FORCE_HELP) -> Any:
    """--force: the output rule's one exception (eca_deploy.fileio.allow_replacing)."""
    return typer.Option(False, "--force", help=help)


def json_option(help: str = JSON_HELP) -> Any:
    """The `--json [FILE]` option; the command reads its value with `JsonOutput.of`."""
    return typer.Option(None, "--json", metavar="FILE", help=help, show_default=False)


@dataclass(frozen=True)
class JsonOutput:
    """Where `--json` sends its document: nowhere, stdout (and nothing else there) or a file."""

    requested: bool
    path: Path | None = None

    @property
    def stdout(self) -> bool:
        return self.requested and self.path is None

    def __bool__(self) -> bool:
        return self.requested

    @classmethod
    def of(cls, value: str | Path | None, inputs: Sequence[Path | str | None] = ()) -> JsonOutput:
        """Check a file target (never one of `inputs`) before any work; silence tables when JSON goes to stdout."""
        from eca_deploy.cli.console import console
        from eca_deploy.fileio import claim_output_file

        if value is None:
            return cls(False)
        if str(value) == "-":
            console.quiet = True
            return cls(True)
        path = Path(value)
        if path.name.lower().endswith(MODEL_SUFFIXES):
            raise EcaDeployError(
                f"--json {path} would overwrite a model file with JSON: put --json after the other arguments, "
                "or give a .json file name"
            )
        claim_output_file(path, "--json", inputs)
        return cls(True, path)

    def write(self, data: Any) -> None:
        from eca_deploy.cli.console import print_json
        from eca_deploy.fileio import atomic_write_text

        if self.path is not None:
            atomic_write_text(self.path, json.dumps(data, indent=2, default=str) + "\n")
        elif self.requested:
            print_json(data)


def check_outputs(*items: tuple[Path | None, str], inputs: Sequence[Path | str | None] = ()) -> None:
    """Fail before any work when an output file (given with its option) cannot be written or is an input."""
    from eca_deploy.fileio import claim_output_file, distinct_outputs

    for path, option in items:
        if path is not None:
            claim_output_file(path, option, inputs)
    distinct_outputs(*items)


def _json_takes_value(app: Any, args: Sequence[str]) -> bool:
    """Whether the command that `args` name has a `--json` option taking a value (`json_option`)."""
    import typer.main

    command = typer.main.get_command(app)
    for token in (a for a in args if not a.startswith("-")):
        sub = getattr(command, "commands", None)
        if not sub:
            break  # a command: the remaining tokens are its arguments
        if token not in sub:
            return False  # an unknown command: the parser will say so
        command = sub[token]
    option = next((p for p in getattr(command, "params", []) if "--json" in getattr(p, "opts", ())), None)
    return option is not None and not getattr(option, "is_flag", False)


def expand_bare_json(app: Any, args: list[str]) -> list[str]:
    """`--json` without a file (last, or before another option) means `--json -`: JSON on stdout."""
    if "--json" not in args or not _json_takes_value(app, args):
        return args
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        following = out[i + 1] if i + 1 < len(out) else None
        if arg == "--json" and (following is None or (following.startswith("-") and following != "-")):
            out[i] = "--json=-"
    return out


# -- Validation before any work: each check names the option the user typed ---------------------------------


def parse_duration(value: str, option: str = "--duration", *, allow_zero: bool = False) -> float:
    """'10s', '500ms', '1min' or '3' (seconds) -> seconds; positive (or zero with `allow_zero`)."""
    text = value.strip().lower()
    scale = 1e-3 if text.endswith("ms") else 60.0 if text.endswith("min") else 1.0
    number = text.removesuffix("ms").removesuffix("min").removesuffix("s")
    try:
        seconds = float(number) * scale
    except ValueError:
        raise EcaDeployError(f"{option} takes a duration such as 10s, 500ms or 1min, got {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        kind = "zero or positive" if allow_zero else "positive"
        raise EcaDeployError(f"{option} must be a {kind} duration such as 10s, 500ms or 1min, got {value!r}")
    return seconds


def check_at_least(value: int | None, option: str, minimum: int = 1) -> None:
    """An integer option (None: not given) is at least `minimum`."""
    if value is not None and value < minimum:
        raise EcaDeployError(f"{option} must be at least {minimum}, got {value}")


def check_between(value: float | None, option: str, low: float, high: float) -> None:
    """A number option (None: not given) lies in [low, high]."""
    if value is not None and not (math.isfinite(value) and low <= value <= high):
        raise EcaDeployError(f"{option} must be between {low:g} and {high:g}, got {value:g}")


def check_positive(value: float | None, option: str) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise EcaDeployError(f"{option} must be positive, got {value:g}")


def check_choice(value: str, option: str, choices: Sequence[str]) -> str:
    text = value.strip().lower()
    if text not in choices:
        raise EcaDeployError(f"{option} must be one of {', '.join(choices)}, got {value!r}")
    return text


def check_file(path: Path | None, option: str) -> None:
    """An input file given with `option` exists and can be read."""
    if path is None:
        return
    if path.is_dir():
        raise EcaDeployError(f"{option} {path} is a folder: give a file")
    if not path.is_file():
        raise EcaDeployError(f"{option} {path} does not exist: check the path")
    if not os.access(path, os.R_OK):
        raise EcaDeployError(f"{option} {path} cannot be read (permission denied)")


def check_onnx_file(path: Path | None, option: str = "--onnx") -> None:
    """`path` exists and parses as an ONNX model with a graph (external weights are not read)."""
    if path is None:
        return
    check_file(path, option)
    from eca_deploy.onnx_io import load_onnx

    try:
        load_onnx(path, load_external_data=False)
    except EcaDeployError:
        raise EcaDeployError(
            f"{option} {path} is not an ONNX model (protobuf cannot parse it, or it has no graph): "
            "pass an .onnx file, e.g. one written by eca-deploy export"
        ) from None


def _opens(path: Path) -> bool:
    """Whether PIL can identify and verify `path` (header and structure; the pixels are not decoded)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except Exception:  # PIL raises many kinds on broken files
        return False


def check_image_folder(path: Path | None, option: str) -> None:
    """A folder of images of which at least one opens (unreadable ones are skipped and counted later)."""
    if path is None:
        return
    from eca_deploy.data.images import IMAGE_SUFFIXES, list_images

    if not path.is_dir():
        what = "is a file" if path.exists() else "does not exist"
        raise EcaDeployError(f"{option} {path} {what}: pass a folder of jpg/png files")
    try:
        images = list_images(path)
    except EcaDeployError:
        raise EcaDeployError(
            f"{option} {path} holds no jpg/png images ({', '.join(IMAGE_SUFFIXES)}): add some or choose another folder"
        ) from None
    if not any(_opens(p) for p in images):
        raise EcaDeployError(
            f"{option} {path}: none of its {len(images)} images can be read (first: {images[0].name}): "
            "pass a folder of valid jpg/png files"
        )


def check_out_folder(path: Path, option: str) -> None:
    """A folder to write into (created later, not now): a folder or nothing, under a writable existing folder."""
    if path.exists():
        if not path.is_dir():
            raise EcaDeployError(f"{option} {path} is a file: give a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise EcaDeployError(f"{option} {path} is not writable: choose another folder")
        return
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise EcaDeployError(f"cannot create {option} {path}: {parent} is not a writable folder")
