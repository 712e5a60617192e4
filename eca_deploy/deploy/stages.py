"""deploy's stages as specs: one object per stage holds the stage's options, and the same fields make both the
library call (`run`) and the command line the manifest records (`argv`), so the two cannot drift.

Each spec's fields are the options of its own command (`eca-deploy export`, `fuse`, `convert`, `quantize`,
`check`, `bench`, `build`); `argv` spells every field that differs from the command's default, `run` passes
every field to the function that command calls. `key` is what the stage record hashes besides its input files
(deploy.cache): the options that are not input files, whose content is hashed instead.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eca_deploy.backends.handle import ModelSpec, open_model
from eca_deploy.engine.build import Profile
from eca_deploy.fileio import atomic_write_text
from eca_deploy.pipeline.bench import BenchConfig
from eca_deploy.pipeline.bench_report import run_bench
from eca_deploy.pipeline.build import BuildRequest, run_build
from eca_deploy.pipeline.check import run_check, tolerance_for
from eca_deploy.pipeline.convert import run_convert
from eca_deploy.pipeline.export import run_export
from eca_deploy.pipeline.fuse import run_fuse
from eca_deploy.pipeline.quantize import run_quantize
from eca_deploy.precision.quantize import QuantizeOptions

DEPLOY_METHOD = "entropy"  # deploy's calibration (quantize's own default is percentile; recorded with --method)


def _size_flag(size: tuple[int, int] | None) -> str | None:
    return None if size is None else (str(size[0]) if size[0] == size[1] else f"{size[0]}x{size[1]}")


def _opt(flag: str, value: object) -> list[str]:
    return [flag, str(value)] if value is not None else []


def _flag(flag: str, on: bool) -> list[str]:
    return [flag] if on else []


@dataclass(frozen=True)
class StageSpec:
    """One stage's options; subclasses say how they read as a command (`argv`) and as a call (`run`)."""

    def argv(self) -> list[str]:
        raise NotImplementedError

    def run(self) -> dict[str, Any]:
        raise NotImplementedError

    def command(self) -> str:
        """The command line that does what `run` does (paths as deploy was given them)."""
        return shlex.join(["eca-deploy", *self.argv()])

    def key(self) -> dict[str, Any]:
        """The options besides input files (those are hashed by content): every field that is not a path."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not _is_path(getattr(self, f.name))}


def _is_path(value: object) -> bool:
    return isinstance(value, Path) or (isinstance(value, tuple) and any(isinstance(v, Path) for v in value))


@dataclass(frozen=True)
class ExportSpec(StageSpec):
    model: str
    output: Path
    weights: Path | None = None
    pretrained: bool = False
    img_size: tuple[int, int] | None = None  # H, W; None: the model's own
    opset: int = 17
    images: Path | None = None  # photos the export is verified on
    trust_checkpoint: bool = False  # an ultralytics checkpoint (a pickle) given as the model

    def argv(self) -> list[str]:
        return [
            "export",
            "--model",
            self.model,
            *_opt("--weights", self.weights),
            *_flag("--pretrained", self.pretrained),
            *_opt("--img-size", _size_flag(self.img_size)),
            "--opset",
            str(self.opset),
            *_opt("--images", self.images),
            *_flag("--trust-checkpoint", self.trust_checkpoint),
            "--output",
            str(self.output),
        ]

    def run(self) -> dict[str, Any]:
        size = self.img_size
        result = run_export(
            model_name=self.model,
            weights=self.weights,
            output=self.output,
            opset=self.opset,
            img_size=size[0] if size else None,
            adjust=(lambda p: p.at_hw(size)) if size is not None and size[0] != size[1] else None,
            images=self.images,
            pretrained=self.pretrained,
            trust_checkpoint=self.trust_checkpoint,
        )
        return {"verification": result.verification, "verified_outputs": result.verified_outputs}


@dataclass(frozen=True)
class FuseSpec(StageSpec):
    source: Path
    output: Path
    write_unchanged: bool = True  # a model without ECA blocks goes on unfused

    def argv(self) -> list[str]:
        return [
            "fuse",
            str(self.source),
            *_flag("--write-unchanged", self.write_unchanged),
            "--output",
            str(self.output),
        ]

    def run(self) -> dict[str, Any]:
        result = run_fuse(self.source, self.output, write_unchanged=self.write_unchanged)
        return {"fused": result.report.count, "max_abs_diff": result.max_abs_diff}


@dataclass(frozen=True)
class ConvertSpec(StageSpec):
    """FP16 conversion; not judged here (verify off): the check stage judges every precision alike."""

    source: Path
    output: Path
    verify: bool = False

    def argv(self) -> list[str]:
        return [
            "convert",
            "--fp16",
            "--onnx",
            str(self.source),
            *_flag("--no-verify", not self.verify),
            "--output",
            str(self.output),
        ]

    def run(self) -> dict[str, Any]:
        return {"fp16": run_convert(self.source, self.output, verify=self.verify).as_dict()}


@dataclass(frozen=True)
class QuantizeSpec(StageSpec):
    """Q/DQ INT8; not judged here (verify off, so written whatever its accuracy): the check stage judges it."""

    source: Path
    calib_images: Path
    output: Path
    count: int = 512
    method: str = DEPLOY_METHOD
    verify: bool = False
    keep_failed: bool = False

    def argv(self) -> list[str]:
        return [
            "quantize",
            "--onnx",
            str(self.source),
            "--calib-images",
            str(self.calib_images),
            "--calib-count",
            str(self.count),
            "--method",
            self.method,
            *_flag("--no-verify", not self.verify),
            *_flag("--keep-failed", self.keep_failed),
            "--output",
            str(self.output),
        ]

    def run(self) -> dict[str, Any]:
        options = QuantizeOptions(method=self.method, count=self.count)
        result = run_quantize(
            self.source, self.calib_images, self.output, options, verify=self.verify, keep_failed=self.keep_failed
        )
        return {"int8": result.as_dict()}

    def key(self) -> dict[str, Any]:
        return {"count": self.count, "method": self.method, "verify": self.verify, "keep_failed": self.keep_failed}


@dataclass(frozen=True)
class CheckSpec(StageSpec):
    """Compare a model (ONNX or engine) with PyTorch `model`, or with `reference_onnx`; write its JSON report."""

    target: Path
    kind: str  # "onnx" or "engine"
    output: Path  # the JSON report
    runtime: str = "onnxruntime"
    model: str | None = None
    reference_onnx: Path | None = None
    weights: Path | None = None
    images: Path | None = None
    trust_checkpoint: bool = False

    def argv(self) -> list[str]:
        runtime = _opt("--runtime", self.runtime) if self.runtime not in ("onnxruntime", "tensorrt") else []
        return [
            "check",
            "--engine" if self.kind == "engine" else "--onnx",
            str(self.target),
            *runtime,
            *_opt("--model", self.model),
            *_opt("--reference-onnx", self.reference_onnx),
            *_opt("--weights", self.weights),
            *_opt("--images", self.images),
            *_flag("--trust-checkpoint", self.trust_checkpoint),
            "--json",
            str(self.output),
        ]

    def run(self) -> dict[str, Any]:
        runtime = "onnxruntime" if self.runtime == "tensorrt" else self.runtime
        target = open_model(ModelSpec(self.target, kind=self.kind, runtime=runtime, qdq_arithmetic=True))
        result = run_check(
            target,
            model_name=self.model,
            weights=self.weights,
            images=self.images,
            reference_onnx=self.reference_onnx,
            tolerance=tolerance_for(target.precision, None, None, None),
            trust_checkpoint=self.trust_checkpoint,
        )
        atomic_write_text(self.output, json.dumps(result.as_dict(), indent=2, default=str) + "\n")
        return {"passed": result.passed}

    def key(self) -> dict[str, Any]:  # the photos are named by folder, as `check --images` takes them
        return {"images": str(self.images or "")} | ({"runtime": self.runtime} if self.runtime != "onnxruntime" else {})


@dataclass(frozen=True)
class BenchSpec(StageSpec):
    """Every model of every precision (and CPU runtime) timed together, in interleaved rounds."""

    models: tuple[Path, ...]  # distinct files, in order
    output: Path  # the JSON report
    runtimes: tuple[str, ...] = ()  # CPU runtimes, each ONNX model on each; () for engines / ONNX Runtime alone
    unfused: Mapping[Path, Path] = field(default_factory=dict)  # fused model -> its unfused twin (OpenVINO)
    batches: tuple[int, ...] = (1, 8, 32)
    warmup_s: float = 1.0
    duration_s: float = 3.0
    rounds: int = 3
    img_size: tuple[int, int] | None = None

    def argv(self) -> list[str]:
        runtimes = ["--runtime", ",".join(self.runtimes)] if self.runtimes and self.runtimes != ("onnxruntime",) else []
        twins = [a for fused, plain in self.unfused.items() for a in ("--unfused", f"{fused}={plain}")]
        return [
            "bench",
            "--compare",
            *map(str, self.models),
            *runtimes,
            *twins,
            "--batch-sizes",
            ",".join(map(str, self.batches)),
            *_opt("--img-size", _size_flag(self.img_size)),
            "--warmup",
            f"{self.warmup_s}s",
            "--duration",
            f"{self.duration_s}s",
            "--rounds",
            str(self.rounds),
            "--json",
            str(self.output),
        ]

    def run(self) -> dict[str, Any]:
        config = BenchConfig(
            batches=self.batches, warmup_s=self.warmup_s, duration_s=self.duration_s, rounds=self.rounds
        )
        models, kinds, runtimes = self.expanded()
        report = run_bench(
            models,
            config,
            kinds=kinds,
            runtimes=runtimes,
            img_size=self.img_size,
            unfused={str(k): v for k, v in self.unfused.items()},
        )
        atomic_write_text(self.output, json.dumps(report, indent=2, default=str) + "\n")
        return {"warnings": report["noise"]["warnings"]}

    def expanded(self) -> tuple[list[Path], list[str | None], list[str]]:
        """(model, kind, runtime) per timed entry: each ONNX model once per runtime, an engine once."""
        out: tuple[list[Path], list[str | None], list[str]] = ([], [], [])
        runtimes = self.runtimes or ("onnxruntime",)
        for path in self.models:
            engine = path.suffix == ".plan"
            for runtime in runtimes[:1] if engine else runtimes:
                out[0].append(path)
                out[1].append("engine" if engine else "onnx")
                out[2].append(runtime)
        return out

    def key(self) -> dict[str, Any]:
        return {
            "batches": list(self.batches),
            "seconds": self.duration_s,
            "rounds": self.rounds,
            "warmup": self.warmup_s,
            "img_size": self.img_size,
            "runtimes": list(self.runtimes),
            "models": [p.name for p in self.models],
        }


@dataclass(frozen=True)
class BuildSpec(StageSpec):
    """A TensorRT engine of an ONNX model (already in its precision) and its sidecar."""

    source: Path
    output: Path
    batch: str  # the profile, MIN:OPT:MAX

    def argv(self) -> list[str]:
        return ["build", "--onnx", str(self.source), "--batch-range", self.batch, "--output", str(self.output)]

    def run(self) -> dict[str, Any]:
        result = run_build(BuildRequest(onnx_path=self.source, output=self.output, profile=Profile.parse(self.batch)))
        return {"sidecar": result.as_dict()}
