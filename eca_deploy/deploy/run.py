"""Run export -> fuse -> FP16 / INT8 -> engine build -> check -> bench into one folder, stage by stage.

No stage is implemented twice: each stage is a spec (deploy.stages) whose fields make both the library call
its own command makes and the command line the manifest records.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eca_deploy import environment
from eca_deploy.backends.handle import RUNTIMES
from eca_deploy.cli.options import (
    check_at_least,
    check_file,
    check_image_folder,
    check_onnx_file,
    check_out_folder,
)
from eca_deploy.data.images import Preprocessing, list_images
from eca_deploy.deploy.cache import StageCache, StageOutcome
from eca_deploy.deploy.report import write_report
from eca_deploy.deploy.stages import (
    BenchSpec,
    BuildSpec,
    CheckSpec,
    ConvertSpec,
    ExportSpec,
    FuseSpec,
    QuantizeSpec,
    StageSpec,
)
from eca_deploy.deploy.summary import (
    NOTHING_FUSED,
    RUNTIME_LABELS,
    BenchSetup,
    DeploySummary,
    PrecisionBench,
    PrecisionResult,
)
from eca_deploy.environment import gpu_info
from eca_deploy.errors import EcaDeployError, SettingError
from eca_deploy.exporters.metadata import (
    describe_foreign,
    onnx_interface,
    random_weights_notice,
    read_metadata,
    write_metadata,
)
from eca_deploy.fileio import atomic_write_text, claim_work_dir, replacing, sha256_file
from eca_deploy.models import sources
from eca_deploy.onnx_io import load_onnx, save_onnx
from eca_deploy.pipeline.bench import DEFAULT_ROUNDS
from eca_deploy.pipeline.export import check_export_memory
from eca_deploy.pipeline.records import BenchRecord, CheckRecord, EnvironmentRecord
from eca_deploy.plugin.openvino_build import find_openvino_extension

PRECISIONS = ("fp32", "fp16", "int8")
CPU_RUNTIME_CHOICES = ("auto", *RUNTIMES)
BENCH_JSON = "bench.json"  # every precision and CPU runtime, timed together (docs/deploy.md, docs/openvino.md)
DEFAULT_BENCH_ROUNDS = DEFAULT_ROUNDS


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
    img_size: tuple[int, int] | None = None  # H, W (--img-size); None: the model's own input size
    opset: int = 17
    bench_seconds: float = 3.0
    bench_rounds: int = DEFAULT_BENCH_ROUNDS
    force: bool = False
    runtime: str = "auto"  # CPU runtimes without TensorRT: auto (ONNX Runtime, and OpenVINO when usable) or one
    pretrained: bool = False
    onnx: Path | None = None  # start from this ONNX instead of exporting `model`
    preprocessing: Preprocessing | None = None  # for `onnx` without eca-deploy metadata (--mean/--std/--img-size)
    trust_checkpoint: bool = False  # --trust-checkpoint: unpickle an ultralytics checkpoint given as --model

    def validate(self) -> None:
        """Every option, before any stage runs and before --out is created."""
        check_out_folder(self.out, "--out")
        if self.onnx is not None:
            check_onnx_file(self.onnx, "--onnx")
            if self.weights is not None or self.pretrained:
                raise SettingError("{onnx} starts from a finished model: drop {weights}/{pretrained}")
        else:
            sources.validate(self.model, self.trust_checkpoint)
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown or not self.precisions:
            raise EcaDeployError(
                f"unknown precision {', '.join(unknown) or '(none)'}: choose from {', '.join(PRECISIONS)}"
            )
        if "int8" in self.precisions and self.calib_images is None:
            raise SettingError("int8 needs calibration images: pass {calib_images} DIR (a few hundred real photos)")
        check_file(self.weights, "--weights")
        check_image_folder(self.calib_images if "int8" in self.precisions else None, "--calib-images")
        check_image_folder(self.images, "--images")
        check_at_least(self.calib_count, "--calib-count")
        if not self.bench_seconds > 0:
            raise SettingError(f"{{duration}} must be positive, got {self.bench_seconds:g} s")
        if self.runtime not in CPU_RUNTIME_CHOICES:
            raise SettingError(f"{{runtime}} must be one of {', '.join(CPU_RUNTIME_CHOICES)}, got {self.runtime!r}")
        if any(b < 1 for b in self.batches):
            raise SettingError(f"{{batches}} takes positive batch sizes, got {list(self.batches)}")
        if self.bench_rounds < 1:
            raise SettingError(f"{{rounds}} must be at least 1, got {self.bench_rounds}")
        if self.onnx is None:  # the export stage's activations at --img-size fit in memory (zoo and timm models)
            check_export_memory(self.model, self.img_size, None, random=self.weights is None and not self.pretrained)


@dataclass(frozen=True)
class DeployResult:
    """What deploy measured (the report's every figure) and what each stage did."""

    summary: DeploySummary
    stages: tuple[StageOutcome, ...] = ()

    @property
    def passed(self) -> bool:
        """Every precision passed on the primary runtime (DeploySummary.passed): the other CPU runtimes' verdicts
        are in the report and said aloud, but do not decide it."""
        return self.summary.passed


def tensorrt_status() -> str | None:
    """None when engines can be built here, else the reason why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed"
    if gpu_info() is None:
        return "no NVIDIA GPU found"
    return None


def cpu_runtimes(choice: str, note: Callable[[str], None]) -> list[str]:
    """The runtimes that check and bench the ONNX models when no engine is built; the first is the primary one."""
    if choice != "auto":
        return [choice]
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        note("OpenVINO is not installed (pip install 'eca-deploy[openvino]'): ONNX Runtime figures only")
        return ["onnxruntime"]
    if find_openvino_extension(required=False) is None:
        note(
            "the OpenVINO ECA extension is not built (eca-deploy plugin build --target openvino): "
            "ONNX Runtime figures only"
        )
        return ["onnxruntime"]
    return ["onnxruntime", "openvino"]


def prepare_out(out: Path, inputs: Sequence[Path | None] = ()) -> None:
    """Create --out, or reuse it when it is empty or a deploy folder; never a folder of the user's files."""
    claim_work_dir(out, "--out", inputs)


def run_deploy(
    opts: DeployOptions,
    on_stage: Callable[[str, str], Any] | None = None,
    on_done: Callable[[StageOutcome], None] | None = None,
    note: Callable[[str], None] = lambda _m: None,
) -> DeployResult:
    """Run every stage for `opts`; `on_stage(name, what)` gives a context manager shown while it works."""
    import contextlib

    opts.validate()
    prepare_out(opts.out, [opts.onnx, opts.weights])
    out, cache = opts.out, StageCache(opts.out, opts.force)
    stages: list[StageOutcome] = []
    commands: dict[str, str] = {}
    trt_missing = tensorrt_status()
    runtimes = cpu_runtimes(opts.runtime, note) if trt_missing else []
    if trt_missing:
        names = " and ".join(RUNTIME_LABELS[r] for r in runtimes)
        note(f"{trt_missing}: building no engines; every figure below is from {names} on the CPU")
    random_weights = opts.onnx is None and sources.has_random_weights(opts.model, opts.weights, opts.pretrained)

    def stage(
        name: str,
        what: str,
        spec: StageSpec | None,
        inputs: list[Path],
        outputs: list[Path],
        work: Callable[[], dict[str, Any] | None] | None = None,
        options: dict[str, Any] | None = None,
        command: str | None = None,
    ) -> StageOutcome:
        """Run a stage: its spec's call (or `work`), recorded under its spec's key and command line."""
        commands[name] = spec.command() if spec is not None else command  # type: ignore[assignment]
        run = spec.run if spec is not None else work
        key = spec.key() if spec is not None else options
        with on_stage(name, what) if on_stage else contextlib.nullcontext(), replacing():  # --out is deploy's own
            outcome = cache.run(name, key or {}, inputs, outputs, run)  # type: ignore[arg-type]
        stages.append(outcome)
        if on_done:
            on_done(outcome)
        return outcome

    weights_in = [opts.weights] if opts.weights else []
    if opts.onnx is None and sources.kind(opts.model) in ("file", "ultralytics"):  # the model file holds weights
        weights_in.append(Path(opts.model.rpartition(":")[0] if sources.kind(opts.model) == "file" else opts.model))
    onnx_path, fused = out / "model.onnx", out / "model.fused.onnx"
    if opts.onnx is not None:
        prep = opts.preprocessing
        stage(
            "import",
            f"copying {opts.onnx.name} (with its preprocessing in the metadata)",
            None,
            [opts.onnx],
            [onnx_path],
            lambda: _import_onnx(opts.onnx, prep, onnx_path, note),  # type: ignore[arg-type]
            {"preprocessing": repr(prep)},
            f"copy of {opts.onnx} with eca-deploy metadata",
        )
    else:
        export = ExportSpec(
            model=opts.model,
            output=onnx_path,
            weights=opts.weights,
            pretrained=opts.pretrained,
            img_size=opts.img_size,
            opset=opts.opset,
            images=opts.images,
            trust_checkpoint=opts.trust_checkpoint,
        )
        stage("export", f"exporting {opts.model} and verifying it against PyTorch", export, weights_in, [onnx_path])
    if random_weights:  # worded for what the exported model predicts (classes, boxes)
        note(f"{opts.model} has {random_weights_notice(model_interface(onnx_path).as_dict())}")
    fusion = stage("fuse", "fusing ECA blocks into ECA nodes", FuseSpec(onnx_path, fused), [onnx_path], [fused])
    fused_blocks = fusion.detail.get("fused")
    if fused_blocks == 0:
        note(NOTHING_FUSED)

    # (precision, file, kind, runtime) of everything benchmarked; engines run on TensorRT (runtime None).
    benched: list[tuple[str, Path, str, str | None]] = []
    checks_by_precision: dict[str, dict[str, CheckRecord]] = {}
    for precision in opts.precisions:
        model_file = _precision_stage(precision, opts, fused, stage)
        target_file, kind = model_file, "onnx"
        if not trt_missing:
            target_file, kind = _build_stage(precision, opts, model_file, stage), "engine"
        checks: dict[str, CheckRecord] = {}
        for i, runtime in enumerate(runtimes if kind == "onnx" else ["tensorrt"]):
            cjson = out / (f"check.{precision}.json" if i == 0 else f"check.{precision}.{runtime}.json")
            label = RUNTIME_LABELS.get(runtime, "TensorRT")
            check = CheckSpec(target_file, kind, cjson, runtime=runtime, images=opts.images,
                              **({"reference_onnx": onnx_path} if opts.onnx is not None
                                 else {"model": opts.model, "weights": opts.weights}))  # fmt: skip
            stage(
                f"check-{precision}" + (f"-{runtime}" if i else ""),
                f"checking {precision} against PyTorch on real photos ({label})",
                check,
                [target_file, *weights_in],
                [cjson],
            )
            checks[runtime] = CheckRecord.from_dict(json.loads(cjson.read_text()))
            benched.append((precision, target_file, kind, None if kind == "engine" else runtime))
        checks_by_precision[precision] = checks
        for runtime, report in list(checks.items())[1:]:
            if not report.passed:
                note(f"{precision} on {RUNTIME_LABELS[runtime]} is outside tolerance: {'; '.join(report.failures)}")
    # One benchmark of every precision (and CPU runtime), in interleaved rounds: drift and load hit all alike.
    bench_json = out / BENCH_JSON
    files = list(dict.fromkeys(f for _, f, _, _ in benched))
    on = f" on {' and '.join(RUNTIME_LABELS[r] for r in runtimes)}" if len(runtimes) > 1 else ""
    # OpenVINO times the unfused model and both conversions of the fused FP32 model, and uses the fastest
    twin = {fused: onnx_path} if "openvino" in runtimes and fused_blocks else {}
    bench_spec = BenchSpec(
        tuple(files),
        bench_json,
        runtimes=tuple(runtimes),
        unfused=twin,
        batches=opts.batches,
        warmup_s=bench_warmup(opts),
        duration_s=opts.bench_seconds,
        rounds=opts.bench_rounds,
        img_size=model_interface(onnx_path).size,
    )
    stage(
        "bench",
        f"benchmarking {', '.join(opts.precisions)}{on} at batch {','.join(map(str, opts.batches))}, "
        f"{opts.bench_rounds} interleaved rounds"
        + ("; OpenVINO times unfused and both ECA lowerings and uses the fastest" if "openvino" in runtimes else ""),
        bench_spec,
        files + ([onnx_path] if twin else []),
        [bench_json],
    )
    bench = BenchRecord.from_dict(json.loads(bench_json.read_text()))
    results: dict[str, PrecisionResult] = {}
    for precision in opts.precisions:
        entries = tuple(e for (p, *_), e in zip(benched, bench.models, strict=True) if p == precision)
        checks = checks_by_precision[precision]
        results[precision] = PrecisionResult(
            artifact=str(benched[[p for p, *_ in benched].index(precision)][1].relative_to(out)),
            check=next(iter(checks.values())),
            bench=PrecisionBench(models=entries),
            checks_by_runtime=checks,
        )
    backend = f"{runtimes[0]}-cpu" if trt_missing else "tensorrt"
    interface = model_interface(onnx_path)
    summary = DeploySummary(
        model=f"onnx:{opts.onnx.name}" if opts.onnx is not None else opts.model,
        input_size=tuple(interface.size),
        preprocessing=interface.preprocessing.describe(),
        interface=interface.as_dict(),
        precisions=tuple(opts.precisions),
        backend=backend,
        backend_label=f"{' and '.join(RUNTIME_LABELS[r] for r in runtimes)} (CPU)" if trt_missing else "TensorRT",
        runtimes=tuple(runtimes),
        engine_note=trt_missing,
        weights=str(opts.weights)
        if opts.weights
        else ("pretrained" if opts.pretrained else "random(seed=0)" if random_weights else "the model's own"),
        random_weights=random_weights,
        bench=BenchSetup(config=bench.config, noise=bench.noise),
        fused_blocks=fused_blocks,
        images=str(opts.images) if opts.images else None,
        environment=EnvironmentRecord.from_dict(environment.collect()),
        results=results,
    )
    reports = write_report(summary, out)
    write_manifest(opts, out, stages, commands, reports, summary.environment)
    return DeployResult(summary, tuple(stages))


def model_interface(onnx_path: Path) -> Any:
    """The interface of the deployed model (model.onnx, with its metadata): what every later stage runs at."""
    return onnx_interface(load_onnx(onnx_path), label=str(onnx_path))


def _import_onnx(source: Path, prep: Preprocessing | None, output: Path, note: Callable[[str], None]) -> dict[str, Any]:
    """Copy an ONNX made elsewhere, giving it eca-deploy metadata (preprocessing) if it has none."""
    model = load_onnx(source)
    meta = read_metadata(model)
    if meta is None or prep is not None:
        if prep is None:  # ImageNet's, said aloud (and the size, if guessed) by the interface
            prep = onnx_interface(model, label=source.name, warn=note).preprocessing
        meta = describe_foreign(model, source, prep)
        write_metadata(model, meta)
    save_onnx(model, output)
    return {"model": meta.model, "input_size": meta.preprocessing.size}


def bench_warmup(opts: DeployOptions) -> float:
    """Warm-up seconds per batch size: the measuring time, at most one second."""
    return min(1.0, opts.bench_seconds)


def _precision_stage(precision: str, opts: DeployOptions, fused: Path, stage: Callable[..., StageOutcome]) -> Path:
    """The ONNX model of `precision`: the fused FP32 model, its FP16 conversion or its Q/DQ quantization.

    Conversion runs without its own acceptance test: the check stage judges every precision alike.
    """
    if precision == "fp32":
        return fused
    output = opts.out / f"model.{precision}.onnx"
    if precision == "fp16":
        stage("convert-fp16", "converting to FP16 (float32 I/O)", ConvertSpec(fused, output), [fused], [output])
        return output
    calib = list_images(opts.calib_images)  # type: ignore[arg-type]  # the quantizer samples across all of them
    used = min(len(calib), opts.calib_count)
    spec = QuantizeSpec(fused, opts.calib_images, output, count=opts.calib_count)  # type: ignore[arg-type]
    stage("quantize-int8", f"calibrating INT8 on {used} images", spec, [fused, *calib], [output])
    return output


def _build_stage(precision: str, opts: DeployOptions, model_file: Path, stage: Callable[..., StageOutcome]) -> Path:
    """A TensorRT engine of `model_file` (already in its precision) and its sidecar, with the plugin."""
    engine = opts.out / f"model.{precision}.plan"
    sidecar = engine.with_name(engine.name + ".json")
    batches = f"{min(opts.batches)}:{sorted(opts.batches)[len(opts.batches) // 2]}:{max(opts.batches)}"
    stage(
        f"build-{precision}",
        f"building the {precision} TensorRT engine (profile {batches})",
        BuildSpec(model_file, engine, batches),
        [model_file],
        [engine, sidecar],
    )
    return engine


def write_manifest(
    opts: DeployOptions,
    out: Path,
    stages: list[StageOutcome],
    commands: dict[str, str],
    reports: list[Path],
    env: EnvironmentRecord,
) -> None:
    artifacts = sorted({p for s in stages for p in s.outputs} | set(reports))
    manifest = {
        "inputs": {
            "model": opts.model,
            "onnx": {"path": str(opts.onnx), "sha256": sha256_file(opts.onnx)} if opts.onnx else None,
            "weights": {"path": str(opts.weights), "sha256": sha256_file(opts.weights)} if opts.weights else None,
            "precisions": list(opts.precisions),
            "img_size": list(opts.img_size) if opts.img_size else None,
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
        "versions": env.versions,
        "environment": {
            "host": env.host,
            "os": env.os,
            "machine": env.machine,
            "python": env.python,
            "cpu": env.cpu,
            "cpu_count": env.cpu_count,
            "gpu": env.gpu,
            "jetson": env.jetson,
        },
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
