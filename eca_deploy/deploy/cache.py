"""Stage records for `deploy`: a stage is up to date when its inputs, options and outputs are unchanged.

Each finished stage writes `<out>/.stages/<name>.json` with a key (the sha256 of its options and the
sha256 of every input file) and the sha256 of every output. A rerun skips a stage whose key matches and
whose outputs still hash the same; `--force` ignores the records. A stage interrupted half-way has no
record, so the next run redoes it and everything after it whose inputs changed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eca_deploy import __version__
from eca_deploy.fileio import atomic_write_text, sha256_file

RECORDS = ".stages"


def stage_key(name: str, options: dict[str, Any], inputs: Sequence[Path]) -> str:
    payload = {
        "stage": name,
        "eca_deploy": __version__,
        "options": options,
        "inputs": [[p.name, sha256_file(p)] for p in inputs],  # a list: names may repeat across folders
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class StageOutcome:
    name: str
    skipped: bool
    seconds: float
    outputs: list[Path]
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageCache:
    out: Path
    force: bool = False

    def _record_path(self, name: str) -> Path:
        return self.out / RECORDS / f"{name}.json"

    def _up_to_date(self, name: str, key: str) -> dict[str, Any] | None:
        path = self._record_path(name)
        if self.force or not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if record.get("key") != key:
            return None
        for rel, digest in record.get("outputs", {}).items():
            target = self.out / rel
            if not target.is_file() or sha256_file(target) != digest:
                return None
        return record

    def run(
        self,
        name: str,
        options: dict[str, Any],
        inputs: Sequence[Path],
        outputs: Sequence[Path],
        work: Callable[[], dict[str, Any] | None],
    ) -> StageOutcome:
        """Run `work()` unless the stage is up to date; `work` writes `outputs` and may return details."""
        key = stage_key(name, options, inputs)
        record = self._up_to_date(name, key)
        if record is not None:
            return StageOutcome(name, True, 0.0, list(outputs), record.get("detail", {}))
        start = time.perf_counter()
        detail = work() or {}
        seconds = time.perf_counter() - start
        (self.out / RECORDS).mkdir(parents=True, exist_ok=True)
        record = {
            "stage": name,
            "key": key,
            "options": options,
            "inputs": [str(p) for p in inputs],
            "outputs": {str(p.relative_to(self.out)): sha256_file(p) for p in outputs},
            "seconds": round(seconds, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "detail": detail,
        }
        atomic_write_text(self._record_path(name), json.dumps(record, indent=2, default=str) + "\n")
        return StageOutcome(name, False, seconds, list(outputs), detail)
