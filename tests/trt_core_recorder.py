"""A recording stand-in for TensorRT's compiled core (`tensorrt/tensorrt.so` of the bindings wheel), installed as
`tensorrt/tensorrt.py` beside the wheel's own Python files, so that `tensorrt.plugin` (TensorRT's real Python layer)
runs unchanged on top of it (tests/qdp_conformance.py).

It builds nothing and runs nothing: it holds what the Python layer hands the core (the creators it registers, the
dimension expressions it builds, the launch parameters and extra arguments it sets) so a test can read them back. Its
dimension expressions fold constants as TensorRT's IExprBuilder does and record every constant asked for.
"""

from __future__ import annotations

import enum
import operator
from typing import Any, ClassVar

import numpy as np

# -- enums -------------------------------------------------------------------------------------------------------


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9
    FP4 = 10


float32, float16, int8, int32 = DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32
bool, uint8 = DataType.BOOL, DataType.UINT8
fp8, bfloat16, int64, int4, fp4 = DataType.FP8, DataType.BF16, DataType.INT64, DataType.INT4, DataType.FP4


class TensorFormat(enum.IntEnum):
    LINEAR = 0
    CHW2 = 1
    HWC8 = 2
    CHW4 = 3
    CHW16 = 4
    CHW32 = 5
    DHWC8 = 6
    CDHW32 = 7
    HWC = 8
    DLA_LINEAR = 9
    DLA_HWC4 = 10
    HWC16 = 11
    DHWC = 12


class PluginFieldType(enum.IntEnum):
    FLOAT16 = 0
    FLOAT32 = 1
    FLOAT64 = 2
    INT8 = 3
    INT16 = 4
    INT32 = 5
    CHAR = 6
    DIMS = 7
    UNKNOWN = 8
    BF16 = 9
    INT64 = 10
    FP8 = 11
    INT4 = 12
    FP4 = 13


class DimensionOperation(enum.IntEnum):
    SUM = 0
    PROD = 1
    MAX = 2
    MIN = 3
    SUB = 4
    EQUAL = 5
    LESS = 6
    FLOOR_DIV = 7
    CEIL_DIV = 8


class TensorRTPhase(enum.IntEnum):
    BUILD = 0
    RUNTIME = 1


class QuickPluginCreationRequest(enum.IntEnum):
    UNKNOWN = 0
    PREFER_JIT = 1
    PREFER_AOT = 2
    STRICT_JIT = 3
    STRICT_AOT = 4


class PluginArgType(enum.IntEnum):
    INT = 0


class PluginArgDataType(enum.IntEnum):
    INT8 = 0
    INT16 = 1
    INT32 = 2


class PluginCapabilityType(enum.IntEnum):
    CORE = 0
    BUILD = 1
    RUNTIME = 2


# -- logging and the classes the wheel's __init__.py decorates ------------------------------------------------


class ILogger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4


class Logger(ILogger):
    messages: ClassVar[list[tuple[Any, str]]] = []

    def __init__(self, min_severity: Any = ILogger.Severity.WARNING) -> None:
        self.min_severity = min_severity

    def log(self, severity: Any, msg: str) -> None:
        Logger.messages.append((severity, msg))


class ICudaEngine: ...


class IExecutionContext: ...


class Runtime: ...


class IHostMemory: ...


class Builder: ...


class INetworkDefinition: ...


class OnnxParser: ...


class IBuilderConfig: ...


class ITensor: ...


# -- plugin fields and the registry ---------------------------------------------------------------------------

_FIELD_DTYPES = {PluginFieldType.FLOAT16: np.float16, PluginFieldType.FLOAT32: np.float32,
                 PluginFieldType.FLOAT64: np.float64, PluginFieldType.INT8: np.int8, PluginFieldType.INT16: np.int16,
                 PluginFieldType.INT32: np.int32, PluginFieldType.INT64: np.int64, PluginFieldType.CHAR: np.int8,
                 PluginFieldType.UNKNOWN: np.uint8}  # fmt: skip


class PluginField:
    """name, data (a NumPy array of the field's type, as the bindings return it), type, size."""

    def __init__(self, name: str = "", data: Any = None, type: Any = PluginFieldType.UNKNOWN) -> None:
        self.name = name
        self.type = type
        dtype = _FIELD_DTYPES.get(type, np.uint8)
        if data is None:
            self.data = np.zeros(0, dtype)
        elif isinstance(data, bytes | bytearray):
            self.data = np.frombuffer(bytes(data), dtype=dtype).copy()
        else:
            self.data = np.asarray(data).astype(dtype) if np.asarray(data).size else np.zeros(0, dtype)
        self.size = int(self.data.size)


class PluginFieldCollection(list):
    pass


class IPluginCreatorV3Quick:
    def __init__(self) -> None:
        pass


