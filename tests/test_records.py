"""Results as types (pipeline.records, deploy.summary): every record through its JSON and back is itself."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eca_deploy.deploy.report import SummaryRow
from eca_deploy.pipeline.records import (
    BatchRecord,
    CheckRecord,
    Latency,
    OutputRecord,
    Record,
    Spread,
    TacticCandidate,
    TacticRecord,
)

finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
names = st.text("abcdefgh_.", min_size=1, max_size=8)
rates = st.lists(finite, min_size=1, max_size=4).map(tuple)
latency = st.builds(Latency, min=finite, mean=finite, median=finite, p90=finite, p95=finite, p99=finite, max=finite)
tactic = st.builds(TacticRecord, chosen=names, runner_up=st.none() | names, margin=st.none() | finite,
                   beyond_noise=st.booleans(), tied=st.lists(names, max_size=2).map(tuple), text=names,
                   candidates=st.dictionaries(names, st.builds(TacticCandidate, images_per_s=finite,
                                                               rounds=st.none() | rates), max_size=3))  # fmt: skip
batch = st.builds(BatchRecord, batch=st.integers(1, 64), iterations=st.integers(1, 99), total_s=finite,
                  images_per_s=finite, inferences_per_s=finite, latency_ms=latency, rounds=rates,
                  spread=st.none() | st.builds(Spread, min=finite, max=finite, relative=finite),
                  tactic=st.none() | tactic, ratio_to_first=st.none() | rates)  # fmt: skip
output = st.builds(OutputRecord, images=st.integers(1, 64), max_abs_error=st.none() | finite, cosine_min=finite,
                   top1_agreement=st.none() | finite, worst_images=st.lists(names, max_size=3).map(tuple),
                   kind=st.sampled_from(["logits", "tensor"]), passed=st.booleans(),
                   failures=st.lists(names, max_size=2).map(tuple), note=st.none() | names)  # fmt: skip
by_batch = st.dictionaries(st.integers(1, 64), finite, min_size=1, max_size=3)
row = st.builds(SummaryRow, precision=st.sampled_from(["fp32", "fp16", "int8"]), runtime=st.none() | names,
                passed=st.booleans(), failures=st.lists(names, max_size=2).map(tuple), output=names,
                top1_agreement=st.none() | finite, cosine_min=finite, max_abs_error=st.none() | finite,
                mean_abs_error=st.none() | finite, notes=st.lists(names, max_size=2).map(tuple), p50_ms=by_batch,
                p99_ms=by_batch, latency_ms=st.dictionaries(st.integers(1, 64), latency, max_size=2),
                images_per_s=by_batch, rounds=st.dictionaries(st.integers(1, 64), rates, max_size=2),
                throughput=st.dictionaries(st.integers(1, 64), names, max_size=2), per_image=st.none(),
                outputs=st.dictionaries(names, output, min_size=1, max_size=3),
                input_size=st.none() | st.tuples(st.integers(1, 999), st.integers(1, 999)), label=names)  # fmt: skip


def through_json(record: Record) -> Record:
    return type(record).from_dict(json.loads(json.dumps(record.as_dict())))


@settings(max_examples=60, deadline=None)
@given(st.one_of(batch, output, row))
def test_every_record_survives_its_json(record: Record) -> None:
    assert type(record).from_dict(record.as_dict()) == record
    assert through_json(record) == record


@settings(max_examples=30, deadline=None)
@given(batch)
def test_keys_written_only_sometimes_stay_out_when_empty(record: BatchRecord) -> None:
    """bench adds `tactic` and the ratios to some results only: a record without them writes no such key."""
    data = record.as_dict()
    for key in ("tactic", "ratio_to_first", "ratio"):
        assert (key in data) == (getattr(record, key) is not None)
    assert list(data)[:10] == ["batch", "iterations", "total_s", "images_per_s", "inferences_per_s", "latency_ms",
                               "split_ms", "stages_ms", "rounds", "spread"]  # fmt: skip


def test_records_are_frozen_and_checked_by_name() -> None:
    check = CheckRecord(target="m.onnx", backend="onnxruntime-cpu", model="m", precision="fp32", passed=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        check.passed = False  # type: ignore[misc]
    with pytest.raises(TypeError, match="pased"):
        CheckRecord(target="m.onnx", backend="b", model="m", precision="fp32", pased=True)  # type: ignore[call-arg]
    assert CheckRecord.from_dict({**check.as_dict(), "a_key_from_elsewhere": 1}) == check  # unknown keys: ignored
