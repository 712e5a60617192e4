"""Build and find the OpenVINO ECA extension (plugins/openvino): CMake against the `openvino` wheel's own config."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from eca_deploy.errors import EcaDeployError, MissingDependencyError
from eca_deploy.plugin.cmake_build import Progress, find_library, project_dir, run_cmake
from eca_deploy.plugin.cmake_build import default_build_dir as cmake_default_build_dir

EXTENSION_LIBRARY = "libeca_openvino_extension.so"
EXTENSION_ENV = "ECA_DEPLOY_OPENVINO_EXTENSION"


@dataclass
class OpenVINOBuildResult:
    build_dir: Path
    extension: Path
    openvino: str  # version of the OpenVINO the extension was built against
    seconds: float
    log: Path

    def as_dict(self) -> dict[str, object]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}


def source_dir() -> Path | None:
    """plugins/openvino when eca-deploy runs from a checkout, else None."""
    return project_dir("openvino")


def default_build_dir() -> Path:
    """<checkout>/build/openvino, or build/openvino under the current folder for an installed package."""
    return cmake_default_build_dir("openvino")


def openvino_cmake_dir() -> tuple[Path, str]:
    """(the wheel's cmake folder with OpenVINOConfig.cmake, the OpenVINO version)."""
    try:
        import openvino
    except ImportError:
        raise MissingDependencyError("OpenVINO is not installed: pip install 'eca-deploy[openvino]'") from None
    folder = Path(openvino.__file__).resolve().parent / "cmake"
    if not (folder / "OpenVINOConfig.cmake").is_file():
        raise EcaDeployError(
            f"this OpenVINO ({folder.parent}) ships no CMake config: install the `openvino` wheel from PyPI, "
            "or pass OpenVINO_DIR to cmake yourself"
        )
    return folder, openvino.__version__.split("-")[0]


def build_openvino_extension(
    build_dir: Path | None = None, jobs: int | None = None, progress: Progress | None = None
) -> OpenVINOBuildResult:
    """Configure and build libeca_openvino_extension.so; one-line EcaDeployError on any failure."""
    sources = source_dir()
    if sources is None:
        raise EcaDeployError("the extension sources (plugins/openvino) are not here: build from a checkout")
    ov_dir, version = openvino_cmake_dir()
    build_dir = (build_dir or default_build_dir()).resolve()
    start = time.monotonic()
    library = run_cmake(
        sources, build_dir, [f"-DOpenVINO_DIR={ov_dir}"], jobs, progress, "OpenVINO extension", EXTENSION_LIBRARY
    )
    return OpenVINOBuildResult(
        build_dir, library, version, round(time.monotonic() - start, 1), build_dir / "eca-build.log"
    )


def find_openvino_extension(path: str | Path | None = None, required: bool = True) -> Path | None:
    """The extension from `path` (file or folder), $ECA_DEPLOY_OPENVINO_EXTENSION, or build/openvino.

    A path or variable that names a missing file is an error; `required=False` only allows finding nothing.
    """
    hint = "eca-deploy plugin build --target openvino"
    return find_library(EXTENSION_LIBRARY, EXTENSION_ENV, default_build_dir(), hint, path, required)
