"""The CUDA memory layer of the TensorRT runner, through recording fakes of the two CUDA bindings: what is freed,
destroyed and in which order (no GPU; nothing here pretends to run TensorRT)."""

from __future__ import annotations

import ctypes
import gc
import threading
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest

from eca_deploy.backends.base import StepOptions
from eca_deploy.backends.cuda_memory import CudaError, _CudaPython, _PyCuda
from eca_deploy.backends.tensorrt_runner import TensorRTRunner, _Buffers
from eca_deploy.errors import MissingDependencyError


class FakeRuntime:
    """cuda.bindings.runtime's calling convention: every call returns (error, *results); calls are recorded."""

    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeThreadLocal=2)
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.host: dict[int, ctypes.Array] = {}
        self.next = 0x1000

    def _record(self, name: str, *args: object) -> None:
        self.calls.append((name, *args))

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def cudaFree(self, ptr: int):
        self._record("cudaFree", ptr)
        return (0,)

    def cudaMalloc(self, nbytes: int):
        self.next += 0x1000
        self._record("cudaMalloc", nbytes)
        return 0, self.next

    def cudaMallocHost(self, nbytes: int):
        buf = (ctypes.c_byte * nbytes)()
        self.host[ctypes.addressof(buf)] = buf
        self._record("cudaMallocHost", nbytes)
        return 0, ctypes.addressof(buf)

    def cudaFreeHost(self, ptr: int):
        self._record("cudaFreeHost", ptr)
        return (0,)

    def cudaStreamBeginCapture(self, stream: int, mode: int):
        self._record("cudaStreamBeginCapture", stream)
        return (0,)

    def cudaStreamEndCapture(self, stream: int):
        self._record("cudaStreamEndCapture", stream)
        return 0, "graph"

    def cudaGraphInstantiate(self, graph: str, flags: int):
        self._record("cudaGraphInstantiate", graph)
        return 0, "exec"

    def cudaGraphDestroy(self, graph: str):
        self._record("cudaGraphDestroy", graph)
        return (0,)

    def cudaGraphExecDestroy(self, graph: str):
        self._record("cudaGraphExecDestroy", graph)
        return (0,)

    def cudaStreamCreate(self):
        self.next += 1
        self._record("cudaStreamCreate")
        return 0, self.next

    def cudaStreamDestroy(self, stream: int):
        self._record("cudaStreamDestroy", stream)
        return (0,)

    def cudaStreamSynchronize(self, stream: int):
        self._record("cudaStreamSynchronize", stream)
        return (0,)

    def cudaGetErrorName(self, err: int):
        return 0, b"cudaErrorFake"


def test_pinned_buffers_are_freed_when_they_grow() -> None:
    rt = FakeRuntime()
    cuda = _CudaPython(rt)
    buffers = _Buffers(cuda, np.dtype(np.float32))
    small = buffers.ensure((2, 3))
    small[...] = 1.0
    first_host = small.ctypes.data
    buffers.ensure((1, 3))  # fits: nothing allocated or freed
    assert rt.names().count("cudaMallocHost") == 1 and "cudaFreeHost" not in rt.names()
    big = buffers.ensure((4, 3))
    assert big.shape == (4, 3)
    assert ("cudaFreeHost", first_host) in rt.calls, "the old pinned buffer is released"
    assert rt.names().count("cudaFree") == 2  # the context's cudaFree(0), then the old device buffer
    buffers.release()
    assert rt.names().count("cudaFreeHost") == 2 and rt.names().count("cudaFree") == 3
    assert buffers.capacity == 0


def test_capture_ends_even_when_the_work_raises() -> None:
    rt = FakeRuntime()
    cuda = _CudaPython(rt)

    def failing() -> None:
        raise CudaError("enqueue failed")

    with pytest.raises(CudaError, match="enqueue failed"):
        cuda.capture(7, failing)
    assert rt.names()[-3:] == ["cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGraphDestroy"]
    rt.calls.clear()
    graph = cuda.capture(7, lambda: rt._record("work"))
    assert graph == "exec"
    assert rt.names() == ["cudaStreamBeginCapture", "work", "cudaStreamEndCapture", "cudaGraphInstantiate",
                          "cudaGraphDestroy"]  # fmt: skip
    cuda.destroy_graph(graph)
    assert rt.calls[-1] == ("cudaGraphExecDestroy", "exec")


