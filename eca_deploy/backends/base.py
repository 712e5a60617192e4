"""The runner interface shared by every backend."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from eca_deploy.exporters.metadata import ModelMetadata


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | str | None, ...]  # str or None for a dynamic dimension
    dtype: str


class Runner(abc.ABC):
    """Runs one model: `infer({name: array}) -> {name: array}`.

    Besides running, a runner says what it knows of its model, so that nobody looks at its internals: the model
    description (`metadata`), the precision an engine was built in (`precision`), the batch sizes it takes
    (`batch_range`), whether `infer` may be called from several threads at once (`thread_safe`) and the settings a
    timing was measured with (`settings`).
    """

    name: str = "runner"
    provider: str | None = None  # the execution provider or device, where the runtime has a choice
    thread_safe: bool = False  # whether two threads may call infer() at once (else callers serialise)

    @property
    def backend(self) -> str:
        """The runtime and its provider, e.g. "onnxruntime-cpu", "openvino-cpu", "tensorrt"."""
        return f"{self.name}-{self.provider}" if self.provider else self.name

    @property
    def metadata(self) -> ModelMetadata | None:
        """The model description it carries: the ONNX metadata, or an engine's sidecar; None when there is none."""
        return None

    @property
    def precision(self) -> str | None:
        """The precision the runner itself records (an engine's sidecar); None: the model file decides."""
        return None

    def batch_range(self) -> tuple[int, int | None]:
        """(smallest, largest) batch the image input takes: a static batch (n, n), else (1, None): any."""
        info = self.inputs[0]
        n = info.shape[0] if info.shape else None
        return (n, n) if isinstance(n, int) and n > 0 else (1, None)

    def settings(self) -> dict[str, Any]:
        """What a timing depends on beyond the model and batch (e.g. OpenVINO's precision hint and threads)."""
        return {}

    @property
    @abc.abstractmethod
    def inputs(self) -> list[TensorInfo]: ...

    @property
    @abc.abstractmethod
    def outputs(self) -> list[TensorInfo]: ...

    @abc.abstractmethod
    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def infer_batches(
        self, array: np.ndarray, batch: int, fixed_batch: bool = False
    ) -> Iterator[dict[str, np.ndarray]]:
        """Run the image input over `array` in chunks (every output); with `fixed_batch` the last one is padded."""
        name = self.inputs[0].name
        for start in range(0, len(array), batch):
            chunk = array[start : start + batch]
            used = len(chunk)
            if fixed_batch and used < batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - used, axis=0)])
            yield {k: v[:used] for k, v in self.infer({name: np.ascontiguousarray(chunk)}).items()}

    def run_all(self, array: np.ndarray, batch: int, fixed_batch: bool = False) -> dict[str, np.ndarray]:
        """Every output of the model over all of `array`, by name."""
        parts = list(self.infer_batches(array, batch, fixed_batch))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def make_step(self, feed: Mapping[str, np.ndarray], options: StepOptions) -> Callable[[], StepTimes | None]:
        """A callable that runs one inference on `feed` as fast as the backend allows (for benchmarks).

        Backends that can split the time (TensorRT: host-to-device, compute, device-to-host) return it.
        """
        bound = dict(feed)

        def step() -> None:
            self.infer(bound)

        return step


@dataclass(frozen=True)
class StepOptions:
    transfers: bool = True  # include host<->device copies in the timed step
    cuda_graph: bool = False  # capture the step in a CUDA graph where the backend supports it
    streams: int = 1  # concurrent streams (TensorRT)


@dataclass(frozen=True)
class StepTimes:
    """Milliseconds of one step, measured with device events."""

    h2d_ms: float
    compute_ms: float
    d2h_ms: float
