"""The runtime API on ONNX Runtime (CPU): preprocessing against the reference, classify, labels, batches."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from eca_deploy.data.images import Preprocessing, read_rgb, sample_image_paths
from eca_deploy.errors import EcaDeployError
from eca_deploy.exporters.metadata import ModelMetadata, write_metadata
from eca_deploy.runtime import Classifier, FramePreprocessor, Prediction
from eca_deploy.runtime.labels import imagenet_labels, labels_for
from eca_deploy.runtime.preprocess import compare_with_reference, resized_size
from tests.conftest import needs_tensorrt_gpu

RED, GREEN, BLUE = 0, 1, 2  # the colour model's classes


def tiny_onnx(path: Path, *, classes: int = 3, size: int = 32, batch: int | None = None, metadata: bool = True,
              dynamic_size: bool = False) -> Path:  # fmt: skip
    """A real (tiny) ONNX classifier: logits = 10 * mean normalised colour per channel (classes: R, G, B, ...)."""
    n: int | str = batch or "N"
    hw: list[int | str] = ["H", "W"] if dynamic_size else [size, size]
    weights = np.zeros((3, classes), np.float32)
    weights[np.arange(3), np.arange(3) % classes] = 10.0
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [n, 3, *hw])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [n, classes])],
        [onnx.numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if metadata:
        meta = ModelMetadata("tiny", (), classes, Preprocessing.for_size(size), 17, "test", "", {})
        write_metadata(model, meta)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def r18(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ECA-ResNet-18 (random weights, 1000 classes) exported at 64x64."""
    from eca_deploy.exporters import ExportOptions, export_onnx
    from eca_deploy.models import create_model
    from eca_deploy.onnx_io import save_onnx

    path = tmp_path_factory.mktemp("runtime") / "r18.onnx"
    save_onnx(export_onnx(create_model("eca_resnet18"), "eca_resnet18", ExportOptions(img_size=64)), path)
    return path


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [read_rgb(p) for p in sample_image_paths()]


def solid(rgb: tuple[int, int, int], h: int = 48, w: int = 64) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.uint8), (h, w, 3)).copy()


# -- labels -----------------------------------------------------------------------------------------------------


def test_imagenet_labels_ship_with_the_package(tmp_path: Path) -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000 and labels[0] == "tench" and labels[1] == "goldfish" and labels[999] == "toilet tissue"
    assert labels[281] == "tabby" and labels[817] == "sports car"
    assert labels_for(1000) == labels
    assert labels_for(4) == ("class 0", "class 1", "class 2", "class 3")
    names = tmp_path / "names.txt"
    names.write_text("red\ngreen\n\nblue\n")
    assert labels_for(3, names) == ("red", "green", "blue")
    with pytest.raises(EcaDeployError, match="has 3 names but the model has 4 classes"):
        labels_for(4, names)


# -- preprocessing ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 224])
def test_exact_preprocessing_is_the_reference(photos: list[np.ndarray], size: int) -> None:
    """The default resampler gives Preprocessing's pixels (PIL bilinear) within one grey level."""
    diff = compare_with_reference(photos, Preprocessing.for_size(size))
    assert diff.images == len(photos)
    assert diff.max_abs <= 1.01 / 255 / 0.224  # one grey level in the channel with the smallest std
    assert diff.mean_abs < 1e-3


def test_fast_preprocessing_is_close_and_beats_plain_linear(photos: list[np.ndarray]) -> None:
    import cv2

    prep = Preprocessing.for_size(64)
    fast = compare_with_reference(photos, prep, resize="fast")
    assert fast.mean_abs < 0.05  # about 1.5 grey levels on average

    def plain_linear(img: np.ndarray) -> np.ndarray:
        w, h = resized_size(img.shape[0], img.shape[1], prep)
        r = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        left, top = (w - prep.size) // 2, (h - prep.size) // 2
        return r[top : top + prep.size, left : left + prep.size]

    pp = FramePreprocessor(prep, "RGB")
    linear = np.mean([np.abs(pp.normalise(plain_linear(i)[None])[0] - prep(i)).mean() for i in photos])
    assert fast.mean_abs < 0.5 * linear  # INTER_LINEAR alone aliases at large reductions


def test_preprocess_layout_channel_order_and_normalisation() -> None:
    prep = Preprocessing.for_size(32)
    red_bgr = solid((0, 0, 255))  # red, as OpenCV stores it
    x = FramePreprocessor(prep, "BGR")(red_bgr)
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32 and x.flags.c_contiguous
    expected = (np.array([1.0, 0.0, 0.0]) - np.array(prep.mean)) / np.array(prep.std)
    np.testing.assert_allclose(x[0, :, 5, 5], expected, rtol=1e-6)
    np.testing.assert_array_equal(x, FramePreprocessor(prep, "RGB")(solid((255, 0, 0))))