class FakePyCuda:
    """pycuda.driver's context stack, per thread."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.calls: list[str] = []
        fake = self

        class Context:
            @staticmethod
            def get_current():
                stack = getattr(fake.local, "stack", [])
                return stack[-1] if stack else None

            @staticmethod
            def pop():
                fake.calls.append("pop")
                fake.local.stack.pop()

        self.Context = Context

    def push(self, context: str) -> None:
        self.calls.append("push")
        self.local.stack = [*getattr(self.local, "stack", []), context]


def test_pycuda_pushes_the_primary_context_on_other_threads() -> None:
    driver = FakePyCuda()
    primary = SimpleNamespace(push=lambda: driver.push("primary"))
    cuda = _PyCuda(driver, primary)
    driver.push("primary")  # what pycuda.autoprimaryctx does on the importing thread
    driver.calls.clear()
    with cuda.activate():
        assert driver.Context.get_current() == "primary"
    assert driver.calls == [], "the creating thread already has it current"
    seen: list[object] = []

    def worker() -> None:
        assert driver.Context.get_current() is None
        with cuda.activate():
            seen.append(driver.Context.get_current())
        seen.append(driver.Context.get_current())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == ["primary", None] and driver.calls == ["push", "pop"]


def test_pycuda_refuses_cuda_graphs_in_one_line() -> None:
    """No released pycuda has stream capture: --cuda-graph names cuda-python instead of failing inside pycuda."""
    events: list[str] = []
    stream = SimpleNamespace(handle=5, begin_capture=lambda: events.append("begin"))
    cuda = _PyCuda(SimpleNamespace(Stream=lambda: stream), None)
    assert not cuda.graphs and _CudaPython(FakeRuntime()).graphs
    with pytest.raises(MissingDependencyError) as caught:
        cuda.capture(cuda.stream(), lambda: events.append("work"))
    assert events == [], "nothing was enqueued or captured"
    assert "\n" not in str(caught.value) and "cuda-python" in str(caught.value)


class FakeEngine:
    """The tensor metadata of a TensorRT engine (a host object: it builds and runs nothing)."""

    num_io_tensors = 2
    modes: ClassVar[dict[str, str]] = {"x": "input", "y": "output"}

    def get_tensor_name(self, i: int) -> str:
        return ["x", "y"][i]

    def get_tensor_mode(self, name: str) -> str:
        return self.modes[name]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, 3)

    def get_tensor_dtype(self, name: str) -> str:
        return "float32"

    def create_execution_context(self) -> object:
        return object()


def test_a_dropped_runner_is_collected_and_released() -> None:
    """The finalizer holds the lanes; a lane that held its runner kept every runner alive until exit."""
    rt = FakeRuntime()
    trt = SimpleNamespace(TensorIOMode=SimpleNamespace(INPUT="input"), nptype=lambda _: np.float32)
    runner = TensorRTRunner.__new__(TensorRTRunner)
    runner.cuda, runner.path = _CudaPython(rt), Path("fake.plan")
    runner._attach(trt, object(), FakeEngine())
    runner.lanes.append(runner._new_lane())  # what make_step does for --streams 2
    assert [i.name for i in runner.inputs] == ["x"] and [o.name for o in runner.outputs] == ["y"]
    alive = weakref.ref(runner)
    finalizer = runner._finalizer
    del runner
    gc.collect()
    assert alive() is None, "nothing outside the runner (its finalizer included) references it"
    assert not finalizer.alive, "collecting it released its lanes"
    assert rt.names().count("cudaStreamDestroy") == 2


def test_cuda_graph_without_cuda_python_is_refused_before_any_work() -> None:
    runner = TensorRTRunner.__new__(TensorRTRunner)
    runner.cuda = _PyCuda(SimpleNamespace(), None)
    with pytest.raises(MissingDependencyError, match="cuda-python"):
        runner.make_step({}, StepOptions(cuda_graph=True))


class _NoDriverRuntime(FakeRuntime):
    """cuda-bindings 13 on a driver for CUDA 12: the first call fails with cudaErrorInsufficientDriver."""

    def cudaFree(self, ptr: int):
        return (35,)

    def cudaGetErrorName(self, err: int):
        return 0, b"cudaErrorInsufficientDriver"


def test_cuda_python_that_cannot_start_falls_back_to_pycuda() -> None:
    from eca_deploy.backends.cuda_memory import cuda_memory

    pycuda = _PyCuda(SimpleNamespace(), None)
    chosen = cuda_memory((("cuda-python", lambda: _CudaPython(_NoDriverRuntime())), ("pycuda", lambda: pycuda)))
    assert chosen is pycuda
    assert cuda_memory((("cuda-python", lambda: None), ("pycuda", lambda: pycuda))) is pycuda


def test_no_binding_that_starts_is_one_line_naming_each() -> None:
    from eca_deploy.backends.cuda_memory import cuda_memory

    def no_device() -> None:
        raise RuntimeError("cuInit failed: no CUDA-capable device is detected\nmore")

    with pytest.raises(CudaError) as caught:
        cuda_memory((("cuda-python", lambda: _CudaPython(_NoDriverRuntime())), ("pycuda", no_device)))
    message = str(caught.value)
    assert "\n" not in message and "cudaErrorInsufficientDriver" in message and "pycuda: cuInit failed" in message
    with pytest.raises(MissingDependencyError, match="cuda-python or pycuda"):
        cuda_memory((("cuda-python", lambda: None), ("pycuda", lambda: None)))


def test_streams_are_timed_on_every_lane() -> None:
    """--streams 2: the step lasts until the slower lane is done, whichever lane it is (not lane 0's events only)."""
    from eca_deploy.backends.tensorrt_runner import split_lanes

    at = {"fork": 0.0, "a0": 0.0, "a1": 1.0, "a2": 2.0, "a3": 3.0, "b0": 0.5, "b1": 2.5, "b2": 7.5, "b3": 8.0}
    cuda = SimpleNamespace(elapsed_ms=lambda start, end: at[end] - at[start])
    times = split_lanes(cuda, "fork", [["a0", "a1", "a2", "a3"], ["b0", "b1", "b2", "b3"]])
    assert (times.h2d_ms, times.compute_ms, times.d2h_ms) == (2.5, 5.0, 0.5)
    assert times.h2d_ms + times.compute_ms + times.d2h_ms == 8.0, "until the slower lane ended"
    one = split_lanes(cuda, "fork", [["a0", "a1", "a2", "a3"]])
    assert (one.h2d_ms, one.compute_ms, one.d2h_ms) == (1.0, 1.0, 1.0)
