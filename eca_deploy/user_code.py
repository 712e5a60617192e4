"""Code from the user's own files (`--model FILE.py:FACTORY`, `--decoder FILE.py:FUNCTION`), imported one way."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from eca_deploy.errors import EcaDeployError, first_line


def import_file(path: Path, prefix: str) -> ModuleType:
    """Import `path` as a module named `prefix` + a hash of its path; its folder is on `sys.path` meanwhile, so it may
    import its neighbours (a decoder the model's file, a model its layers). Any error is the file's: one line."""
    module_name = f"{prefix}{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise EcaDeployError(f"cannot import {path}: is it a Python file?")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: any error is theirs, shown in one line
        raise EcaDeployError(f"importing {path} failed: {type(exc).__name__}: {first_line(exc)}") from None
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
    return module


def function_of(module: ModuleType, path: Path, name: str, public: Callable[[Any], bool] = callable) -> Any:
    """`module.name` when it is callable, else one line naming the functions the file has."""
    function = getattr(module, name, None)
    if not callable(function):
        names = [n for n, v in vars(module).items() if public(v) and not n.startswith("_")][:8]
        raise EcaDeployError(f"{path} has no function {name!r}: choose one of {', '.join(names) or '(none)'}")
    return function
