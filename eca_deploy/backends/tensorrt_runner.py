"""TensorRT engine runner on the name-based tensor API that TensorRT 10 and 11 share.

`set_input_shape` / `set_tensor_address` / `execute_async_v3`; device buffers are allocated once per
tensor and grown only when a larger batch arrives; the ECA plugin library is loaded before the engine
is deserialised (from `--plugin`, the engine's sidecar, or the default locations; none for an engine whose
sidecar records the ahead-of-time plugin, which embeds its kernel).

The CUDA binding is set up before any TensorRT object, so that both work in the device's primary context;
`close()` (also at exit) releases graphs, buffers and TensorRT objects before that context goes.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eca_deploy.backends.base import Runner, StepOptions, StepTimes, TensorInfo
from eca_deploy.backends.cuda_memory import GRAPHS_NEED_CUDA_PYTHON, CudaMemory, cuda_memory
from eca_deploy.engine.plugin import load_plugin
from eca_deploy.engine.sidecar import check_compatible, find_sidecar
from eca_deploy.engine.trt_import import import_tensorrt
from eca_deploy.errors import EcaDeployError, MissingDependencyError
from eca_deploy.exporters.metadata import ModelMetadata
from eca_deploy.plugin.locate import find_plugin_library
from eca_deploy.plugin.qdp import driver_cuda_version, driver_refusal


class _Buffers:
    """Device buffer and pinned host mirror of one tensor, grown on demand."""

    def __init__(self, cuda: CudaMemory, dtype: np.dtype) -> None:
        self.cuda, self.dtype, self.capacity, self.device = cuda, dtype, 0, 0
        self.host = np.empty(0, dtype)

    def ensure(self, shape: tuple[int, ...]) -> np.ndarray:
        n = int(np.prod(shape))
        if n > self.capacity:
            self.release()
            self.device = self.cuda.malloc(n * np.dtype(self.dtype).itemsize)
            self.host = self.cuda.pinned((n,), self.dtype)
            self.capacity = n
        return self.host[:n].reshape(shape)

    def release(self) -> None:
        if self.device:
            self.cuda.free(self.device)
        if self.capacity:
            self.cuda.free_pinned(self.host)
        self.device, self.capacity, self.host = 0, 0, np.empty(0, self.dtype)


@dataclass(frozen=True)
class _Tensors:
    """The engine's I/O tensors: what a lane needs to know of its runner (lanes never hold the runner itself, whose
    finalizer holds the lanes)."""

    dtypes: dict[str, np.dtype]  # every I/O tensor, in the engine's order
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]


class _Lane:
    """One execution context with its own stream and buffers (several lanes run concurrently)."""

    def __init__(self, engine: Any, cuda: CudaMemory, tensors: _Tensors) -> None:
        self.engine, self.cuda, self.tensors = engine, cuda, tensors
        self.context = engine.create_execution_context()
        self.stream = self.cuda.stream()
        self.buffers = {n: _Buffers(self.cuda, dtype) for n, dtype in tensors.dtypes.items()}
        self.hosts: dict[str, np.ndarray] = {}
        self.graph: Any = None  # the captured compute of the last make_step with cuda_graph

    def capture(self) -> Any:
        self.drop_graph()
        self.graph = self.cuda.capture(self.stream, self.compute)
        return self.graph

    def drop_graph(self) -> None:
        if self.graph is not None:
            self.cuda.destroy_graph(self.graph)
            self.graph = None

    def close(self) -> None:
        self.drop_graph()
        self.cuda.synchronize(self.stream)
        for buffers in self.buffers.values():
            buffers.release()
        self.hosts.clear()
        self.context = None  # the execution context before its engine
        self.engine = None
        self.cuda.destroy_stream(self.stream)

    def bind(self, feed: Mapping[str, np.ndarray]) -> None:
        """Set shapes and addresses and copy `feed` into the pinned input buffers."""
        engine = self.engine
        capacities = [b.capacity for b in self.buffers.values()]
        for info in self.tensors.inputs:
            array = feed[info.name]
            if not self.context.set_input_shape(info.name, tuple(array.shape)):
                lo, _, hi = engine.get_tensor_profile_shape(info.name, 0)
                raise EcaDeployError(
                    f"input {info.name} of shape {list(array.shape)} is outside the engine's profile "
                    f"{list(lo)} .. {list(hi)}: rebuild it with a wider range (build --batch-range)"
                )
            self.hosts[info.name] = host = self.buffers[info.name].ensure(tuple(array.shape))
            np.copyto(host, array, casting="same_kind")
        for info in self.tensors.outputs:
            shape = tuple(self.context.get_tensor_shape(info.name))
            self.hosts[info.name] = self.buffers[info.name].ensure(shape)
        if capacities != [b.capacity for b in self.buffers.values()]:
            self.drop_graph()  # it holds the addresses of the buffers just freed
        for name, buf in self.buffers.items():
            self.context.set_tensor_address(name, buf.device)

    def upload(self) -> None:
        for info in self.tensors.inputs:
            self.cuda.htod(self.buffers[info.name].device, self.hosts[info.name], self.stream)

    def compute(self) -> None:
        if not self.context.execute_async_v3(self.stream):
            raise EcaDeployError("TensorRT failed to enqueue the engine (see the TensorRT log above)")

    def download(self) -> None:
        for info in self.tensors.outputs:
            self.cuda.dtoh(self.hosts[info.name], self.buffers[info.name].device, self.stream)

    def run(self) -> None:
        self.upload()
        self.compute()
        self.download()
        self.cuda.synchronize(self.stream)


class TensorRTRunner(Runner):
    name = "tensorrt"

    def __init__(self, engine_path: str | Path, plugin: str | Path | None = None) -> None:
        trt = import_tensorrt()  # before the plugin library: it registers with the TensorRT in the process
        self.cuda = cuda_memory()  # the primary context current before any TensorRT object exists
        self.path = Path(engine_path)
        self.sidecar = find_sidecar(self.path)
        if self.sidecar is not None:
            check_compatible(self.sidecar, trt.__version__)
        # A version-compatible plan carries the plugin library itself; a second copy could clash with it. An engine
        # of the AOT plugin carries its kernel as PTX: no library to look for.
        aot = self.sidecar is not None and self.sidecar.plugin_route == "aot"
        if aot and self.sidecar.ptx_isa:  # the engine's PTX: this driver must load it
            isa = tuple(int(p) for p in self.sidecar.ptx_isa.split(".")[:2])
            if reason := driver_refusal((isa[0], isa[1]), driver_cuda_version()):
                raise EcaDeployError(f"{self.path}: {reason}, and rebuild the engine")
        embedded = aot or (self.sidecar is not None and self.sidecar.version_compatible and self.sidecar.plugin_path)
        library = plugin or (None if embedded else self.sidecar.plugin_path if self.sidecar else None)
        if library is None and not embedded:
            library = find_plugin_library(required=False)
        if library:
            load_plugin(Path(library))
        self.logger = trt.Logger(trt.Logger.ERROR)
        runtime = trt.Runtime(self.logger)
        if self.sidecar is not None and self.sidecar.version_compatible:
            runtime.engine_host_code_allowed = True
        if self.sidecar is not None and self.sidecar.dla_core is not None:
            runtime.DLA_core = self.sidecar.dla_core  # the core it was built for (the runtime's default is -1)
        engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise EcaDeployError(
                f"TensorRT {trt.__version__} cannot deserialise {self.path}: not an engine, built by another "
                "TensorRT version, or the ECA plugin library is not loaded (--plugin); rebuild with eca-deploy build"
            )
        self._attach(trt, runtime, engine)

    def _attach(self, trt: Any, runtime: Any, engine: Any) -> None:
        """Tensors, the first lane and the finalizer that releases them (which must not reach `self`)."""
        self.trt = trt
        self._objects: dict[str, Any] = {"runtime": runtime, "engine": engine}  # released by close()
        self.names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in self.names}
        self._inputs = [self._info(n) for n in self.names if is_input[n]]
        self._outputs = [self._info(n) for n in self.names if not is_input[n]]
        dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in self.names}
        self._tensors = _Tensors(dtypes, self._inputs, self._outputs)
        self.lanes = [self._new_lane()]
        self._events: list[Any] = []  # of the last make_step
        self._finalizer = weakref.finalize(
            self, TensorRTRunner._release, self.cuda, self.lanes, self._events, self._objects
        )

    def _new_lane(self) -> _Lane:
        return _Lane(self.engine, self.cuda, self._tensors)

    @property
    def engine(self) -> Any:
        if "engine" not in self._objects:
            raise EcaDeployError(f"the TensorRT runner of {self.path} is closed")
        return self._objects["engine"]

    @staticmethod
    def _release(cuda: CudaMemory, lanes: list[_Lane], events: list[Any], objects: dict[str, Any]) -> None:
        """Graphs, buffers, streams and execution contexts, then the engine, then the runtime, in the CUDA context
        (at close() or exit, before the binding lets the context go)."""
        try:
            with cuda.activate():
                for lane in lanes:
                    lane.close()
                for event in events:
                    cuda.destroy_event(event)
        except Exception:  # at exit the driver may be gone already; the process releases what is left
            pass
        finally:
            lanes.clear()
            events.clear()
            objects.pop("engine", None)
            objects.pop("runtime", None)

    def close(self) -> None:
        """Release everything on the GPU now (also done at exit); the runner cannot be used afterwards."""
        self._finalizer()

    def _info(self, name: str) -> TensorInfo:
        shape = tuple(d if d >= 0 else None for d in self.engine.get_tensor_shape(name))
        dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name))).name
        return TensorInfo(name, shape, dtype)

    @property
    def inputs(self) -> list[TensorInfo]:
        return self._inputs

    @property
    def metadata(self) -> ModelMetadata | None:
        """The ONNX's description, recorded in the sidecar at build time."""
        return self.sidecar.metadata if self.sidecar is not None else None

    @property
    def precision(self) -> str | None:
        return self.sidecar.precision if self.sidecar is not None else None

    def batch_range(self) -> tuple[int, int | None]:
        """A static batch, else the engine's optimisation profile 0."""
        static = super().batch_range()
        if static[1] is not None:
            return static
        lo, _, hi = self.engine.get_tensor_profile_shape(self._inputs[0].name, 0)
        return int(lo[0]), int(hi[0])

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._outputs

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        lane = self.lanes[0]
        with self.cuda.activate():
            lane.bind(feed)
            lane.run()
            return {info.name: lane.hosts[info.name].copy() for info in self._outputs}

    def make_step(self, feed: Mapping[str, np.ndarray], options: StepOptions) -> Callable[[], StepTimes | None]:
        """One timed step: every lane runs one inference on its stream; events on every lane split H2D / compute /
        D2H (split_lanes)."""
        if options.streams < 1:
            raise EcaDeployError(f"--streams must be at least 1, got {options.streams}")
        if options.cuda_graph and not self.cuda.graphs:
            raise MissingDependencyError(GRAPHS_NEED_CUDA_PYTHON)
        with self.cuda.activate():
            return self._make_step(feed, options)

    def _make_step(self, feed: Mapping[str, np.ndarray], options: StepOptions) -> Callable[[], StepTimes | None]:
        while len(self.lanes) < options.streams:
            self.lanes.append(self._new_lane())
        lanes, cuda = self.lanes[: options.streams], self.cuda
        computes: list[Callable[[], None]] = []
        for lane in lanes:
            lane.bind(feed)
            lane.run()  # first enqueue outside any capture: TensorRT allocates lazily
            if options.cuda_graph:
                graph = lane.capture()  # replaces (and destroys) the lane's graph of an earlier step
                computes.append(lambda g=graph, s=lane.stream: cuda.launch(g, s))
            else:
                lane.drop_graph()
                computes.append(lane.compute)
        for old in self._events:  # the previous step's events: that step must not be called any more
            cuda.destroy_event(old)
        self._events[:] = [cuda.event() for _ in range(1 + 4 * len(lanes))]
        fork, marks = self._events[0], [self._events[1 + 4 * i : 5 + 4 * i] for i in range(len(lanes))]
        first = lanes[0].stream

        def step() -> StepTimes:
            with cuda.activate():
                return timed()

        def mark(phase: int) -> None:
            for lane, events in zip(lanes, marks, strict=True):
                cuda.record(events[phase], lane.stream)

        def timed() -> StepTimes:
            cuda.record(fork, first)
            for lane in lanes[1:]:  # every lane starts with the step
                cuda.wait(lane.stream, fork)
            mark(0)
            if options.transfers:
                for lane in lanes:
                    lane.upload()
            mark(1)
            for compute in computes:
                compute()
            mark(2)
            if options.transfers:
                for lane in lanes:
                    lane.download()
            mark(3)
            for lane in lanes:
                cuda.synchronize(lane.stream)
            return split_lanes(cuda, fork, marks)

        step.inferences = len(lanes)  # type: ignore[attr-defined]
        return step


def split_lanes(cuda: CudaMemory, fork: Any, marks: list[list[Any]]) -> StepTimes:
    """H2D / compute / D2H of a step whose lanes all started at `fork`, each with 4 events on its own stream (before
    upload, before compute, before download, after download): H2D runs from the fork, and a phase ends when the last
    lane reaches its end mark, so the three add up to the step from the fork until the slowest lane is done."""
    reached = [0.0, *(max(cuda.elapsed_ms(fork, events[j]) for events in marks) for j in (1, 2, 3))]
    return StepTimes(*(b - a for a, b in itertools.pairwise(reached)))
