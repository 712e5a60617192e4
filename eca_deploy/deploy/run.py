"""Run export -> fuse -> FP16 / INT8 -> engine build -> check -> bench into one folder, stage by stage.

No stage is implemented twice: each one calls the same library function as its own command, and the
manifest records that command line.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eca_deploy.deploy.cache import StageCache, StageOutcome
from eca_deploy.errors import EcaDeployError
from eca_deploy.fileio import atomic_write_text, sha256_file

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class DeployOptions:
    model: str
    out: Path
    weights: Path | None = None
    precisions: tuple[str, ...] = ("fp32", "fp16")
    calib_images: Path | None = None
    calib_count: int = 512
    images: Path | None = None
    batches: tuple[int, ...] = (1, 8, 32)
    img_size: int = 224
    opset: int = 17
    bench_seconds: float = 3.0
    bench_rounds: int = 5
    force: bool = False

    def validate(self) -> None:
        from eca_deploy.models import get_spec

        get_spec(self.model)
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown or not self.precisions:
            raise EcaDeployError(
                f"unknown precision {', '.join(unknown) or '(none)'}: choose from {', '.join(PRECISIONS)}"
            )
        if "int8" in self.precisions and self.calib_images is None:
            raise EcaDeployError("int8 needs calibration images: pass --calib-images DIR (a few hundred real photos)")
        if self.weights is not None and not self.weights.is_file():
            raise EcaDeployError(f"weights file {self.weights} does not exist: check --weights")
        for folder in (self.calib_images, self.images):
            if folder is not None and not folder.is_dir():
                raise EcaDeployError(f"image folder {folder} does not exist: pass a folder of jpg/png files")
        if any(b < 1 for b in self.batches):
            raise EcaDeployError(f"--batch takes positive batch sizes, got {list(self.batches)}")
        if self.bench_rounds < 1:
            raise EcaDeployError(f"--rounds must be at least 1, got {self.bench_rounds}")


@dataclass
class DeployResult:
    summary: dict[str, Any]
    stages: list[StageOutcome] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r["check"]["passed"] for r in self.summary["results"].values())


def tensorrt_status() -> str | None:
    """None when engines can be built here, else the reason why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed"
    from eca_deploy.environment import gpu_info

    if gpu_info() is None:
        return "no NVIDIA GPU found"
    return None


def prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise EcaDeployError(f"--out {out} is a file: give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EcaDeployError(f"cannot create --out {out} ({exc.strerror}): choose another folder") from None
    if not os.access(out, os.W_OK):
        raise EcaDeployError(f"--out {out} is not writable: choose another folder")


def _cmd(*parts: object) -> str:
    return " ".join(str(parts[0]).split() + [shlex.quote(str(p)) for p in parts[1:]])


def _opt(flag: str, value: object) -> tuple[object, ...]:
    return (flag, value) if value is not None else ()


def run_deploy(
    opts: DeployOptions,
    on_stage: Callable[[str, str], Any] | None = None,
    on_done: Callable[[StageOutcome], None] | None = None,
    note: Callable[[str], None] = lambda _m: None,
) -> DeployResult:
    """Run every stage for `opts`; `on_stage(name, what)` gives a context manager shown while it works."""
    import contextlib

    from eca_deploy import environment

    opts.validate()
    prepare_out(opts.out)
    out, cache = opts.out, StageCache(opts.out, opts.force)
    stages: list[StageOutcome] = []
    commands: dict[str, str] = {}
    trt_missing = tensorrt_status()
    if trt_missing:
        note(f"{trt_missing}: building no engines; every figure below is from ONNX Runtime on the CPU")
    if opts.weights is None:
        from eca_deploy.exporters.metadata import RANDOM_WEIGHTS_NOTICE

        note(f"{opts.model} has {RANDOM_WEIGHTS_NOTICE}")

    def stage(name: str, what: str, options: dict[str, Any], inputs: list[Path], outputs: list[Path],
              work: Callable[[], dict[str, Any] | None], command: str) -> StageOutcome:  # fmt: skip
        commands[name] = command
        with on_stage(name, what) if on_stage else contextlib.nullcontext():
            outcome = cache.run(name, options, inputs, outputs, work)
        stages.append(outcome)
        if on_done:
            on_done(outcome)
        return outcome

    weights_in = [opts.weights] if opts.weights else []
    onnx_path, fused = out / "model.onnx", out / "model.fused.onnx"
    stage("export", f"exporting {opts.model} and verifying it against PyTorch",
          {"model": opts.model, "img_size": opts.img_size, "opset": opts.opset}, weights_in, [onnx_path],
          lambda: _export(opts, onnx_path),
          _cmd("eca-deploy export --model", opts.model, *_opt("--weights", opts.weights),
               "--img-size", opts.img_size, "--opset", opts.opset, "--output", onnx_path))  # fmt: skip
    stage("fuse", "fusing ECA blocks into ECA nodes", {}, [onnx_path], [fused], lambda: _fuse(onnx_path, fused),
          _cmd("eca-deploy fuse", onnx_path, "--output", fused))  # fmt: skip

    targets: dict[str, tuple[Path, str]] = {}
    for precision in opts.precisions:
        model_file = _precision_stage(precision, opts, fused, stage)
        target_file, kind = model_file, "onnx"
        if not trt_missing:
            target_file, kind = _build_stage(precision, opts, model_file, stage), "engine"
        targets[precision] = (target_file, kind)
        check_json = out / f"check.{precision}.json"
        flag = "--engine" if kind == "engine" else "--onnx"
        stage(f"check-{precision}", f"checking {precision} against PyTorch on real photos",
              {"images": str(opts.images or "")}, [target_file, *weights_in], [check_json],
              lambda t=target_file, k=kind, j=check_json: _check(opts, t, k, j),
              _cmd("eca-deploy check", flag, target_file, "--model", opts.model, *_opt("--weights", opts.weights),
                   *_opt("--images", opts.images), "--json", check_json))  # fmt: skip
    # One benchmark of every precision, in interleaved rounds: drift and load hit all of them alike.
    bench_json = out / "bench.json"
    files = [t for t, _ in targets.values()]
    stage("bench", f"benchmarking {', '.join(targets)} at batch {','.join(map(str, opts.batches))}, "
          f"{opts.bench_rounds} interleaved rounds",
          {"batches": list(opts.batches), "seconds": opts.bench_seconds, "rounds": opts.bench_rounds,
           "precisions": list(targets)}, files, [bench_json],
          lambda: _bench(opts, list(targets.values()), bench_json),
          _cmd("eca-deploy bench --compare", *files, "--batch", ",".join(map(str, opts.batches)),
               "--duration", f"{opts.bench_seconds}s", "--rounds", opts.bench_rounds,
               "--json", bench_json))  # fmt: skip
    bench = json.loads(bench_json.read_text())
    results: dict[str, Any] = {}
    for (precision, (target_file, _)), entry in zip(targets.items(), bench["models"], strict=True):
        results[precision] = {
            "artifact": str(target_file.relative_to(out)),
            "check": json.loads((out / f"check.{precision}.json").read_text()),
            "bench": {"models": [entry]},
        }
    backend = "onnxruntime-cpu" if trt_missing else "tensorrt"
    summary = {
        "model": opts.model,
        "precisions": list(opts.precisions),
        "backend": backend,
        "backend_label": "ONNX Runtime (CPU)" if trt_missing else "TensorRT",
        "engine_note": trt_missing,
        "weights": str(opts.weights) if opts.weights else "random(seed=0)",
        "random_weights": opts.weights is None,
        "bench": {k: bench[k] for k in ("config", "noise")},
        "environment": environment.collect(),
        "results": results,
    }
    from eca_deploy.deploy.report import write_report

    reports = write_report(summary, out)
    write_manifest(opts, out, stages, commands, reports, summary["environment"])
    return DeployResult(summary, stages)


def _export(opts: DeployOptions, output: Path) -> dict[str, Any]:
    from eca_deploy.pipeline.export import run_export

    result = run_export(model_name=opts.model, weights=opts.weights, output=output, opset=opts.opset,
                        img_size=opts.img_size, images=opts.images)  # fmt: skip
    return {"verification": result.verification}


def _fuse(source: Path, output: Path) -> dict[str, Any]:
    from eca_deploy.pipeline.fuse import run_fuse

    result = run_fuse(source, output, write_unchanged=True)
    return {"fused": result.report.count, "max_abs_diff": result.max_abs_diff}


def _check(opts: DeployOptions, target: Path, kind: str, output: Path) -> dict[str, Any]:
    from eca_deploy.pipeline.check import open_target, run_check

    tgt = open_target(target if kind == "onnx" else None, target if kind == "engine" else None)
    result = run_check(tgt, model_name=opts.model, weights=opts.weights, images=opts.images)
    atomic_write_text(output, json.dumps(result.as_dict(), indent=2) + "\n")
    return {"passed": result.passed}


def _bench(opts: DeployOptions, targets: list[tuple[Path, str]], output: Path) -> dict[str, Any]:
    from eca_deploy.pipeline.bench import BenchConfig
    from eca_deploy.pipeline.bench_report import run_bench

    config = BenchConfig(batches=opts.batches, warmup_s=min(1.0, opts.bench_seconds), duration_s=opts.bench_seconds,
                         rounds=opts.bench_rounds)  # fmt: skip
    report = run_bench([t for t, _ in targets], config, kinds=[k for _, k in targets])
    atomic_write_text(output, json.dumps(report, indent=2) + "\n")
    return {"warnings": report["noise"]["warnings"]}


def _precision_stage(precision: str, opts: DeployOptions, fused: Path, stage: Callable[..., StageOutcome]) -> Path:
    """The ONNX model of `precision`: the fused FP32 model, its FP16 conversion or its Q/DQ quantization.

    Conversion runs without its own acceptance test: the check stage judges every precision alike.
    """
    if precision == "fp32":
        return fused
    output = opts.out / f"model.{precision}.onnx"
    if precision == "fp16":
        stage("convert-fp16", "converting to FP16 (float32 I/O)", {}, [fused], [output],
              lambda: _convert(fused, output),
              _cmd("eca-deploy convert --fp16 --onnx", fused, "--output", output))  # fmt: skip
        return output
    from eca_deploy.data.images import list_images

    calib = list_images(opts.calib_images)  # type: ignore[arg-type]  # the quantizer samples across all of them
    used = min(len(calib), opts.calib_count)
    stage("quantize-int8", f"calibrating INT8 on {used} images", {"count": opts.calib_count}, [fused, *calib],
          [output], lambda: _quantize(opts, fused, output),
          _cmd("eca-deploy quantize --onnx", fused, "--calib-images", opts.calib_images, "--calib-count",
               opts.calib_count, "--output", output))  # fmt: skip
    return output


def _convert(source: Path, output: Path) -> dict[str, Any]:
    from eca_deploy.pipeline.convert import run_convert

    return {"fp16": run_convert(source, output, verify=False).as_dict()}


def _quantize(opts: DeployOptions, source: Path, output: Path) -> dict[str, Any]:
    from eca_deploy.pipeline.quantize import run_quantize
    from eca_deploy.precision.quantize import QuantizeOptions

    options = QuantizeOptions(count=opts.calib_count)
    return {"int8": run_quantize(source, opts.calib_images, output, options, verify=False).as_dict()}  # type: ignore[arg-type]


def _build_stage(precision: str, opts: DeployOptions, model_file: Path, stage: Callable[..., StageOutcome]) -> Path:
    """A TensorRT engine of `model_file` (already in its precision) and its sidecar, with the plugin."""
    engine = opts.out / f"model.{precision}.plan"
    sidecar = engine.with_name(engine.name + ".json")
    batches = f"{min(opts.batches)}:{sorted(opts.batches)[len(opts.batches) // 2]}:{max(opts.batches)}"
    stage(f"build-{precision}", f"building the {precision} TensorRT engine (profile {batches})", {"batch": batches},
          [model_file], [engine, sidecar], lambda: _build(model_file, engine, batches),
          _cmd("eca-deploy build --onnx", model_file, "--batch", batches, "--output", engine))  # fmt: skip
    return engine


def _build(source: Path, engine: Path, batches: str) -> dict[str, Any]:
    from eca_deploy.engine.build import Profile
    from eca_deploy.pipeline.build import BuildRequest, run_build

    result = run_build(BuildRequest(onnx_path=source, output=engine, profile=Profile.parse(batches)))
    return {"sidecar": result.as_dict()}


def write_manifest(opts: DeployOptions, out: Path, stages: list[StageOutcome], commands: dict[str, str],
                   reports: list[Path], env: dict[str, Any]) -> None:  # fmt: skip
    artifacts = sorted({p for s in stages for p in s.outputs} | set(reports))
    manifest = {
        "inputs": {
            "model": opts.model,
            "weights": {"path": str(opts.weights), "sha256": sha256_file(opts.weights)} if opts.weights else None,
            "precisions": list(opts.precisions),
            "img_size": opts.img_size,
            "opset": opts.opset,
            "batches": list(opts.batches),
            "images": str(opts.images) if opts.images else None,
            "calib_images": str(opts.calib_images) if opts.calib_images else None,
        },
        "artifacts": {str(p.relative_to(out)): sha256_file(p) for p in artifacts},
        "stages": [
            {"name": s.name, "skipped": s.skipped, "seconds": round(s.seconds, 3), "command": commands.get(s.name)}
            for s in stages
        ],
        "versions": env["versions"],
        "environment": {k: env[k] for k in ("host", "os", "machine", "python", "cpu", "cpu_count", "gpu", "jetson")},
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