def test_bad_frames_are_one_line_errors() -> None:
    pp = FramePreprocessor(Preprocessing.for_size(32))
    for frames, message in [
        (np.zeros((8, 8), np.uint8), "HxWx3"),
        (np.zeros((8, 8, 4), np.uint8), "HxWx3"),
        (np.zeros((8, 8, 3), np.float32), "uint8"),
        ([], "no frames"),
    ]:
        with pytest.raises(EcaDeployError, match=message):
            pp(frames)
    with pytest.raises(EcaDeployError, match="BGR or RGB"):
        FramePreprocessor(Preprocessing(), "YUV")
    with pytest.raises(EcaDeployError, match="exact' or 'fast"):
        FramePreprocessor(Preprocessing(), "BGR", "bicubic")


# -- Classifier -------------------------------------------------------------------------------------------------


def test_classify_one_frame_and_a_batch(r18: Path, photos: list[np.ndarray]) -> None:
    clf = Classifier.open(r18, channel_order="RGB")
    assert clf.backend == "onnxruntime-cpu" and clf.num_classes == 1000 and clf.input_size == 64
    assert clf.metadata is not None and Classifier.from_runner(clf.runner).metadata == clf.metadata
    (one,) = clf.classify(photos[0])
    assert len(one) == 5 and all(isinstance(p, Prediction) for p in one)
    scores = [p.score for p in one]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-6
    assert all(p.label == imagenet_labels()[p.class_id] for p in one)
    batch = clf.classify(photos)  # frames of different sizes
    assert len(batch) == len(photos)
    for frame, preds in zip(photos, batch, strict=True):
        alone = clf.classify(frame)[0]
        assert [p.class_id for p in preds] == [p.class_id for p in alone]
        np.testing.assert_allclose([p.score for p in preds], [p.score for p in alone], rtol=1e-4)
    stacked = np.stack([FramePreprocessor(clf.preprocessor.prep).crop(p) for p in photos[:4]])  # NxHxWx3 array
    assert [r[0].class_id for r in clf.classify(stacked)] == [r[0].class_id for r in clf.classify(list(stacked))]


def test_softmax_scores_over_all_classes_sum_to_one(r18: Path, photos: list[np.ndarray]) -> None:
    clf = Classifier.open(r18, top_k=1000)
    preds = clf.classify(photos[:3])
    for row in preds:
        assert len(row) == 1000 and sum(p.score for p in row) == pytest.approx(1.0, abs=1e-4)
        assert sorted(p.class_id for p in row) == list(range(1000))


def test_predictions_match_the_reference_preprocessing(r18: Path, photos: list[np.ndarray]) -> None:
    """Logits from camera frames equal those from `Preprocessing`, the pipeline that `check` verifies."""
    from eca_deploy.metrics import compare

    clf = Classifier.open(r18, channel_order="RGB")
    prep = clf.preprocessor.prep
    reference = clf.infer(np.stack([prep(p) for p in photos]))
    agreement = compare(reference, clf.infer(clf.preprocess(photos)))
    assert agreement.cosine_min > 0.9999 and agreement.top1_agreement == 1.0


def test_bgr_and_rgb_frames_agree_when_the_order_is_set(tmp_path: Path, r18: Path, photos: list[np.ndarray]) -> None:
    colour = tiny_onnx(tmp_path / "colour.onnx")
    bgr = Classifier.open(colour)  # OpenCV's order is the default
    rgb = Classifier.open(colour, channel_order="RGB")
    red_rgb = solid((230, 20, 10))
    assert bgr.classify(red_rgb[..., ::-1])[0][0].class_id == RED
    assert rgb.classify(red_rgb)[0][0].class_id == RED
    assert bgr.classify(red_rgb)[0][0].class_id == BLUE  # the wrong order swaps red and blue
    real_bgr, real_rgb = Classifier.open(r18), Classifier.open(r18, channel_order="RGB")
    a = real_bgr.classify([p[..., ::-1] for p in photos[:4]])
    b = real_rgb.classify(photos[:4])
    assert [[p.class_id for p in r] for r in a] == [[p.class_id for p in r] for r in b]


def test_static_batch_is_padded_and_split(tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "b4.onnx", batch=4)
    clf = Classifier.open(model, top_k=2)
    assert (clf.min_batch, clf.max_batch) == (4, 4)
    frames = [solid(c) for c in [(250, 0, 0), (0, 250, 0), (0, 0, 250)] * 3]  # 9 frames: 4 + 4 + 1 (padded)
    preds = clf.classify([f[..., ::-1] for f in frames])
    assert [p[0].class_id for p in preds] == [RED, GREEN, BLUE] * 3
    assert [p[0].label for p in preds[:3]] == ["class 0", "class 1", "class 2"]


