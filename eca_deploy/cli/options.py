"""Option parsing shared by several commands."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eca_deploy import interface
from eca_deploy.backends.handle import RUNTIMES, ModelSpec
from eca_deploy.cli.console import console, print_json
from eca_deploy.cli.groups import RENAMED
from eca_deploy.data.images import IMAGE_SUFFIXES, INTERPOLATIONS, RESIZE_MODES, Preprocessing, list_images, open_image
from eca_deploy.detection.decoders import spec_for
from eca_deploy.errors import EcaDeployError, SettingError
from eca_deploy.fileio import atomic_write_text, claim_output_file, distinct_outputs
from eca_deploy.interface import DEFAULT_SIZE, DETECTION_LAYOUTS
from eca_deploy.onnx_io import load_onnx
from eca_deploy.runtime.decoder import Decoder


def parse_batch(value: str) -> int | None:
    """'dynamic' -> None, 'N' -> N."""
    if value.strip().lower() == "dynamic":
        return None
    try:
        batch = int(value)
    except ValueError:
        raise EcaDeployError(f"--batch-dim must be 'dynamic' or a positive integer, got {value!r}") from None
    if batch < 1:
        raise EcaDeployError(f"--batch-dim must be 'dynamic' or a positive integer, got {value!r}")
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


def parse_sizes(value: str, option: str = "--batch-sizes", example: str = "1,8,32") -> tuple[int, ...]:
    """'1,8,32' -> (1, 8, 32): positive integers, comma-separated."""
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise EcaDeployError(f"{option} takes batch sizes such as {example}, got {value!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise EcaDeployError(f"{option} takes positive batch sizes such as {example}, got {value!r}")
    return sizes


PROVIDERS = ("cpu", "cuda", "tensorrt")  # ONNX Runtime's --provider choices


def parse_layout(value: str | None) -> str | None:
    """--layout NAME checked against the known layouts (before any work)."""
    return None if value is None else check_choice(value, "--layout", tuple(DETECTION_LAYOUTS))


def detector_options(layout: str | None, decoder: str | None, output_names: Sequence[str]) -> tuple[Any, Any]:
    """(DetectionSpec from --layout, Decoder from --decoder) for a model with these outputs; one of them at most."""
    if layout is not None and decoder is not None:
        raise EcaDeployError("pass --layout NAME or --decoder FILE.py:FUNCTION, not both")
    if layout is not None:
        return spec_for(layout, output_names), None
    if decoder is not None:
        return None, Decoder.load(decoder, output_names)
    return None, None


def parse_runtime(value: str) -> str:
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


def parse_img_size(value: str | None) -> tuple[int, int] | None:
    """'320' -> (320, 320), '96x64' -> (96, 64); <= 0 or > 4096 per side is a one-line error naming --img-size."""
    return interface.parse_img_size(value, "--img-size")


@dataclass(frozen=True)
class PreprocessingFlags:
    """--mean/--std/--interpolation/--resize-mode as typed; `of` checks them all before any work starts."""

    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    interpolation: str | None = None
    resize_mode: str | None = None

    @classmethod
    def of(
        cls,
        mean: str | None = None,
        std: str | None = None,
        interpolation: str | None = None,
        resize_mode: str | None = None,
    ) -> PreprocessingFlags:
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

        changes = {
            k: v
            for k, v in (("mean", self.mean), ("std", self.std), ("interpolation", self.interpolation))
            if v is not None
        }
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
    prep = base if base is not None else Preprocessing.for_size(img_size or DEFAULT_SIZE)
    if img_size is not None:
        prep = prep.at_size(img_size)
    return PreprocessingFlags.of(mean, std, interpolation, resize_mode).apply(prep)


# -- --json: one option for every command ------------------------------------------------------------------

MODEL_SUFFIXES = (".onnx", ".plan", ".engine", ".trt", ".pth", ".pt", ".tar", ".so")


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
        if self.path is not None:
            atomic_write_text(self.path, json.dumps(data, indent=2, default=str) + "\n")
        elif self.requested:
            print_json(data)


def check_outputs(*items: tuple[Path | None, str], inputs: Sequence[Path | str | None] = ()) -> None:
    """Fail before any work when an output file (given with its option) cannot be written or is an input."""
    for path, option in items:
        if path is not None:
            claim_output_file(path, option, inputs)
    distinct_outputs(*items)


def command_of(app: Any, args: Sequence[str]) -> Any:
    """The Click command that `args` name (the group itself while they name none), None for an unknown name."""
    import typer.main

    command = typer.main.get_command(app)
    for token in (a for a in args if not a.startswith("-")):
        sub = getattr(command, "commands", None)
        if not sub:
            break  # a command: the remaining tokens are its arguments
        if token not in sub:
            return None  # an unknown command: the parser will say so
        command = sub[token]
    return command


def _json_takes_value(app: Any, args: Sequence[str]) -> bool:
    """Whether the command that `args` name has a `--json` option taking a value (`groups.Json`)."""
    params = getattr(command_of(app, args), "params", [])
    option = next((p for p in params if "--json" in getattr(p, "opts", ())), None)
    return option is not None and not getattr(option, "is_flag", False)


def error_message(exc: EcaDeployError, app: Any, args: Sequence[str]) -> str:
    """`exc`'s one line; a `SettingError` names each setting by the option of this command that sets it."""
    if not isinstance(exc, SettingError):
        return str(exc)
    params = getattr(command_of(app, args), "params", [])
    flags = {p.name: next((o for o in p.opts if o.startswith("--")), p.opts[0]) for p in params if p.opts}
    return exc.spell(lambda name: flags.get(name, "--" + name.replace("_", "-")))


def rename_old_spellings(args: list[str]) -> list[str]:
    """Old option names (`groups.RENAMED`, hidden from --help) replaced by today's, for the command `args` name."""
    command = next((a for a in args if not a.startswith("-")), None)
    renamed = {old: new for (name, old), new in RENAMED.items() if name == command}
    if not renamed:
        return args
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        flag, equals, value = arg.partition("=")
        if flag in renamed:
            out[i] = renamed[flag] + equals + value
    return out


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


def one_model(onnx_path: Path | None, engine: Path | None) -> Path:
    """The one model file of a command that takes `--onnx` or `--engine`, checked before any other work (the rule
    itself is `ModelSpec.of`'s)."""
    return ModelSpec.of(onnx_path, engine).path


def check_onnx_file(path: Path | None, option: str = "--onnx") -> None:
    """`path` exists and parses as an ONNX model with a graph (external weights are not read)."""
    if path is None:
        return
    check_file(path, option)
    try:
        load_onnx(path, load_external_data=False)
    except EcaDeployError:
        raise EcaDeployError(
            f"{option} {path} is not an ONNX model (protobuf cannot parse it, or it has no graph): "
            "pass an .onnx file, e.g. one written by eca-deploy export"
        ) from None


def _opens(path: Path) -> bool:
    """Whether PIL can identify and verify `path` (header and structure; the pixels are not decoded)."""
    try:
        with open_image(path) as img:
            img.verify()
        return True
    except Exception:  # PIL raises many kinds on broken files
        return False


def check_image_folder(path: Path | None, option: str) -> None:
    """A folder of images of which at least one opens (unreadable ones are skipped and counted later)."""
    if path is None:
        return
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
