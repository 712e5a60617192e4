"""Device memory, pinned host buffers, streams, events and CUDA graphs for the TensorRT backend.

One small interface over the two Python CUDA bindings: cuda-python (`cuda.bindings.runtime`, what
NVIDIA's TensorRT samples use since 10.13/10.14) and pycuda. cuda-python is preferred when both exist; CUDA
graphs (`--cuda-graph`) are cuda-python's alone, since no released pycuda has stream capture. When cuda-python
imports but cannot start (cuda-bindings 13 on a driver for CUDA 12, a missing libcudart), pycuda is tried next.

Both work in the device's primary context, the one TensorRT (the CUDA runtime API) uses: cuda-python is the
runtime API itself; pycuda retains and pushes the primary context (`pycuda.autoprimaryctx`, never `autoinit`,
which creates a second context in which TensorRT's objects are invalid handles). `cuda_memory()` must be called
before any TensorRT object is created, and `activate()` wraps work on threads other than the creating one.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from eca_deploy.errors import EcaDeployError, MissingDependencyError


class CudaError(EcaDeployError):
    pass


# No released pycuda (2022.2 .. 2026.1) wraps stream capture, so CUDA graphs are cuda-python's alone.
GRAPHS_NEED_CUDA_PYTHON = "--cuda-graph needs cuda-python (pycuda has no stream capture): pip install cuda-python"


class CudaMemory:
    """The operations the TensorRT runner needs; pointers and handles are plain ints."""

    backend = "none"
    graphs = False  # whether capture() works (cuda-python only)

    def malloc(self, nbytes: int) -> int:
        raise NotImplementedError

    def free(self, ptr: int) -> None:
        raise NotImplementedError

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        raise NotImplementedError

    def free_pinned(self, array: np.ndarray) -> None:
        """Release an array from pinned(); it must not be used afterwards."""
        raise NotImplementedError

    def stream(self) -> int:
        raise NotImplementedError

    def destroy_stream(self, stream: int) -> None:
        raise NotImplementedError

    def htod(self, dst: int, src: np.ndarray, stream: int) -> None:
        raise NotImplementedError

    def dtoh(self, dst: np.ndarray, src: int, stream: int) -> None:
        raise NotImplementedError

    def event(self) -> Any:
        raise NotImplementedError

    def destroy_event(self, event: Any) -> None:
        raise NotImplementedError

    def record(self, event: Any, stream: int) -> None:
        raise NotImplementedError

    def wait(self, stream: int, event: Any) -> None:
        """Make work enqueued on `stream` from now on wait for `event`."""
        raise NotImplementedError

    def elapsed_ms(self, start: Any, end: Any) -> float:
        raise NotImplementedError

    def synchronize(self, stream: int) -> None:
        raise NotImplementedError

    def capture(self, stream: int, work: Callable[[], None]) -> Any:
        """Capture `work()` (enqueues on `stream`) into an executable CUDA graph; the stream leaves capture mode
        whether or not `work` raises."""
        raise NotImplementedError

    def launch(self, graph: Any, stream: int) -> None:
        raise NotImplementedError

    def destroy_graph(self, graph: Any) -> None:
        """Release an executable graph from capture()."""
        raise NotImplementedError

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """Make the context current on this thread for the duration (a no-op where the binding needs none)."""
        yield


class _CudaPython(CudaMemory):
    backend = "cuda-python"
    graphs = True

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.check(rt.cudaFree(0))  # create the primary context
        self._pinned: dict[int, int] = {}  # array data address -> cudaMallocHost pointer

    def check(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            name = self.rt.cudaGetErrorName(err)[1]
            raise CudaError(f"CUDA call failed: {name.decode() if isinstance(name, bytes) else name}")
        return rest[0] if len(rest) == 1 else rest

    def malloc(self, nbytes: int) -> int:
        return int(self.check(self.rt.cudaMalloc(max(nbytes, 1))))

    def free(self, ptr: int) -> None:
        self.check(self.rt.cudaFree(ptr))

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        ptr = int(self.check(self.rt.cudaMallocHost(max(nbytes, 1))))
        buf = (ctypes.c_byte * max(nbytes, 1)).from_address(ptr)
        array = np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape))).reshape(shape)
        self._pinned[array.ctypes.data] = ptr
        return array

    def free_pinned(self, array: np.ndarray) -> None:
        ptr = self._pinned.pop(array.ctypes.data, None)
        if ptr is not None:
            self.check(self.rt.cudaFreeHost(ptr))

    def stream(self) -> int:
        return int(self.check(self.rt.cudaStreamCreate()))

    def destroy_stream(self, stream: int) -> None:
        self.check(self.rt.cudaStreamDestroy(stream))

    def htod(self, dst: int, src: np.ndarray, stream: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.check(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream))

    def dtoh(self, dst: np.ndarray, src: int, stream: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.check(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream))

    def event(self) -> Any:
        return self.check(self.rt.cudaEventCreate())

    def destroy_event(self, event: Any) -> None:
        self.check(self.rt.cudaEventDestroy(event))

    def record(self, event: Any, stream: int) -> None:
        self.check(self.rt.cudaEventRecord(event, stream))

    def wait(self, stream: int, event: Any) -> None:
        self.check(self.rt.cudaStreamWaitEvent(stream, event, 0))

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self.check(self.rt.cudaEventElapsedTime(start, end)))

    def synchronize(self, stream: int) -> None:
        self.check(self.rt.cudaStreamSynchronize(stream))

    def capture(self, stream: int, work: Any) -> Any:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self.check(self.rt.cudaStreamBeginCapture(stream, mode))
        try:
            work()
        except BaseException:
            err, graph = self.rt.cudaStreamEndCapture(stream)  # out of capture mode; the partial graph goes
            if int(err) == 0 and graph:
                self.rt.cudaGraphDestroy(graph)
            raise
        graph = self.check(self.rt.cudaStreamEndCapture(stream))
        try:
            return self.check(self.rt.cudaGraphInstantiate(graph, 0))
        finally:
            self.check(self.rt.cudaGraphDestroy(graph))  # the executable graph keeps what it needs

    def launch(self, graph: Any, stream: int) -> None:
        self.check(self.rt.cudaGraphLaunch(graph, stream))

    def destroy_graph(self, graph: Any) -> None:
        self.check(self.rt.cudaGraphExecDestroy(graph))


class _PyCuda(CudaMemory):
    backend = "pycuda"

    def __init__(self, cuda: Any, context: Any) -> None:
        self.cuda, self.context = cuda, context  # the device's primary context
        self._allocations: dict[int, Any] = {}
        self._streams: dict[int, Any] = {}

    def malloc(self, nbytes: int) -> int:
        alloc = self.cuda.mem_alloc(max(nbytes, 1))
        self._allocations[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        self._allocations.pop(ptr).free()

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return self.cuda.pagelocked_empty(shape, dtype)

    def free_pinned(self, array: np.ndarray) -> None:
        base = array.base
        while base is not None and not hasattr(base, "free") and getattr(base, "base", None) is not None:
            base = base.base
        if hasattr(base, "free"):  # pycuda's HostAllocation: released now, not when garbage collected
            base.free()

    def stream(self) -> int:
        s = self.cuda.Stream()
        self._streams[s.handle] = s
        return s.handle

    def destroy_stream(self, stream: int) -> None:
        self._streams.pop(stream, None)  # pycuda destroys it with the object

    def htod(self, dst: int, src: np.ndarray, stream: int) -> None:
        self.cuda.memcpy_htod_async(dst, src, self._streams[stream])

    def dtoh(self, dst: np.ndarray, src: int, stream: int) -> None:
        self.cuda.memcpy_dtoh_async(dst, src, self._streams[stream])

    def event(self) -> Any:
        return self.cuda.Event()

    def destroy_event(self, event: Any) -> None:
        pass  # pycuda destroys it with the object

    def record(self, event: Any, stream: int) -> None:
        event.record(self._streams[stream])

    def wait(self, stream: int, event: Any) -> None:
        self._streams[stream].wait_for_event(event)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        end.synchronize()
        return float(end.time_since(start))

    def synchronize(self, stream: int) -> None:
        self._streams[stream].synchronize()

    def capture(self, stream: int, work: Any) -> Any:
        raise MissingDependencyError(GRAPHS_NEED_CUDA_PYTHON)

    def launch(self, graph: Any, stream: int) -> None:
        raise MissingDependencyError(GRAPHS_NEED_CUDA_PYTHON)

    def destroy_graph(self, graph: Any) -> None:
        pass  # capture() never made one

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        if self.cuda.Context.get_current() is not None:
            yield
            return
        self.context.push()  # a thread with no current context (another thread than the creating one)
        try:
            yield
        finally:
            self.cuda.Context.pop()


def _open_cuda_python() -> CudaMemory | None:
    """cuda-python in the primary context; None when it is not installed; raises when it cannot start."""
    try:
        from cuda.bindings import runtime as rt  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart as rt  # older cuda-python
        except ImportError:
            return None
    return _CudaPython(rt)


def _open_pycuda() -> CudaMemory | None:
    """pycuda in the primary context; None when it is not installed; raises when it cannot start."""
    try:
        import pycuda.driver as cuda
    except ImportError:
        return None
    import pycuda.autoprimaryctx as primary  # retains and pushes the primary context (pycuda >= 2021.1)

    return _PyCuda(cuda, primary.context)


BINDINGS: tuple[tuple[str, Callable[[], CudaMemory | None]], ...] = (
    ("cuda-python", _open_cuda_python),
    ("pycuda", _open_pycuda),
)


def cuda_memory(bindings: tuple[tuple[str, Callable[[], CudaMemory | None]], ...] = BINDINGS) -> CudaMemory:
    """The first of `bindings` (cuda-python, then pycuda) that is installed and starts; a one-line error naming why
    each failed, or that neither is installed."""
    failures = []
    for name, open_binding in bindings:
        try:
            memory = open_binding()
        except Exception as exc:  # a binding that imports but cannot start: the next one may
            failures.append(f"{name}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
            continue
        if memory is not None:
            return memory
    if failures:
        raise CudaError(
            f"no usable CUDA device ({'; '.join(failures)}): TensorRT engines run on an NVIDIA GPU whose driver "
            "supports the binding's CUDA (cuda-bindings 13 needs a CUDA 13 driver: pip install 'cuda-python<13')"
        )
    raise MissingDependencyError(
        "running TensorRT engines needs cuda-python or pycuda: pip install cuda-python (or 'eca-deploy[gpu]')"
    )
