"""The test suite's own xdist scheduler (tests/conftest.py): a worker that dies mid-run ends the run with that one
test failed and every other test run once, instead of a hang (pytest-xdist 3.8's loadscope requeues finished work);
the tests that share costly work go out as one unit, and units start longest first."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("xdist")

CHECKOUT = Path(__file__).resolve().parents[1]


def test_a_crashed_worker_fails_its_test_and_the_run_goes_on(tmp_path: Path) -> None:
    quick = "\n".join(f"def test_quick_{i}():\n    pass\n" for i in range(12))
    (tmp_path / "test_first.py").write_text(quick)
    (tmp_path / "test_dies.py").write_text(
        "import os\n\n" + quick + "\ndef test_dies():\n    os._exit(3)\n\n\ndef test_after():\n    pass\n"
    )
    (tmp_path / "test_last.py").write_text(quick)
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert re.search(r"\b1 failed, 37 passed\b", summary), done.stdout[-3000:]
    assert "test_dies" in done.stdout


def test_costly_shared_work_is_one_unit_across_modules(tmp_path: Path) -> None:
    from tests.conftest import SHARED_WORK, fixture_sharing_tests, unit_of

    work = next(iter(SHARED_WORK))
    costly = sorted(SHARED_WORK[work])[0]
    (tmp_path / "test_a.py").write_text(
        "import pytest\n\n\n@pytest.fixture(scope='module')\ndef made(" + costly + "):\n    return 1\n\n\n"
        "@pytest.fixture(scope='module')\ndef other():\n    return 2\n\n\n"
        "def test_made(made):\n    pass\n\n\ndef test_other_1(other):\n    pass\n\n\n"
        "def test_other_2(other):\n    pass\n\n\ndef test_alone():\n    pass\n"
    )
    (tmp_path / "test_b.py").write_text(f"def test_direct({costly}):\n    pass\n\n\ndef test_alone():\n    pass\n")
    units = fixture_sharing_tests(tmp_path)
    assert unit_of("tests/test_a.py::test_made", units) == work  # through a module fixture built on it
    assert unit_of("tests/test_b.py::test_direct[x]", units) == work  # directly, parametrized
    # the module's other fixture-sharing tests follow (one of them may use both), the rest go alone
    assert unit_of("tests/test_a.py::test_other_1", units) == unit_of("tests/test_a.py::test_other_2", units) == work
    assert unit_of("tests/test_b.py::test_alone", units) == "tests/test_b.py::test_alone"
    assert unit_of("tests/test_a.py::test_alone", units) == "tests/test_a.py::test_alone"


def test_units_start_longest_first_and_stay_together() -> None:
    from tests.conftest import LONG, fixture_sharing_tests, pytest_collection_modifyitems

    class Item:
        def __init__(self, nodeid: str) -> None:
            self.nodeid = nodeid

    units = fixture_sharing_tests(CHECKOUT / "tests")
    digits = sorted(f"{m}::{t}" for m, found in units.items() for t, unit in found.items() if unit == LONG[0])
    assert {m for m in (d.partition("::")[0] for d in digits)} >= {"tests/test_quantize.py", "tests/test_build.py"}
    module = "tests/test_onnxruntime_extension.py"  # a module unit of several tests
    many = sorted(f"{module}::{t}" for t, unit in units[module].items() if unit == module)[:2]
    ids = ["tests/test_x.py::test_quick", many[0], digits[0], "tests/test_docs.py::test_doc_commands_run[byom.md]",
           "tests/test_y.py::test_quick", many[1], digits[-1]]  # fmt: skip
    items = [Item(i) for i in ids]
    pytest_collection_modifyitems(None, items)  # type: ignore[arg-type]
    byom = "tests/test_docs.py::test_doc_commands_run[byom.md]"  # in LONG, after the digits network
    want = [digits[0], digits[-1], byom, *many, "tests/test_x.py::test_quick", "tests/test_y.py::test_quick"]
    assert [i.nodeid for i in items] == want


def test_an_xdist_worker_computes_on_one_thread(request: pytest.FixtureRequest) -> None:
    """make test runs two workers on two cores: each gets one compute thread (tests/conftest.py)."""
    if not hasattr(request.config, "workerinput"):
        pytest.skip("not an xdist worker (make test runs the suite with -n 2)")
    import numpy as np
    import onnxruntime
    import openvino
    import openvino.opset13 as ops
    import torch

    assert torch.get_num_threads() == 1
    assert onnxruntime.SessionOptions().intra_op_num_threads == 1
    x = ops.parameter([1, 4], np.float32, name="x")
    compiled = openvino.Core().compile_model(openvino.Model([ops.relu(x)], [x], "tiny"))
    assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1
