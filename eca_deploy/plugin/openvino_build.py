"""Build and find the OpenVINO ECA extension (plugins/openvino): CMake against the `openvino` wheel's own config."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eca_deploy.errors import EcaDeployError, MissingDependencyError
from eca_deploy.plugin.locate import require_cmake

EXTENSION_LIBRARY = "libeca_openvino_extension.so"
EXTENSION_ENV = "ECA_DEPLOY_OPENVINO_EXTENSION"

_REPO = Path(__file__).resolve().parents[2]

Progress = Callable[[str, int | None], None]  # (stage or compiler line, percent done or None)


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
    folder = _REPO / "plugins" / "openvino"
    return folder if (folder / "CMakeLists.txt").is_file() else None


def default_build_dir() -> Path:
    """<checkout>/build/openvino, or build/openvino under the current folder for an installed package."""
    return (_REPO if source_dir() else Path.cwd()) / "build" / "openvino"


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


def _first_error(log: str) -> str:
    for pattern in (r"^CMake Error.*\n((?:  .*\n?)+)", r"^.*\berror\b.*$"):
        match = re.search(pattern, log, flags=re.M)
        if match:
            return " ".join(match.group(match.lastindex or 0).split())[:300]
    return "see the log"


def build_openvino_extension(
    build_dir: Path | None = None, jobs: int | None = None, progress: Progress | None = None
) -> OpenVINOBuildResult:
    """Configure and build libeca_openvino_extension.so; one-line EcaDeployError on any failure."""
    sources = source_dir()
    if sources is None:
        raise EcaDeployError("the extension sources (plugins/openvino) are not here: build from a checkout")
    cmake = require_cmake(jobs)
    if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
        raise EcaDeployError("no C++ compiler found: install g++ (build-essential) or set CXX")
    ov_dir, version = openvino_cmake_dir()
    build_dir = (build_dir or default_build_dir()).resolve()
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EcaDeployError(f"cannot create the build folder {build_dir}: {exc.strerror}") from None
    configure = [cmake, "-S", str(sources), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DOpenVINO_DIR={ov_dir}"]  # fmt: skip
    build = [cmake, "--build", str(build_dir), "--parallel", str(jobs or os.cpu_count() or 1)]
    log_path = build_dir / "eca-build.log"
    report = progress or (lambda _line, _percent: None)
    start = time.monotonic()
    with log_path.open("w") as log:
        for step, command in (("configuring", configure), ("building", build)):
            report(step, None)
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
            log.write(done.stdout)
            for line in done.stdout.splitlines():
                percent = re.match(r"^\[\s*(\d+)(?:%|/(\d+))\]", line)
                if percent:
                    total = percent.group(2)
                    report(line, int(percent.group(1)) * 100 // int(total) if total else int(percent.group(1)))
            if done.returncode != 0:
                raise EcaDeployError(f"OpenVINO extension {step} failed: {_first_error(done.stdout)} (log: {log_path})")
    library = build_dir / EXTENSION_LIBRARY
    if not library.is_file():
        raise EcaDeployError(f"the build finished without {library} (log: {log_path})")
    return OpenVINOBuildResult(build_dir, library, version, round(time.monotonic() - start, 1), log_path)


def find_openvino_extension(path: str | Path | None = None, required: bool = True) -> Path | None:
    """The extension from `path` (file or folder), $ECA_DEPLOY_OPENVINO_EXTENSION, or build/openvino.

    A path or variable that names a missing file is an error; `required=False` only allows finding nothing.
    """
    for given, origin in ((path, "path"), (os.environ.get(EXTENSION_ENV) or None, f"${EXTENSION_ENV}")):
        if given is None:
            continue
        candidate = Path(given).expanduser()
        candidate = candidate / EXTENSION_LIBRARY if candidate.is_dir() else candidate
        if not candidate.is_file():
            raise EcaDeployError(f"{EXTENSION_LIBRARY} not found at {candidate} (from {origin})")
        return candidate.resolve()
    searched = list(dict.fromkeys([default_build_dir(), Path.cwd() / "build" / "openvino"]))
    for folder in searched:
        if (folder / EXTENSION_LIBRARY).is_file():
            return (folder / EXTENSION_LIBRARY).resolve()
    if required:
        raise EcaDeployError(
            f"{EXTENSION_LIBRARY} not found (searched {', '.join(map(str, searched))}): build it with "
            f"`eca-deploy plugin build --target openvino` or set {EXTENSION_ENV}"
        )
    return None
