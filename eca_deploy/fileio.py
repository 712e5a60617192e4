"""Where eca-deploy may write, and atomic writes: nothing it did not write is ever replaced or lost.

The rule, applied by every command that writes (`git grep claim_output`):

- It writes only the paths it was asked to write (an option's value, or a default name beside an input),
  each through a temporary file renamed into place (`atomic_path`, `atomic_write`, `publish`).
- An output file may replace an existing file of that name only when eca-deploy wrote that file and it is
  unchanged since, or with `--force` (`allow_replacing`); never a folder, a special file or one of the
  command's own inputs (real paths compared, symlinks resolved): `claim_output_file`. So `bench --plot
  cat.png` refuses to replace a photo, while rerunning a command replaces its own earlier output.
- "eca-deploy wrote it" is known from one record, whatever the file's format: every file eca-deploy publishes
  is listed by real path with its size and modification time in `written.json` of eca-deploy's cache folder
  ($ECA_DEPLOY_CACHE, else $XDG_CACHE_HOME/eca-deploy, else ~/.cache/eca-deploy): `record_written`,
  `wrote_it`. A file edited since, copied from elsewhere, or listed in a lost record counts as the user's:
  the rule errs towards asking for `--force`, never towards replacing.
- An output folder is created fresh. `--force` replaces only a folder that eca-deploy made itself (its
  `.eca-deploy` marker lists the files it wrote, with their sha256), and only while it holds nothing else:
  never a plain file, the current folder, a folder holding the command's inputs, a user's edits or files:
  `claim_output_dir`, `mark_artifact_dir`.
- A folder that a command adds files to (deploy's) must be new, empty, or one eca-deploy made:
  `claim_work_dir`.

Refusals are one-line `EcaDeployError`s naming the option the user typed.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from eca_deploy.errors import EcaDeployError
from eca_deploy.version import __version__

MARKER = ".eca-deploy"  # in every artifact folder eca-deploy makes: what it wrote there
OWN_FOLDER_SIGNS = (MARKER, "manifest.json", ".stages")  # deploy folders of earlier releases had no marker

PathLike = str | os.PathLike[str]
WRITTEN = "written.json"  # in the cache folder: the files eca-deploy wrote, {real path: [size, mtime_ns]}
WRITTEN_LIMIT = 5000  # entries kept; beyond it, those whose file is gone or changed go first, then the oldest
_replacing: contextvars.ContextVar[bool] = contextvars.ContextVar("eca_deploy_replacing", default=False)


def allow_replacing(force: bool) -> None:
    """Whether this command (its `--force`) may replace existing files that eca-deploy did not write."""
    _replacing.set(force)


@contextlib.contextmanager
def replacing(allowed: bool = True) -> Iterator[None]:
    """Within the block, outputs may replace existing files (a folder eca-deploy already claimed as its own)."""
    token = _replacing.set(allowed)
    try:
        yield
    finally:
        _replacing.reset(token)


def cache_root() -> Path:
    """$ECA_DEPLOY_CACHE, else $XDG_CACHE_HOME/eca-deploy, else ~/.cache/eca-deploy."""
    root = os.environ.get("ECA_DEPLOY_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "eca-deploy"


def _stamp(path: PathLike) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


@contextlib.contextmanager
def _written_record() -> Iterator[tuple[Path, dict[str, list[int]]]]:
    """The record of written files, locked while the block reads or updates it."""
    path = cache_root() / WRITTEN
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(WRITTEN + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            data = {}
        yield path, data if isinstance(data, dict) else {}


def wrote_it(path: PathLike) -> bool:
    """Whether eca-deploy wrote the file at `path` and it is unchanged since (same size and modification time)."""
    stamp = _stamp(path)
    if stamp is None:
        return False
    try:
        with _written_record() as (_, data):
            return data.get(str(_real(path))) == stamp
    except OSError:
        return False


def record_written(path: PathLike) -> None:
    """List a file eca-deploy just wrote (best effort: an unwritable cache only means asking for --force later)."""
    stamp = _stamp(path)
    if stamp is None or not os.path.isfile(path):
        return
    try:
        with _written_record() as (record, data):
            data.pop(str(_real(path)), None)
            data[str(_real(path))] = stamp  # the newest last: the oldest are dropped first
            if len(data) > WRITTEN_LIMIT:
                data = {p: s for p, s in data.items() if _stamp(p) == s}
                data = dict(list(data.items())[-(WRITTEN_LIMIT * 4 // 5) :])
            fd, tmp = tempfile.mkstemp(prefix=f".{WRITTEN}.", dir=record.parent)
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle)
            os.replace(tmp, record)
    except OSError:
        pass


def _real(path: PathLike) -> Path:
    return Path(os.path.realpath(path))


def _parent(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether `a` and `b` name the same file (real paths: symlinks resolved)."""
    return _real(a) == _real(b)


