"""User-facing errors: one line that says what is wrong and what to do."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from types import TracebackType


class EcaDeployError(Exception):
    """An error caused by the user's input or environment, shown as one line without a traceback."""

    exit_code: int = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class SettingError(EcaDeployError):
    """A bad value of a setting. The message names settings as `{name}` (the API's field or argument name); the
    CLI shows each as the option that sets it (`{batch_sizes}` -> `--batch-sizes`), the API as the bare name."""

    def __init__(self, template: str, exit_code: int | None = None) -> None:
        self.template = template
        super().__init__(self.spell(lambda name: name), exit_code)

    def spell(self, name_of: Callable[[str], str]) -> str:
        """The message with each `{name}` replaced by `name_of(name)`."""
        return re.sub(r"\{(\w+)\}", lambda m: name_of(m.group(1)), self.template)


class MissingDependencyError(EcaDeployError):
    """An optional dependency (ONNX Runtime, TensorRT, CUDA) is not importable."""


class CheckFailedError(EcaDeployError):
    """A numerical check ran but its result is outside tolerance."""

    exit_code = 1


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def _one_line_excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """An EcaDeployError left uncaught in a script (the Python API) prints its one line, like the CLI."""
    if isinstance(exc, EcaDeployError):
        sys.stderr.write(f"error: {exc}\n")
    else:
        sys.__excepthook__(kind, exc, tb)


def install_excepthook() -> None:
    """Show uncaught EcaDeployErrors as one line (`error: ...`); leaves a hook someone else installed alone."""
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _one_line_excepthook
