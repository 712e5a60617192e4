"""Device memory, pinned host buffers, streams, events and CUDA graphs for the TensorRT backend.

One small interface over the two Python CUDA bindings: cuda-python (`cuda.bindings.runtime`, what
NVIDIA's TensorRT samples use since 10.13/10.14) and pycuda. cuda-python is preferred when both exist.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from eca_deploy.errors import EcaDeployError, MissingDependencyError


class CudaError(EcaDeployError):
    pass


class CudaMemory:
    """The operations the TensorRT runner needs; pointers and handles are plain ints."""

    backend = "none"

    def malloc(self, nbytes: int) -> int:
        raise NotImplementedError

    def free(self, ptr: int) -> None:
        raise NotImplementedError

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        raise NotImplementedError

    def stream(self) -> int:
        raise NotImplementedError

    def htod(self, dst: int, src: np.ndarray, stream: int) -> None:
        raise NotImplementedError

    def dtoh(self, dst: np.ndarray, src: int, stream: int) -> None:
        raise NotImplementedError

    def event(self) -> Any:
        raise NotImplementedError

    def record(self, event: Any, stream: int) -> None:
        raise NotImplementedError

    def elapsed_ms(self, start: Any, end: Any) -> float:
        raise NotImplementedError

    def synchronize(self, stream: int) -> None:
        raise NotImplementedError

    def capture(self, stream: int, work: Any) -> Any:
        """Capture `work()` (enqueues on `stream`) into an executable CUDA graph."""
        raise NotImplementedError

    def launch(self, graph: Any, stream: int) -> None:
        raise NotImplementedError


class _CudaPython(CudaMemory):
    backend = "cuda-python"

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.check(rt.cudaFree(0))  # create the primary context

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
        return np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def stream(self) -> int:
        return int(self.check(self.rt.cudaStreamCreate()))

    def htod(self, dst: int, src: np.ndarray, stream: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.check(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream))

    def dtoh(self, dst: np.ndarray, src: int, stream: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.check(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream))

    def event(self) -> Any:
        return self.check(self.rt.cudaEventCreate())

    def record(self, event: Any, stream: int) -> None:
        self.check(self.rt.cudaEventRecord(event, stream))

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self.check(self.rt.cudaEventElapsedTime(start, end)))

    def synchronize(self, stream: int) -> None:
        self.check(self.rt.cudaStreamSynchronize(stream))

    def capture(self, stream: int, work: Any) -> Any:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self.check(self.rt.cudaStreamBeginCapture(stream, mode))
        work()
        graph = self.check(self.rt.cudaStreamEndCapture(stream))
        return self.check(self.rt.cudaGraphInstantiate(graph, 0))

    def launch(self, graph: Any, stream: int) -> None:
        self.check(self.rt.cudaGraphLaunch(graph, stream))


class _PyCuda(CudaMemory):
    backend = "pycuda"

    def __init__(self, cuda: Any) -> None:
        self.cuda = cuda
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

    def stream(self) -> int:
        s = self.cuda.Stream()
        self._streams[s.handle] = s
        return s.handle

    def htod(self, dst: int, src: np.ndarray, stream: int) -> None:
        self.cuda.memcpy_htod_async(dst, src, self._streams[stream])

    def dtoh(self, dst: np.ndarray, src: int, stream: int) -> None:
        self.cuda.memcpy_dtoh_async(dst, src, self._streams[stream])

    def event(self) -> Any:
        return self.cuda.Event()

    def record(self, event: Any, stream: int) -> None:
        event.record(self._streams[stream])

    def elapsed_ms(self, start: Any, end: Any) -> float:
        end.synchronize()
        return float(end.time_since(start))

    def synchronize(self, stream: int) -> None:
        self._streams[stream].synchronize()

    def capture(self, stream: int, work: Any) -> Any:
        s = self._streams[stream]
        if not hasattr(s, "begin_capture"):
            raise MissingDependencyError("CUDA graphs need pycuda >= 2022.1 or cuda-python: pip install cuda-python")
        s.begin_capture()
        work()
        return s.end_capture().instantiate()

    def launch(self, graph: Any, stream: int) -> None:
        graph.launch(self._streams[stream])


def cuda_memory() -> CudaMemory:
    """cuda-python if installed, else pycuda; a one-line error when neither is."""
    try:
        from cuda.bindings import runtime as rt  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart as rt  # older cuda-python
        except ImportError:
            rt = None
    if rt is not None:
        return _CudaPython(rt)
    try:
        import pycuda.autoinit  # noqa: F401  (creates the context)
        import pycuda.driver as cuda
    except ImportError:
        raise MissingDependencyError(
            "running TensorRT engines needs cuda-python or pycuda: pip install cuda-python (or 'eca-deploy[gpu]')"
        ) from None
    except Exception as exc:  # pycuda raises its own errors when there is no device or driver
        raise CudaError(f"no usable CUDA device ({exc}): TensorRT engines run on an NVIDIA GPU") from None
    return _PyCuda(cuda)
