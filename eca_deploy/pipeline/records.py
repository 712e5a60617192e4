"""Results as read back from their JSON (check, bench, quantize, convert): frozen dataclasses whose fields are the
JSON's keys, in the JSON's order, so a misspelt field is an error where it is written, not a key missing at run
time.

The JSON written by each command is the format: `Record.from_dict(data).as_dict() == data` for what it writes, and
`from_dict(as_dict(x)) == x`. Lists become tuples; nested records are declared with `nested`; a field marked
`optional` is left out of the JSON when it is None (keys a writer adds only sometimes, e.g. bench's `tactic`).
Parts nobody reads field by field (environment, interface, per-layer tables) stay plain JSON values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

R = TypeVar("R", bound="Record")
JSON = Any  # a plain JSON value: dict, list, str, number, bool or None


def nested(record: type[Record], shape: str = "one", *, optional: bool = False) -> dict[str, Any]:
    """Field metadata: the field holds a record ("one"), a tuple of them ("list"), a dict of them by name ("map") or
    by batch size ("by_batch": int keys here, string keys in JSON); `optional`: see OPTIONAL."""
    return {"record": record, "shape": shape, "optional": optional}


OPTIONAL = {"optional": True}  # field metadata: the writer leaves the key out when there is nothing to say (None)
BY_BATCH = {"shape": "by_batch"}  # field metadata: plain values by batch size (see `nested`)


@dataclass(frozen=True, kw_only=True)
class Record:
    """as_dict / from_dict by field name (see the module docstring)."""

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        known = {f.name: f for f in dataclasses.fields(cls)}
        return cls(**{name: _read(known[name], value) for name, value in data.items() if name in known})

    def as_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.metadata.get("optional"):
                continue
            out[f.name] = _write(value)
        return out


def _read(f: dataclasses.Field, value: Any) -> Any:
    record, shape = f.metadata.get("record"), f.metadata.get("shape", "one")
    if value is None:
        return None
    convert = record.from_dict if record is not None else _tuple
    if shape == "list":
        return tuple(convert(v) for v in value)
    if shape == "map":
        return {k: convert(v) for k, v in value.items()}
    if shape == "by_batch":
        return {int(k): convert(v) for k, v in value.items()}
    return convert(value)


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _write(value: Any) -> Any:
    if isinstance(value, Record):
        return value.as_dict()
    if isinstance(value, tuple):
        return [_write(v) for v in value]
    if isinstance(value, dict):
        return {k: _write(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, kw_only=True)
class EnvironmentRecord(Record):
    """Where a result was measured (environment.collect)."""

    host: str = ""
    os: str = ""
    machine: str = ""
    python: str = ""
    cpu: str = ""
    cpu_count: int | None = None
    threads: int | None = None
    gpu: JSON = None  # {"name": ..., ...} of the NVIDIA GPU, None without one
    jetson: JSON = None
    versions: dict[str, str | None] = field(default_factory=dict)  # by package: eca_deploy, torch, onnxruntime, ...
    onnxruntime_providers: tuple[str, ...] | None = None
    cpu_bf16: bool | None = None

    @property
    def device(self) -> str:
        """The GPU's name, else the CPU's."""
        return (self.gpu or {}).get("name") or self.cpu


# --- check -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class OutputRecord(Record):
    """One output's agreement with the reference (metrics.OutputCheck.as_dict)."""

    images: int
    max_abs_error: float | None
    mean_abs_error: float | None = None
    max_rel_error: float | None = None
    cosine_min: float
    top1_agreement: float | None = None
    top5_agreement: float | None = None
    kl_divergence: float | None = None
    worst_images: tuple[Any, ...] = ()  # image names (indices where no names were known)
    groups: tuple[JSON, ...] = ()
    kind: str = ""
    reference_scale: float | None = None
    passed: bool = True
    failures: tuple[str, ...] = ()
    advisory: tuple[str, ...] = ()
    decided_by: str | None = None
    reference_constant: float | None = None
    note: str | None = None


@dataclass(frozen=True, kw_only=True)
class ToleranceRecord(Record):
    max_abs: float | None = None  # None: no bound (INT8)
    cosine_min: float | None = None
    top1_agreement: float | None = None


