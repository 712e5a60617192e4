"""The CUDA kernels against the float64 reference on a GPU: every path, both dtypes, edge-case shapes, the op's
variants, and the ahead-of-time plugin's PTX launched as TensorRT launches it. The checks live in
tests/kernels_gpu_checks.py (runnable without pytest, as scripts/gpu_acceptance.sh does where pytest is missing).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import pytest
import torch

from eca_deploy.errors import EcaDeployError
from eca_deploy.plugin.build import build_plugins, find_nvcc
from eca_deploy.plugin.kernels import EcaKernels
from eca_deploy.plugin.locate import find_kernels_library
from tests import kernels_gpu_checks as checks

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU and a CUDA build of PyTorch (torch.cuda.is_available() is False)",
                allow_module_level=True)  # fmt: skip

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> EcaKernels:
    """$ECA_DEPLOY_KERNELS, else the current sources built for this GPU where nvcc and cmake exist, else an already
    built library."""
    major, minor = torch.cuda.get_device_capability()
    try:
        find_nvcc()
        have_tools = shutil.which("cmake") is not None
    except EcaDeployError:
        have_tools = False
    if os.environ.get("ECA_DEPLOY_KERNELS"):  # built for this run already (scripts/gpu_acceptance.sh)
        return EcaKernels(find_kernels_library())
    if have_tools:
        result = build_plugins(tmp_path_factory.mktemp("build"), cuda_archs=f"{major}{minor}")
        return EcaKernels(result.kernels)
    library = find_kernels_library(required=False)
    if library is None:
        pytest.skip("libeca_kernels.so is not built and nvcc/cmake are missing to build it")
    return EcaKernels(library)


@pytest.fixture(scope="module")
def aot_module() -> checks.DriverModule:
    from eca_deploy.plugin import qdp

    if qdp.compiler() is None:
        pytest.skip("no nvcc or NVRTC for the ahead-of-time plugin's PTX")
    return checks.DriverModule(qdp.compile_ptx())


def _run(check: Callable[[Any], None], target: Any) -> None:
    try:
        check(target)
    except checks.Skip as exc:
        pytest.skip(str(exc))


KERNEL_CHECKS = list(checks.kernel_checks())
AOT_CHECKS = list(checks.aot_checks())


@pytest.mark.parametrize("check", [c for _, c in KERNEL_CHECKS], ids=[n for n, _ in KERNEL_CHECKS])
def test_kernels(kernels: EcaKernels, check: Callable[[Any], None]) -> None:
    _run(check, kernels)


@pytest.mark.parametrize("check", [c for _, c in AOT_CHECKS], ids=[n for n, _ in AOT_CHECKS])
def test_aot_ptx_as_tensorrt_launches_it(aot_module: checks.DriverModule, check: Callable[[Any], None]) -> None:
    _run(check, aot_module)
