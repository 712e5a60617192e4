"""Atomic file writes and hashing: a failed write never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from eca_deploy.errors import EcaDeployError


def check_writable(path: Path, option: str = "--output") -> None:
    """Fail early, with one line, when `path` (given with `option`) cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise EcaDeployError(f"output path {path} is a directory: give a file name to {option}")
    if not parent.exists():
        raise EcaDeployError(f"output folder {parent} does not exist: create it or choose another {option}")
    if not os.access(parent, os.W_OK):
        raise EcaDeployError(f"output folder {parent} is not writable: choose another {option}")


def umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish(tmp: Path, path: Path, mode: int = 0o666) -> Path:
    """Give a finished temporary file (or folder, mode 0o777) a new file's permissions; rename it onto `path`.

    Temporary files are created 0600; published ones get 0666 less the umask like any new file, so a model
    repository mounted into a container that runs as another user stays readable.
    """
    os.chmod(tmp, mode & ~umask())
    os.replace(tmp, path)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], mode: int = 0o666) -> Iterator[Path]:
    """Yield a temporary path beside `path`; publish it onto `path` only if the block succeeds."""
    target = Path(path)
    check_writable(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        publish(tmp_path, target, mode)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None], mode: int = 0o666) -> Path:
    """Call `write(tmp)` and move the result onto `path` atomically."""
    with atomic_path(path, mode) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