@dataclass(frozen=True, kw_only=True)
class DetectionAgreementRecord(Record):
    """detection.agreement.DetectionAgreement.as_dict (None where a figure has no value)."""

    images: int
    reference_detections: int
    candidate_detections: int
    recall: float | None = None
    precision: float | None = None
    f1: float | None = None
    mean_iou: float | None = None
    max_score_drift: float | None = None
    mean_score_drift: float | None = None
    score_bias: float | None = None
    box_bias: float | None = None
    map50_95: float | None = None
    map50: float | None = None
    worst_images: tuple[Any, ...] = ()
    score_threshold: float
    margin: float = 0.0


@dataclass(frozen=True, kw_only=True)
class DetectionRecord(Record):
    """A detector's detection verdict (detection.judge.DetectionCheck.as_dict)."""

    layout: str
    outputs: tuple[str, ...] = ()
    measured: bool = False
    not_measured: str | None = None  # why not
    agreement: DetectionAgreementRecord | None = field(default=None, metadata=nested(DetectionAgreementRecord))
    passed: bool = True
    failures: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class BlockError(Record):
    block: str
    tensor: str
    rel_error: float
    cosine: float
    jump: bool


@dataclass(frozen=True, kw_only=True)
class PerLayerRecord(Record):
    """`check --per-layer`: the error after every ECA block (pipeline.per_layer)."""

    against: str
    floor: float
    first_jump: str | None = None
    blocks: tuple[BlockError, ...] = field(default=(), metadata=nested(BlockError, "list"))


@dataclass(frozen=True, kw_only=True)
class CheckRecord(Record):
    """`check --json` and deploy's check.<precision>.json (pipeline.check.CheckResult.as_dict)."""

    target: str
    backend: str
    model: str
    precision: str
    passed: bool
    failures: tuple[str, ...] = ()
    tolerance: ToleranceRecord | None = field(default=None, metadata=nested(ToleranceRecord))
    outputs: dict[str, OutputRecord] = field(default_factory=dict, metadata=nested(OutputRecord, "map"))
    failed_outputs: tuple[str, ...] = ()
    detection: DetectionRecord | None = field(default=None, metadata=nested(DetectionRecord))
    input_size: tuple[int, int] | None = None
    preprocessing: str | None = None
    interface: JSON = None
    reference: str = ""
    reference_scale: float | None = None
    images: tuple[str, ...] = ()
    skipped_images: tuple[str, ...] = ()
    per_layer: PerLayerRecord | None = field(default=None, metadata=nested(PerLayerRecord))
    notes: tuple[str, ...] = ()
    weights: str = ""
    random_weights: bool = False
    per_image: JSON = None  # {"one_minus_cosine": [...], "max_abs_error": [...]}, worst output per image
    runtime_settings: dict[str, Any] = field(default_factory=dict)  # e.g. {"eca_implementation": "native nchwc"}

    def output_notes(self) -> list[str]:
        """What the check says aloud about its outputs (a constant reference output: agreement with it proves
        nothing), each once."""
        notes = [a.note for a in self.outputs.values() if a.note]
        return notes + [n for n in self.notes if n not in notes]


# --- bench -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TacticCandidate(Record):
    images_per_s: float
    rounds: tuple[float, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class TacticRecord(Record):
    """Which of OpenVINO's ECA lowerings a figure is (pipeline.bench_report.choose_fastest)."""

    chosen: str
    runner_up: str | None = None
    margin: float | None = None
    beyond_noise: bool = False
    tied: tuple[str, ...] = ()
    text: str = ""
    candidates: dict[str, TacticCandidate] = field(metadata=nested(TacticCandidate, "map"))


@dataclass(frozen=True, kw_only=True)
class Latency(Record):
    """Milliseconds per timed call, over every round (pipeline.bench.latency_stats)."""

    min: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    max: float


@dataclass(frozen=True, kw_only=True)
class Spread(Record):
    """Images/s of the slowest and the fastest round, and (max - min) / median."""

    min: float
    max: float
    relative: float


@dataclass(frozen=True, kw_only=True)
class BatchRecord(Record):
    """The figures of one model at one batch size (pipeline.bench.BatchResult.as_dict, with `tactic` and the ratio
    to the first entry where bench adds them)."""

    batch: int
    iterations: int
    total_s: float
    images_per_s: float
    inferences_per_s: float
    latency_ms: Latency = field(metadata=nested(Latency))
    split_ms: dict[str, float] | None = None
    stages_ms: dict[str, float] | None = None
    rounds: tuple[float, ...] = ()
    spread: Spread | None = field(default=None, metadata=nested(Spread))
    tactic: TacticRecord | None = field(default=None, metadata=nested(TacticRecord, optional=True))
    ratio_to_first: tuple[float, ...] | None = field(default=None, metadata=OPTIONAL)
    ratio: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)

    @property
    def round_rates(self) -> list[float]:
        """Images/s of every round (the median alone for a report without rounds)."""
        return list(self.rounds) or [self.images_per_s]