def file_in_the_way(path: Path) -> Path | None:
    """The first ancestor of `path` that exists and is not a folder (None when the way is clear)."""
    for ancestor in reversed(path.parents):
        if not ancestor.exists():
            return None
        if not ancestor.is_dir():
            return ancestor
    return None


def _inside(path: Path, folder: Path) -> bool:
    """Whether real path `path` is `folder` or lies under it (both real paths)."""
    return path == folder or folder in path.parents


def _inputs(inputs: Iterable[PathLike | None]) -> list[Path]:
    return [Path(p) for p in inputs if p is not None and str(p) not in ("", "-")]


def check_parent(path: PathLike, option: str = "--output") -> None:
    """One line when `path`'s folder is missing, is a file, or cannot be written."""
    path = Path(path)
    parent = _parent(path)
    blocker = file_in_the_way(path)
    if blocker is not None:
        raise EcaDeployError(f"cannot write {option} {path}: {blocker} is a file, not a folder")
    if not parent.is_dir():
        raise EcaDeployError(f"output folder {parent} does not exist: create it or choose another {option}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EcaDeployError(f"output folder {parent} is not writable: choose another {option}")


def check_writable(path: PathLike, option: str = "--output") -> None:
    """Fail early, with one line, when `path` (given with `option`) cannot be written as a file."""
    path = Path(path)
    check_parent(path, option)
    if path.is_dir():
        raise EcaDeployError(f"{option} {path} is a folder: give a file name to {option}")
    if path.exists() and not path.is_file():
        raise EcaDeployError(f"{option} {path} is not a regular file: choose another {option}")


def claim_output_file(
    path: PathLike, option: str = "--output", inputs: Iterable[PathLike | None] = (), updates: bool = False
) -> Path:
    """Check, before any work, that `path` may be written as one file; return it.

    It may replace an existing file of that name that eca-deploy wrote (unchanged since), any file with
    `--force` (`allow_replacing`) or when the output `updates` a file meant to be rewritten (a timing cache),
    but never a folder, a special file, or one of `inputs` (the command's own input files and folders,
    compared by real path: a symlink to an input counts).
    """
    path = Path(path)
    check_writable(path, option)
    real = _real(path)
    for given in _inputs(inputs):
        if real == _real(given):
            raise EcaDeployError(f"{option} {path} is the input {given}: write the output to another file")
    if path.is_file() and not (updates or _replacing.get() or wrote_it(path)):
        raise EcaDeployError(
            f"{option} {path} already exists and eca-deploy did not write it (or it changed since): pass --force "
            f"to replace it, or choose another {option}"
        )
    return path


def distinct_outputs(*items: tuple[PathLike | None, str]) -> None:
    """One line when two output options (path, option) name the same file."""
    seen: dict[Path, str] = {}
    for path, option in items:
        if path is None or str(path) == "-":
            continue
        real = _real(path)
        if real in seen:
            raise EcaDeployError(f"{option} and {seen[real]} both name {path}: give each its own file")
        seen[real] = option


def _marker_files(folder: Path) -> dict[str, str | None] | None:
    """The files the marker of `folder` lists (relative path: sha256, None for any content), or None."""
    try:
        data = json.loads((folder / MARKER).read_text())
        files = data["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {str(k): (str(v) if v is not None else None) for k, v in files.items()} if isinstance(files, dict) else None


def _foreign_entry(folder: Path, files: dict[str, str | None]) -> tuple[Path, str] | None:
    """The first entry of `folder` that eca-deploy did not write (or that changed since), with why."""
    allowed_dirs = {str(Path(rel).parent) for rel in files} | {"."}
    for rel in list(allowed_dirs):
        allowed_dirs |= {str(p) for p in Path(rel).parents}
    for root, dirs, names in os.walk(folder):
        base = Path(root).relative_to(folder)
        for name in sorted(dirs):
            rel = str(base / name)
            if rel not in allowed_dirs or (Path(root) / name).is_symlink():
                return Path(root) / name, "eca-deploy did not make it"
        for name in sorted(names):
            rel = str(base / name)
            if rel == MARKER:
                continue
            entry = Path(root) / name
            if rel not in files or entry.is_symlink() or not entry.is_file():
                return entry, "eca-deploy did not write it"
            digest = files[rel]
            if digest is not None and sha256_file(entry) != digest:
                return entry, "it changed since eca-deploy wrote it"
    return None


def _refuse_folder(path: Path, option: str, inputs: Iterable[PathLike | None]) -> None:
    """Refusals shared by every output folder: a file there, the current folder, a folder holding inputs."""
    if path.is_symlink():
        raise EcaDeployError(f"{option} {path} is a symbolic link: give a folder path")
    if path.exists() and not path.is_dir():
        raise EcaDeployError(f"{option} {path} is a file: eca-deploy writes a folder there, choose another {option}")
    blocker = file_in_the_way(path)
    if blocker is not None:
        raise EcaDeployError(f"cannot create {option} {path}: {blocker} is a file, not a folder")
    if not path.exists():
        return
    real, cwd = _real(path), _real(Path.cwd())
    if _inside(cwd, real):
        what = "the current folder" if real == cwd else "a folder holding the current folder"
        raise EcaDeployError(f"{option} {path} is {what}: give a new folder for the output")
    for given in _inputs(inputs):
        if given.exists() and _inside(_real(given), real):
            raise EcaDeployError(f"{option} {path} holds the input {given}: write the output to another folder")


def claim_output_dir(
    path: PathLike, option: str = "--out", inputs: Iterable[PathLike | None] = (), force: bool = False
) -> Path:
    """Check, before any work, that folder `path` may be created (or, with `force`, replaced); return it.

    `force` replaces only a folder eca-deploy made (its marker lists every file in it, unchanged), never a
    plain file, the current folder, a folder holding one of `inputs`, or a folder with anything else in it.
    """
    path = Path(path)
    _refuse_folder(path, option, inputs)
    if not path.exists():
        return path
    if not force:
        raise EcaDeployError(f"{path} already exists: choose another name or folder, or pass --force to replace it")
    files = _marker_files(path)
    if files is None:
        raise EcaDeployError(
            f"{option} {path} was not made by eca-deploy (no {MARKER} marker): --force replaces only its own "
            f"folders; remove it yourself or choose another {option}"
        )
    foreign = _foreign_entry(path, files)
    if foreign is not None:
        entry, why = foreign
        raise EcaDeployError(
            f"{option} {path} holds {entry.relative_to(path)} ({why}): move it away or choose another {option}"
        )
    return path


def claim_work_dir(
    path: PathLike,
    option: str = "--out",
    inputs: Iterable[PathLike | None] = (),
    own_signs: Iterable[str] = OWN_FOLDER_SIGNS,
    create: bool = True,
) -> Path:
    """A folder that a command adds its files to (deploy, a plugin build): new, empty, or one eca-deploy made
    (holding one of `own_signs`), never one holding an input file. With `create`, made (with its marker)
    once the checks pass; return it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EcaDeployError(f"{option} {path} is a file: give a folder")
    blocker = file_in_the_way(path)
    if blocker is not None:
        raise EcaDeployError(f"cannot create {option} {path}: {blocker} is a file, not a folder")
    if path.is_dir():
        real = _real(path)
        for given in _inputs(inputs):
            if given.is_file() and _inside(_real(given), real):
                raise EcaDeployError(
                    f"{option} {path} holds the input {given}: eca-deploy writes its files there, choose another "
                    f"{option}"
                )
        own = any((path / sign).exists() for sign in (MARKER, *own_signs))
        if not own and any(path.iterdir()):
            raise EcaDeployError(
                f"{option} {path} already holds files that eca-deploy did not write: give a new or empty folder"
            )
    if not create:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EcaDeployError(f"cannot create {option} {path} ({exc.strerror or exc}): choose another folder") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise EcaDeployError(f"{option} {path} is not writable: choose another folder")
    if not (path / MARKER).exists():
        mark_artifact_dir(path)
    return path


def mark_artifact_dir(path: PathLike, files: dict[str, str | None] | None = None) -> Path:
    """Write the marker saying eca-deploy made `path`: `files` (relative path: sha256 or None) it wrote.

    With `files` None, every regular file now in `path` is listed with its hash.
    """
    folder = Path(path)
    if files is None:
        files = {
            str(p.relative_to(folder)): sha256_file(p)
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.name != MARKER
        }
    text = json.dumps({"written_by": "eca-deploy", "version": __version__, "files": files}, indent=1) + "\n"
    (folder / MARKER).write_text(text)
    return folder / MARKER


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
    record_written(path)
    return path


def temporary_beside(path: PathLike, suffix: str = ".tmp", option: str = "--output") -> tuple[int, Path]:
    """A new temporary file (descriptor, path) in `path`'s folder; one line when it cannot be made."""
    target = Path(path)
    check_parent(target, option)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=_parent(target))
    except OSError as exc:
        raise EcaDeployError(f"cannot write {target} ({exc.strerror or exc}): choose another {option}") from None
    return fd, Path(tmp)


@contextlib.contextmanager
def atomic_path(path: PathLike, mode: int = 0o666, option: str = "--output") -> Iterator[Path]:
    """Yield a temporary path beside `path`; publish it onto `path` only if the block succeeds."""
    target = Path(path)
    check_writable(target, option)
    fd, tmp_path = temporary_beside(target, option=option)
    os.close(fd)
    try:
        yield tmp_path
        publish(tmp_path, target, mode)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: PathLike, write: Callable[[Path], None], mode: int = 0o666) -> Path:
    """Call `write(tmp)` and move the result onto `path` atomically."""
    with atomic_path(path, mode) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
