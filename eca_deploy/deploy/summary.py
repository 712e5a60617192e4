"""What deploy measured, as types: every precision's check and bench records, and the setup they were taken in.

The report (deploy.report), the recommendation (deploy.recommend) and the CLI read these fields; run_deploy builds
them from the check and bench JSON files it wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eca_deploy.backends.handle import RUNTIME_LABELS as ALL_RUNTIME_LABELS
from eca_deploy.backends.handle import RUNTIMES
from eca_deploy.pipeline.records import (
    JSON,
    BenchConfigRecord,
    BenchEntry,
    CheckRecord,
    EnvironmentRecord,
    NoiseRecord,
    Record,
    nested,
)

RUNTIME_LABELS = {r: ALL_RUNTIME_LABELS[r] for r in RUNTIMES}  # the runtimes of ONNX models
NOTHING_FUSED = (
    "no ECA block found: nothing was fused, model.fused.onnx is the exported graph unchanged, and every "
    "precision runs without the ECA op"
)


def runtime_label(runtime: str) -> str:
    """'ONNX Runtime', 'OpenVINO', 'TensorRT'."""
    return ALL_RUNTIME_LABELS.get(runtime, runtime)


@dataclass(frozen=True, kw_only=True)
class PrecisionBench(Record):
    """The bench entries of one precision: one per runtime, in the order of `DeploySummary.runtimes`."""

    models: tuple[BenchEntry, ...] = field(default=(), metadata=nested(BenchEntry, "list"))


@dataclass(frozen=True, kw_only=True)
class PrecisionResult(Record):
    """One precision: its model file, its checks (the first runtime's is `check`) and its figures."""

    artifact: str
    check: CheckRecord = field(metadata=nested(CheckRecord))
    bench: PrecisionBench = field(default_factory=PrecisionBench, metadata=nested(PrecisionBench))
    checks_by_runtime: dict[str, CheckRecord] = field(default_factory=dict, metadata=nested(CheckRecord, "map"))


@dataclass(frozen=True, kw_only=True)
class BenchSetup(Record):
    """How every figure was timed (bench.json's config) and how noisy the machine was."""

    config: BenchConfigRecord = field(default_factory=BenchConfigRecord, metadata=nested(BenchConfigRecord))
    noise: NoiseRecord = field(default_factory=NoiseRecord, metadata=nested(NoiseRecord))


@dataclass(frozen=True, kw_only=True)
class DeploySummary(Record):
    """Everything the report says, by field."""

    model: str
    input_size: tuple[int, int] | None = None
    preprocessing: str | None = None
    interface: JSON = None
    precisions: tuple[str, ...] = ()
    backend: str  # "tensorrt", or "<first runtime>-cpu"
    backend_label: str
    runtimes: tuple[str, ...] = ()  # the CPU runtimes, the primary first (none with TensorRT)
    engine_note: str | None = None  # why no TensorRT engine was built
    weights: str = ""
    random_weights: bool = False
    bench: BenchSetup = field(default_factory=BenchSetup, metadata=nested(BenchSetup))
    fused_blocks: int | None = None
    images: str | None = None
    environment: EnvironmentRecord = field(default_factory=EnvironmentRecord, metadata=nested(EnvironmentRecord))
    results: dict[str, PrecisionResult] = field(metadata=nested(PrecisionResult, "map"))

    @property
    def passed(self) -> bool:
        """Every precision passed its check on the primary runtime (the first: TensorRT, else ONNX Runtime).

        The other CPU runtimes' checks do not decide it: deploy says aloud where one is outside tolerance, and
        the report shows every runtime's verdict."""
        return all(r.check.passed for r in self.results.values())