@dataclass(frozen=True, kw_only=True)
class BenchEntry(Record):
    """One model (on one runtime) of a bench report."""

    model: str
    path: str
    backend: str
    precision: str
    runtime_settings: dict[str, Any] = field(default_factory=dict)
    results: tuple[BatchRecord, ...] = field(metadata=nested(BatchRecord, "list"))


@dataclass(frozen=True, kw_only=True)
class NoiseRecord(Record):
    interleaved: bool = False
    load: JSON = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class BenchConfigRecord(Record):
    batches: tuple[int, ...] = ()
    warmup_s: float = 0.0
    duration_s: float | None = None
    iterations: int | None = None
    rounds: int | None = None
    transfers: bool = False
    cuda_graph: bool = False
    streams: int = 1
    lowering: str = "auto"


@dataclass(frozen=True, kw_only=True)
class BenchRecord(Record):
    """`bench --json` and deploy's bench.json (pipeline.bench_report.run_bench)."""

    config: BenchConfigRecord = field(metadata=nested(BenchConfigRecord))
    environment: EnvironmentRecord = field(default_factory=EnvironmentRecord, metadata=nested(EnvironmentRecord))
    noise: NoiseRecord = field(metadata=nested(NoiseRecord))
    models: tuple[BenchEntry, ...] = field(metadata=nested(BenchEntry, "list"))


# --- convert and quantize --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PrecisionCheckRecord(Record):
    """How the converted model follows the FP32 model (pipeline.convert.PrecisionCheck.as_dict): the deciding
    output's agreement, then every output's."""

    against: str = "fp32 onnx"
    images: int
    max_abs_error: float | None
    mean_abs_error: float | None = None
    max_rel_error: float | None = None
    cosine_min: float
    top1_agreement: float | None = None
    top5_agreement: float | None = None
    kl_divergence: float | None = None
    worst_images: tuple[Any, ...] = ()
    groups: tuple[JSON, ...] = ()
    passed: bool
    failures: tuple[str, ...] = ()
    input_size: tuple[int, int] | None = None
    preprocessing: str | None = None
    outputs: dict[str, OutputRecord] = field(default_factory=dict, metadata=nested(OutputRecord, "map"))
    detection: DetectionRecord | None = field(default=None, metadata=nested(DetectionRecord))


@dataclass(frozen=True, kw_only=True)
class ConvertRecord(Record):
    """`convert --fp16 --json` (pipeline.convert.ConvertResult.as_dict)."""

    source: str
    output: str
    precision: str = "fp16"
    io_types: str  # "float32" or "float16"
    fp16_nodes: int
    fp32_nodes: tuple[str, ...] = ()
    casts: int
    clipped_initializers: tuple[str, ...] = ()  # values beyond the float16 range
    check: PrecisionCheckRecord | None = field(default=None, metadata=nested(PrecisionCheckRecord))


@dataclass(frozen=True, kw_only=True)
class QdqCounts(Record):
    """QuantizeLinear nodes of a Q/DQ model (precision.qdq)."""

    quantize_linear: int
    weights_per_channel: int
    activations_per_tensor: int


@dataclass(frozen=True, kw_only=True)
class QuantizeRecord(Record):
    """`quantize --json` (pipeline.quantize.QuantizeResult.as_dict). `source` says where the calibration ranges
    came from ("calibrated" or "cache"): the calibration report's key replaces the source model's path there."""

    source: str
    output: str
    precision: str = "int8"
    method: str
    images: int
    found: int
    skipped: tuple[str, ...] = ()
    cache_file: str | None = None
    qdq: QdqCounts = field(metadata=nested(QdqCounts))
    eca_blocks_unfused: int
    eca_nodes_fused: int
    eca_gate_quantized: bool
    decoding_nodes_float: int = 0
    calibration: JSON = None
    warnings: tuple[str, ...] = ()
    preprocessing: str = ""
    check: PrecisionCheckRecord | None = field(default=None, metadata=nested(PrecisionCheckRecord))
    input_size: tuple[int, int] | None = None
    passed: bool
    written: bool = True