class _Registry:
    def __init__(self) -> None:
        self.creators: dict[tuple[str, str, str], Any] = {}

    def register_creator(self, creator: Any, namespace: str) -> bool:
        self.creators[(creator.name, creator.plugin_version, namespace)] = creator
        return True

    def get_creator(self, name: str, version: str, namespace: str = "") -> Any:
        return self.creators.get((name, version, namespace))


_REGISTRY = _Registry()


def get_plugin_registry() -> _Registry:
    return _REGISTRY


# -- plugin interfaces (base classes only) -----------------------------------------------------------------------


class IPluginV3:
    def __init__(self) -> None:
        pass


class IPluginV3QuickCore:
    def __init__(self) -> None:
        pass


class IPluginV3QuickBuild:
    def __init__(self) -> None:
        pass


class IPluginV3QuickAOTBuild:
    def __init__(self) -> None:
        pass


class IPluginV3QuickRuntime:
    def __init__(self) -> None:
        pass


class ISymExpr:
    def __init__(self) -> None:
        pass


# -- dimension expressions --------------------------------------------------------------------------------------

_FOLD = {DimensionOperation.SUM: operator.add, DimensionOperation.PROD: operator.mul, DimensionOperation.MAX: max,
         DimensionOperation.MIN: min, DimensionOperation.SUB: operator.sub,
         DimensionOperation.EQUAL: lambda a, b: int(a == b), DimensionOperation.LESS: lambda a, b: int(a < b),
         DimensionOperation.FLOOR_DIV: operator.floordiv,
         DimensionOperation.CEIL_DIV: lambda a, b: -(-a // b)}  # fmt: skip


class IDimensionExpr:
    """A node: a constant, a named symbol (a runtime dimension), or an operation on two nodes."""

    def __init__(self, kind: str, value: Any = None, op: Any = None, args: tuple = ()) -> None:
        self.kind, self.value, self.op, self.args = kind, value, op, args

    def is_constant(self) -> bool:
        return self.kind == "constant"

    def is_size_tensor(self) -> bool:
        return False

    def get_constant_value(self) -> int:
        if self.kind != "constant":
            raise RuntimeError("not a constant")
        return self.value

    def evaluate(self, symbols: dict[str, int]) -> int:
        """The value for the symbols' values (what TensorRT computes at run time)."""
        if self.kind == "constant":
            return self.value
        if self.kind == "symbol":
            return symbols[self.value]
        a, b = (arg.evaluate(symbols) for arg in self.args)
        return _FOLD[self.op](a, b)


class IExprBuilder:
    """Records every constant asked for; folds operations on two constants, as TensorRT does."""

    def __init__(self) -> None:
        self.constants: list[int] = []

    def constant(self, value: int) -> IDimensionExpr:
        if not isinstance(value, int) or isinstance(value, np.integer):
            raise TypeError(f"constant(): an int, got {type(value).__name__}")
        self.constants.append(value)
        return IDimensionExpr("constant", value)

    def operation(self, op: DimensionOperation, first: IDimensionExpr, second: IDimensionExpr) -> IDimensionExpr:
        if first.is_constant() and second.is_constant():
            return IDimensionExpr("constant", _FOLD[op](first.value, second.value))
        return IDimensionExpr("operation", op=op, args=(first, second))


def symbol(name: str) -> IDimensionExpr:
    """A dimension known only at run time (the test's own helper, not TensorRT API)."""
    return IDimensionExpr("symbol", name)


class DimsExprs(list):
    def __init__(self, length: int | list = 0) -> None:
        super().__init__([None] * length if isinstance(length, int) else length)


class Dims(tuple):
    MAX_DIMS = 8

    def __new__(cls, shape: Any = ()) -> Dims:
        return super().__new__(cls, [0] * shape if isinstance(shape, int) else shape)


class PluginTensorDesc:
    def __init__(self) -> None:
        self.dims = Dims(())
        self.type = DataType.FLOAT
        self.format = TensorFormat.LINEAR
        self.scale = 1.0


class DynamicPluginTensorDesc:
    def __init__(self) -> None:
        self.desc = PluginTensorDesc()
        self.min = Dims(())
        self.max = Dims(())
        self.opt = Dims(())


class KernelLaunchParams:
    """What get_launch_params sets: each field an IDimensionExpr."""

    def __init__(self) -> None:
        self.grid_x = self.grid_y = self.grid_z = None
        self.block_x = self.block_y = self.block_z = None
        self.shared_mem = None


class SymExprs:
    """The extra kernel arguments get_launch_params sets (symExprSetter)."""

    def __init__(self) -> None:
        self.nbSymExprs = 0
        self.exprs: dict[int, Any] = {}

    def __setitem__(self, index: int, value: Any) -> None:
        if not 0 <= index < self.nbSymExprs:
            raise IndexError(f"extra argument {index} of {self.nbSymExprs}")
        self.exprs[index] = value
