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
    """Field metadata: the field holds a record ("one"), a tuple of them ("list") or a dict of them by name ("map");
    `optional`: see OPTIONAL."""
    return {"record": record, "shape": shape, "optional": optional}


OPTIONAL = {"optional": True}  # field metadata: the writer leaves the key out when there is nothing to say (None)
INT_KEYS = {"int_keys": True}  # field metadata: a dict by batch size, int keys here and string keys in JSON


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
    record, shape = f.metadata.get("record"), f.metadata.get("shape")
    if value is None:
        return None
    if record is not None:
        if shape == "list":
            return tuple(record.from_dict(v) for v in value)
        if shape == "map":
            return {k: record.from_dict(v) for k, v in value.items()}
        return record.from_dict(value)
    if f.metadata.get("int_keys"):
        return {int(k): _tuple(v) for k, v in value.items()}
    return _tuple(value)


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
    detection: JSON = None
    input_size: tuple[int, int] | None = None
    preprocessing: str | None = None
    interface: JSON = None
    reference: str = ""
    reference_scale: float | None = None
    images: tuple[str, ...] = ()
    skipped_images: tuple[str, ...] = ()
    per_layer: JSON = None
    notes: tuple[str, ...] = ()
    weights: str = ""
    random_weights: bool = False
    per_image: JSON = None  # {"one_minus_cosine": [...], "max_abs_error": [...]}, worst output per image

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
class BatchRecord(Record):
    """The figures of one model at one batch size (pipeline.bench.BatchResult.as_dict, with `tactic` and the ratio
    to the first entry where bench adds them)."""

    batch: int
    iterations: int
    total_s: float
    images_per_s: float
    inferences_per_s: float
    latency_ms: dict[str, float]
    split_ms: dict[str, float] | None = None
    stages_ms: dict[str, float] | None = None
    rounds: tuple[float, ...] = ()
    spread: dict[str, float] | None = None
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
    environment: JSON = None
    noise: NoiseRecord = field(metadata=nested(NoiseRecord))
    models: tuple[BenchEntry, ...] = field(metadata=nested(BenchEntry, "list"))
