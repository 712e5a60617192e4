"""`check`: run a backend and the PyTorch reference on the same real images and judge the agreement."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from eca_deploy.backends.base import Runner
from eca_deploy.backends.handle import ModelSpec, OpenedModel, open_model
from eca_deploy.data.images import list_images, load_images
from eca_deploy.detection.judge import DETECTION_BOUNDS, DetectionCheck, judge_detections
from eca_deploy.errors import EcaDeployError, SettingError
from eca_deploy.exporters.metadata import ModelMetadata, has_random_weights
from eca_deploy.fileio import sha256_file
from eca_deploy.interface import ModelInterface
from eca_deploy.memory import check_onnx_memory
from eca_deploy.metrics import (
    Agreement,
    OutputCheck,
    Tolerance,
    compare_outputs,
    named_failures,
    output_notes,
    per_image_all,
)

# models, torch_runner, architecture and per_layer import torch: imported in the functions that compare against
# PyTorch, so checking an ONNX or an engine needs no torch.

# Default tolerances by precision, for every output kind: FP32 tight; FP16 looser; INT8 judged by cosine and
# top-1 agreement. Outputs of kind "logits" are held to all three bounds; other outputs to cosine and, per
# channel group against the group's own scale (metrics.py), to max abs and (INT8) mean abs error: a score
# error of 0.29 on 0..1 scores fails every precision. A detector is judged by its detections too
# (detection.judge.DETECTION_BOUNDS). The bounds and what they were chosen from: docs/check_bench.md.
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs=1e-3, cosine_min=0.9999, top1_agreement=1.0),
    "fp16": Tolerance(max_abs=2e-2, cosine_min=0.999, top1_agreement=0.9),
    "int8": Tolerance(max_abs=math.inf, cosine_min=0.98, top1_agreement=0.8, tensor_max_abs=0.2,
                      tensor_mean_abs=0.05),
}  # fmt: skip


@dataclass
class CheckResult:
    target: str
    backend: str
    model: str
    precision: str
    tolerance: Tolerance
    checks: dict[str, OutputCheck]  # every output, by name
    failures: list[str]
    image_names: list[str]
    skipped_images: list[str]
    reference_scale: float
    per_layer: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    reference: str = ""  # "PyTorch NAME" or "ONNX FILE"
    weights: str = ""  # where the checked model's weights came from: a checkpoint, or random(seed=0)
    random_weights: bool = False
    per_image: dict[str, list[float]] | None = None  # 1 - cosine and max abs error of each image (worst output)
    interface: ModelInterface | None = None
    detection: DetectionCheck | None = None  # a detector's detection agreement (None: not a known detector)
    runtime_settings: dict[str, Any] = field(default_factory=dict)  # the runner's settings(): how ECA nodes ran

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def agreement(self) -> Agreement:
        """The first failing output's agreement, else the logits' (a classifier's), else the first output's."""
        checks = list(self.checks.values())
        chosen = next((c for c in checks if not c.passed), None) or next(
            (c for c in checks if c.kind == "logits"), checks[0]
        )
        return chosen.agreement

    @property
    def size_text(self) -> str:
        return self.interface.size_text if self.interface is not None else "?"

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "backend": self.backend,
            "model": self.model,
            "precision": self.precision,
            "passed": self.passed,
            "failures": self.failures,
            "tolerance": {
                "max_abs": None if math.isinf(self.tolerance.max_abs) else self.tolerance.max_abs,
                "cosine_min": self.tolerance.cosine_min,
                "top1_agreement": self.tolerance.top1_agreement,
            },
            "outputs": {name: c.as_dict(self.image_names) for name, c in self.checks.items()},
            "failed_outputs": failed_outputs(self.checks, self.detection),
            "detection": self.detection.as_dict(self.image_names) if self.detection is not None else None,
            "input_size": list(self.interface.size) if self.interface is not None else None,
            "preprocessing": self.interface.preprocessing.describe() if self.interface is not None else None,
            "interface": self.interface.as_dict() if self.interface is not None else None,
            "reference": self.reference,
            "reference_scale": self.reference_scale,
            "images": self.image_names,
            "skipped_images": self.skipped_images,
            "per_layer": self.per_layer,
            "notes": self.notes,
            "weights": self.weights,
            "random_weights": self.random_weights,
            "per_image": self.per_image,
            "runtime_settings": self.runtime_settings,
        }


def failed_outputs(checks: dict[str, OutputCheck], detection: DetectionCheck | None) -> list[str]:
    """The outputs that fail: a tensor check, or the detection head's outputs when its detections disagree."""
    failed = [name for name, c in checks.items() if not c.passed]
    if detection is not None and not detection.passed:
        failed += [o for o in detection.outputs if o not in failed]
    return failed


def detections_decide(checks: dict[str, OutputCheck], detection: DetectionCheck | None) -> dict[str, OutputCheck]:
    """A detector's head outputs, once its detections were measured, are judged by them: their tensor bounds
    (one background anchor of thousands can exceed a max-abs bound) are kept as advisory lines."""
    if detection is None or not detection.measured:
        return checks
    return {
        name: replace(c, failures=[], advisory=list(c.failures), decided_by="detections")
        if name in detection.outputs
        else c
        for name, c in checks.items()
    }


def judge_detector(
    reference: dict[str, Any],
    output: dict[str, Any],
    interface: ModelInterface,
    precision: str,
    decoder: Any = None,
    warn: Any = lambda _m: None,
) -> DetectionCheck | None:
    """Detection agreement of a detector (interface.detection, or a user's `Decoder`), else None.

    When the reference finds nothing on the images, the check says so (not measured) and the tensor checks decide.
    """
    if interface.detection is None and decoder is None:
        return None
    bounds = DETECTION_BOUNDS.get(precision, DETECTION_BOUNDS["fp32"])
    found = judge_detections(reference, output, interface.size, bounds, interface.detection, decoder)
    if found.not_measured:
        warn(f"detection agreement was not measured: {found.not_measured}")
    return found


def tolerance_for(precision: str, max_abs: float | None, min_cosine: float | None, min_top1: float | None) -> Tolerance:
    base = DEFAULT_TOLERANCES.get(precision, DEFAULT_TOLERANCES["fp32"])
    return replace(
        base,
        max_abs=base.max_abs if max_abs is None else max_abs,
        cosine_min=base.cosine_min if min_cosine is None else min_cosine,
        top1_agreement=base.top1_agreement if min_top1 is None else min_top1,
    )


def reference_model(
    model_name: str,
    weights: Path | None,
    metadata: ModelMetadata | None,
    img_size: int,
    preprocessing: Any = None,
    trust_checkpoint: bool = False,
) -> Any:
    """The PyTorch model the target came from, built as export built it: the checkpoint, timm's pretrained
    weights, the factory's module, the ultralytics checkpoint or YAML, or export's seeded model."""
    from eca_deploy.models import sources
    from eca_deploy.models.seeded import RANDOM_WEIGHTS

    kind = sources.kind(model_name)
    classes = (metadata.num_classes or None) if metadata else None  # 0: no logits output (a detector)
    pretrained = False
    own = kind == "ultralytics" or (kind == "file" and weights is None)  # the model file holds its weights
    if weights is None and metadata is not None and metadata.weights and metadata.weights != RANDOM_WEIGHTS:
        if metadata.weights.startswith("timm pretrained"):
            pretrained = True
        elif not own:
            raise EcaDeployError(
                f"the model was exported from {metadata.weights.split(' ')[0]}: pass that checkpoint with --weights"
            )
    block_k = list(metadata.k_sizes) if metadata and kind == "zoo" else None
    loaded = sources.load(
        model_name,
        weights=weights,
        pretrained=pretrained,
        num_classes=None if kind == "file" else classes,
        recorded_classes=classes,
        img_size=img_size,
        block_k=block_k,
        preprocessing=preprocessing,
        trust_checkpoint=trust_checkpoint,
    )
    return loaded.module


def find_checkpoint(recorded: str | None, beside: Path) -> Path | None:
    """The checkpoint the metadata's `weights` ("<file name> sha256:<hex>") names, looked for beside the model
    file and in the current folder; only a file whose sha256 matches the recorded one, else None."""
    name, sep, digest = (recorded or "").rpartition(" sha256:")
    if not sep or not name or Path(name).name != name:
        return None
    for folder in dict.fromkeys((beside, Path("."))):
        candidate = folder / name
        if candidate.is_file() and sha256_file(candidate) == digest:
            return candidate
    return None


def unfused_sibling(path: Path) -> Path | None:
    """The FP32 ONNX a derived file was made from, by eca-deploy's naming (X.fused.onnx, X.fp16.onnx, ...)."""
    stem = path.name.removesuffix(".onnx")
    parts = stem.split(".")
    while len(parts) > 1 and parts[-1] in DERIVED_SUFFIXES:
        parts.pop()
    if ".".join(parts) == stem:
        return None  # not a derived file: nothing it was made from
    candidates = [".".join(parts) + ".onnx"]
    if ".".join(parts) + ".fused" != stem:
        candidates.append(".".join(parts) + ".fused.onnx")
    for name in candidates:
        candidate = path.with_name(name)
        if candidate.is_file() and candidate.resolve() != path.resolve():
            return candidate
    return None


DERIVED_SUFFIXES = ("fused", "fp16", "int8")


@dataclass
class Reference:
    """What the target is compared with: a PyTorch model, or an FP32 ONNX on ONNX Runtime."""

    runner: Runner
    label: str  # shown as "vs <label>"
    torch_model: Any = None
    onnx_path: Path | None = None
    metadata: ModelMetadata | None = None  # an ONNX reference's own


def _onnx_reference(path: Path, warn: Any) -> Reference:
    opened = open_model(ModelSpec(path, kind="onnx"))
    if opened.precision != "fp32":
        warn(f"--reference-onnx {path} is {opened.precision}, not FP32: the comparison inherits its error")
    return Reference(opened.runner, f"ONNX {path.name}", onnx_path=path, metadata=opened.metadata)


def _torch_reference(
    target: OpenedModel,
    name: str,
    weights: Path | None,
    prep: Any,
    warn: Any,
    interface: ModelInterface,
    trust_checkpoint: bool = False,
) -> Reference:
    """The PyTorch model `name`, refused in one line when the target's graph is another architecture."""
    from eca_deploy.backends.torch_runner import TorchRunner
    from eca_deploy.pipeline.architecture import mismatch

    meta = target.metadata
    if weights is None and (meta is None or not meta.weights or meta.weights.startswith("random")):
        warn("no --weights: the reference is the seeded random model that `export` uses without a checkpoint")
    torch_model = reference_model(
        name, weights, meta if meta is None or meta.model == name else None, prep.size, prep, trust_checkpoint
    )
    differs = mismatch(target.onnx, torch_model) if target.onnx is not None else None
    if differs:
        origin = f" (its metadata says {meta.model})" if meta is not None and meta.model != name else ""
        raise EcaDeployError(
            f"{target.label} is not {name}{origin}: {differs}; pass the --model it was exported from, "
            "or --reference-onnx FILE"
        )
    runner = TorchRunner(torch_model, output_names=interface.output_names, label=f"PyTorch {name}")
    return Reference(runner, f"PyTorch {name}", torch_model=torch_model)


def _model_preprocessing(name: str | None) -> Any:
    """The preprocessing of the model `name` (zoo, timm, file) at its own size, or None."""
    from eca_deploy.models import sources

    return sources.default_preprocessing(name) if name is not None else None


def run_check(
    target: OpenedModel,
    *,
    model_name: str | None,
    weights: Path | None = None,
    images: Path | None = None,
    batch: int = 8,
    tolerance: Tolerance | None = None,
    per_layer: bool = False,
    reference_onnx: Path | None = None,
    adjust: Any = None,
    warn: Any = lambda _m: None,
    interface: ModelInterface | None = None,
    detection: Any = None,
    decoder: Any = None,
    trust_checkpoint: bool = False,
) -> CheckResult:
    """Compare `target` with its reference on real photographs.

    The reference is `reference_onnx` when given (any FP32 ONNX, e.g. the unfused export), else the PyTorch
    model `model_name` or the target's metadata names; a file with no rebuildable model falls back to the
    unfused ONNX next to it (X.onnx for X.fused.onnx, X.int8.onnx, ...). The model's interface (input size
    and preprocessing, named outputs and their kinds) is resolved once, from the ONNX, its metadata,
    the spec's `img_size` (--img-size) and `adjust` (--mean/--std), unless given; every output is judged. A detector
    (its metadata's head layout, `detection` from --layout, or a user's `decoder` from --decoder) is judged
    by its detections too.
    """
    from eca_deploy.models import sources

    meta = target.metadata
    precision = target.precision or "fp32"  # an engine without a sidecar is judged as FP32
    name = model_name or (meta.model if meta else None)
    if reference_onnx is None and model_name is None and (name is None or not sources.rebuildable(name)):
        reference_onnx = unfused_sibling(Path(target.label))
        if reference_onnx is not None:
            warn(
                f"comparing with {reference_onnx} (found next to {Path(target.label).name}); "
                "pass --reference-onnx to choose another"
            )
    onnx_reference = _onnx_reference(reference_onnx, warn) if reference_onnx is not None else None
    if onnx_reference is None:
        if name is None:
            raise EcaDeployError(
                f"{target.label} carries no eca-deploy metadata: pass --reference-onnx FILE (the FP32 ONNX to compare "
                "with) or --model NAME"
            )
        sources.validate(name, trust_checkpoint)
    if meta is not None and model_name and meta.model != model_name:
        warn(f"{target.label} was exported from {meta.model}, checking against --model {model_name}")
    described = meta or (onnx_reference.metadata if onnx_reference else None)
    if interface is None:
        own = _model_preprocessing(name) if described is None and onnx_reference is None else None
        interface = target.interface(metadata=described, preprocessing=own, adjust=adjust, warn=warn)
    if detection is not None:
        interface = replace(interface, detection=detection)
    prep = interface.preprocessing
    fixed_batch = interface.input.batch
    if batch < 1:
        raise SettingError(f"{{batch}} must be a positive integer, got {batch}")
    paths = list_images(images) if images else None
    if target.onnx is not None:  # the target and its reference run at once; images are held as float32
        work = fixed_batch or batch
        what = f"checking {Path(target.label).name} at {prep.height}x{prep.width}, batch {work}"
        check_onnx_memory(target.onnx, prep.height, prep.width, work, len(paths or range(12)), what)
    loaded = load_images(paths, prep)
    if loaded.skipped:
        warn(f"skipped {len(loaded.skipped)} unreadable images: {', '.join(loaded.skipped[:5])}")
    if onnx_reference is not None:
        reference = onnx_reference
        name = name or reference_onnx.name  # type: ignore[union-attr]
        random_weights = has_random_weights(described)
    else:
        assert name is not None
        from eca_deploy.models import sources

        own_weights = sources.kind(name) == "ultralytics"  # the model file is the checkpoint: never --weights
        if weights is None and meta is not None and meta.model == name and not own_weights:
            weights = find_checkpoint(meta.weights, Path(target.label).parent)
            if weights is not None:
                warn(f"no --weights: using {weights}, the checkpoint the model was exported from (its sha256 matches)")
        reference = _torch_reference(target, name, weights, prep, warn, interface, trust_checkpoint)
        random_weights = weights is None and (meta is None or not meta.weights or has_random_weights(meta))
    step = fixed_batch or batch
    out = target.runner.run_all(loaded.array, step, fixed_batch=fixed_batch is not None)
    ref_fixed = reference.runner.inputs[0].shape[0] if reference.onnx_path else None
    ref_fixed = ref_fixed if isinstance(ref_fixed, int) else None
    ref = reference.runner.run_all(loaded.array, ref_fixed or batch, fixed_batch=ref_fixed is not None)
    if set(ref) != set(out):
        raise EcaDeployError(
            f"{target.label} has outputs {', '.join(out)}, {reference.label} has {', '.join(ref)}: "
            "check --model, --weights or --reference-onnx"
        )
    tol = tolerance or DEFAULT_TOLERANCES.get(precision, DEFAULT_TOLERANCES["fp32"])
    ordered = {n: ref[n] for n in interface.output_names}
    checks = compare_outputs(ordered, out, interface.kinds, tol, interface.detection)
    scale = max(c.reference_scale for c in checks.values())
    detected = judge_detector(ordered, out, interface, precision, decoder, warn)
    checks = detections_decide(checks, detected)
    result = CheckResult(
        target=target.label,
        backend=target.runner.name,
        model=name,
        precision=precision,
        tolerance=tol,
        checks=checks,
        failures=named_failures(checks) + (detected.named_failures() if detected is not None else []),
        image_names=loaded.names,
        skipped_images=loaded.skipped,
        reference_scale=scale,
        reference=reference.label,
        weights=str(weights) if weights is not None else (meta.weights if meta and meta.weights else "unknown"),
        random_weights=random_weights,
        per_image=per_image_all(ordered, out),
        interface=interface,
        notes=output_notes(checks),
        detection=detected,
        runtime_settings=target.runner.settings(),
    )
    if per_layer:
        from eca_deploy.pipeline.per_layer import compare_layers

        sample = loaded.array[: min(4, len(loaded.array))]
        result.per_layer = compare_layers(target, reference.torch_model, sample, reference.onnx_path)
    return result
