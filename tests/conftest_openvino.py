"""Fixtures for the OpenVINO tests: the ECA extension built once per test run with CMake, under tmp."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest


def openvino_reason() -> str | None:
    """Why the OpenVINO extension cannot be built and run here, or None."""
    if importlib.util.find_spec("openvino") is None:
        return "OpenVINO is not installed (pip install 'eca-deploy[openvino]')"
    if shutil.which("cmake") is None or (shutil.which("c++") is None and shutil.which("g++") is None):
        return "cmake or a C++ compiler is missing (needed to build plugins/openvino)"
    return None


needs_openvino = pytest.mark.skipif(openvino_reason() is not None, reason=openvino_reason() or "")


@pytest.fixture(scope="session")
def openvino_extension(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """libeca_openvino_extension.so, built from plugins/openvino against the installed wheel, once per run: the
    first worker that needs it builds it, the others wait for it and load the same file."""
    reason = openvino_reason()
    if reason:
        pytest.skip(reason)
    from eca_deploy.plugin.openvino_build import EXTENSION_LIBRARY, build_openvino_extension
    from tests.conftest import run_folder, run_lock

    folder = run_folder(tmp_path_factory, "openvino-build")
    with run_lock(folder):
        library = folder / EXTENSION_LIBRARY
        return library if library.is_file() else build_openvino_extension(folder).extension
