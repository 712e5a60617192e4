"""Configure and build one of the CPU plugin projects (plugins/openvino, plugins/onnxruntime) with CMake, and find
the library it makes: an explicit path, then an environment variable, then the default build folder."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from eca_deploy.errors import EcaDeployError
from eca_deploy.plugin.locate import require_cmake

Progress = Callable[[str, int | None], None]  # (stage or compiler line, percent done or None)

_REPO = Path(__file__).resolve().parents[2]


def project_dir(name: str) -> Path | None:
    """plugins/<name> when eca-deploy runs from a checkout, else None."""
    folder = _REPO / "plugins" / name
    return folder if (folder / "CMakeLists.txt").is_file() else None


def default_build_dir(name: str) -> Path:
    """<checkout>/build/<name>, or build/<name> under the current folder for an installed package."""
    return (_REPO if project_dir(name) else Path.cwd()) / "build" / name


def first_error(log: str) -> str:
    """The first CMake or compiler error of a build log, on one line."""
    for pattern in (r"^CMake Error.*\n((?:  .*\n?)+)", r"^.*\berror\b.*$"):
        match = re.search(pattern, log, flags=re.M)
        if match:
            return " ".join(match.group(match.lastindex or 0).split())[:300]
    return "see the log"


def run_cmake(
    sources: Path,
    build_dir: Path,
    configure_args: Sequence[str],
    jobs: int | None,
    progress: Progress | None,
    label: str,
    library: str,
) -> Path:
    """Configure and build `sources` into `build_dir`; the built `library`, or a one-line EcaDeployError."""
    cmake = require_cmake(jobs)
    if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
        raise EcaDeployError("no C++ compiler found: install g++ (build-essential) or set CXX")
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EcaDeployError(f"cannot create the build folder {build_dir}: {exc.strerror}") from None
    configure = [cmake, "-S", str(sources), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release", *configure_args]
    build = [cmake, "--build", str(build_dir), "--parallel", str(jobs or os.cpu_count() or 1)]
    log_path = build_dir / "eca-build.log"
    report = progress or (lambda _line, _percent: None)
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
                raise EcaDeployError(f"{label} {step} failed: {first_error(done.stdout)} (log: {log_path})")
    built = build_dir / library
    if not built.is_file():
        raise EcaDeployError(f"the build finished without {built} (log: {log_path})")
    return built


def find_library(
    library: str, env: str, default_dir: Path, build_hint: str, path: str | Path | None = None, required: bool = True
) -> Path | None:
    """`library` from `path` (file or folder), $env, `default_dir`, or the folder of that name under ./build.

    A path or variable that names a missing file is an error; `required=False` only allows finding nothing.
    """
    for given, origin in ((path, "path"), (os.environ.get(env) or None, f"${env}")):
        if given is None:
            continue
        candidate = Path(given).expanduser()
        candidate = candidate / library if candidate.is_dir() else candidate
        if not candidate.is_file():
            raise EcaDeployError(f"{library} not found at {candidate} (from {origin})")
        return candidate.resolve()
    searched = list(dict.fromkeys([default_dir, Path.cwd() / "build" / default_dir.name]))
    for folder in searched:
        if (folder / library).is_file():
            return (folder / library).resolve()
    if required:
        raise EcaDeployError(
            f"{library} not found (searched {', '.join(map(str, searched))}): build it with `{build_hint}` or set {env}"
        )
    return None
