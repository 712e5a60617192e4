"""Byte accounting of the ECA formulations (eca_deploy/plugin/traffic.py) and its table in docs/plugin.md."""

from __future__ import annotations

import json
from pathlib import Path

from eca_deploy.plugin.traffic import EcaLayer, eca_layers, traffic_markdown
from tests.conftest import assert_one_line_error

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugin.md"


def test_formulations_of_one_layer() -> None:
    block = EcaLayer("m", 0, channels=256, height=56, width=56, k=3, residual="add+relu")
    s = 32 * 256 * 56 * 56 * 2
    assert block.tensor_bytes(32, "fp16") == s
    assert block.bytes(32, "fp16") == {"native": 4 * s, "plugin": 5 * s, "plugin_residual": 3 * s, "floor": 3 * s}
    alone = EcaLayer("m", 0, channels=16, height=112, width=112, k=1, residual="none")
    s = 16 * 112 * 112 * 4
    assert alone.bytes(1, "fp32") == {"native": 3 * s, "plugin": 2 * s, "plugin_residual": 2 * s, "floor": 2 * s}


def test_layers_of_the_zoo_models() -> None:
    resnet = eca_layers("eca_resnet50")
    assert [(x.channels, x.height, x.k) for x in resnet] == (
        [(256, 56, 3)] * 3 + [(512, 28, 5)] * 4 + [(1024, 14, 5)] * 6 + [(2048, 7, 7)] * 3
    )
    assert {x.residual for x in resnet} == {"add+relu"}
    mobilenet = eca_layers("eca_mobilenetv2")
    assert len(mobilenet) == 17 and mobilenet[0].channels == 16 and mobilenet[0].height == 112
    # stride-1 blocks with equal in/out channels add their input: 1, 2, 3, 2, 2 of the 7 stages' blocks
    assert sum(x.residual == "add" for x in mobilenet) == 10
    assert {x.k for x in mobilenet if x.channels < 96} == {1} and {x.k for x in mobilenet if x.channels >= 96} == {3}


def test_docs_table_is_the_computed_one() -> None:
    assert traffic_markdown() in DOC.read_text(), "docs/plugin.md: rerun `eca-deploy plugin info --bytes`"


def test_cli_bytes(cli) -> None:
    result = cli("plugin", "info", "--bytes", "--dtype", "fp32", "--json")
    assert result.code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 33 and rows[0]["model"] == "eca_mobilenetv2" and rows[0]["dtype"] == "fp32"
    assert rows[0]["native_b1"] == 3 * 16 * 112 * 112 * 4
    table = cli("plugin", "info", "--bytes")
    assert table.code == 0 and "| 1-3 | 256x56x56 | 3 | add+relu |" in table.stdout
    assert_one_line_error(cli("plugin", "info", "--bytes", "--dtype", "int8"), "--dtype")