def test_labels_file_and_top_k(tmp_path: Path) -> None:
    names = tmp_path / "colours.txt"
    names.write_text("red\ngreen\nblue\n")
    clf = Classifier.open(tiny_onnx(tmp_path / "c.onnx"), top_k=10, labels=names, channel_order="RGB")
    (preds,) = clf.classify(solid((10, 240, 10)))
    assert [p.label for p in preds] == ["green", "blue", "red"]  # normalised red is the lowest here
    assert len(preds) == 3  # top_k is capped at the number of classes


def test_model_without_metadata(tmp_path: Path) -> None:
    plain = Classifier.open(tiny_onnx(tmp_path / "plain.onnx", metadata=False, size=40))
    assert plain.input_size == 40 and plain.preprocessor.prep.mean == Preprocessing().mean  # ImageNet defaults
    with pytest.raises(EcaDeployError, match="dynamic input size"):
        Classifier.open(tiny_onnx(tmp_path / "dyn.onnx", metadata=False, dynamic_size=True))


def test_open_errors(tmp_path: Path) -> None:
    colour = tiny_onnx(tmp_path / "colour.onnx")
    with pytest.raises(EcaDeployError, match="does not exist"):
        Classifier.open(tmp_path / "missing.onnx")
    with pytest.raises(EcaDeployError, match="top_k"):
        Classifier.open(colour, top_k=0)
    with pytest.raises(EcaDeployError, match="unknown provider"):
        Classifier.open(colour, provider="npu")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(EcaDeployError, match="not an ONNX model"):
        Classifier.open(tmp_path / "junk.onnx")


def test_one_classifier_shared_by_threads(r18: Path, photos: list[np.ndarray]) -> None:
    clf = Classifier.open(r18, channel_order="RGB")
    expected = [r[0].class_id for r in clf.classify(photos)]
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            results[i] = [clf.classify(p)[0][0].class_id for p in photos]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(r == expected for r in results.values())


def test_timings_are_reported(tmp_path: Path) -> None:
    clf = Classifier.open(tiny_onnx(tmp_path / "c.onnx"))
    preds, times = clf.classify_timed([solid((1, 2, 3), 480, 640)] * 3)
    assert len(preds) == 3 and times.preprocess_ms > 0 and times.inference_ms > 0 and times.postprocess_ms >= 0
    assert times.total_ms == pytest.approx(times.preprocess_ms + times.inference_ms + times.postprocess_ms)


# -- bench --end-to-end -----------------------------------------------------------------------------------------


def test_bench_end_to_end(cli, r18: Path, tmp_path: Path) -> None:
    out = tmp_path / "e2e.json"
    result = cli("bench", "--onnx", r18, "--end-to-end", "--batch", "1,3", "--warmup", "0s", "--iterations", "4",
                 "--json", out, "--csv", tmp_path / "e2e.csv")  # fmt: skip
    assert result.code == 0, result.stderr
    assert "preprocess" in result.stdout and "postprocess" in result.stdout  # stage columns
    (entry,) = json.loads(out.read_text())["models"]
    for r in entry["results"]:
        stages = r["stages_ms"]
        assert set(stages) == {"preprocess_ms", "inference_ms", "postprocess_ms"} and stages["preprocess_ms"] > 0
        assert sum(stages.values()) <= r["latency_ms"]["max"] + 1e-6
    plain = cli("bench", "--onnx", r18, "--batch", "1", "--warmup", "0s", "--iterations", "2")
    assert plain.code == 0 and "preprocess" not in plain.stdout


# -- TensorRT ---------------------------------------------------------------------------------------------------


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_tensorrt_gpu
def test_engine_classifies_like_onnx_and_serialises_threads(cli, r18: Path, photos: list[np.ndarray],
                                                            tmp_path: Path) -> None:  # fmt: skip
    engine = tmp_path / "r18.plan"
    built = cli("build", "--onnx", r18, "--output", engine, "--batch", "1:4:8", "--plugin", "off")
    assert built.code == 0, built.stderr
    onnx_clf = Classifier.open(r18, channel_order="RGB")
    trt_clf = Classifier.open(engine, channel_order="RGB")
    assert (trt_clf.min_batch, trt_clf.max_batch) == (1, 8) and trt_clf.backend == "tensorrt"
    a = onnx_clf.infer(onnx_clf.preprocess(photos))
    b = trt_clf.infer(trt_clf.preprocess(photos))  # 12 frames: split into 8 + 4
    np.testing.assert_allclose(a, b, atol=1e-3 * max(1.0, float(np.abs(a).max())))
    results: list[list[int]] = []
    threads = [threading.Thread(target=lambda: results.append([r[0].class_id for r in trt_clf.classify(photos)]))
               for _ in range(3)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and all(r == results[0] for r in results)
