"""The letterbox preprocessing against ultralytics' own LetterBox, its geometry, phrase and metadata round trip."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from eca_deploy.data.images import LetterboxBox, Preprocessing, read_rgb, sample_image_paths
from eca_deploy.errors import EcaDeployError
from eca_deploy.exporters.metadata import ModelMetadata, read_metadata
from tests.conftest_yolo import needs_ultralytics

# Odd sizes: landscape, portrait, tiny, thin, exact, and ones whose padding is odd (rounding of the two sides).
ODD_SIZES = [(97, 203), (333, 121), (7, 5), (41, 1000), (160, 160), (161, 159), (479, 641), (1, 3)]


def _image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3), np.float32)
    return np.clip(ramp * 0.5 + rng.integers(0, 128, (h, w, 3)), 0, 255).astype(np.uint8)


def _ultralytics_input(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """ultralytics' predictor on a BGR frame (as cv2.imread gives): LetterBox, BGR -> RGB, HWC -> CHW, / 255."""
    from ultralytics.data.augment import LetterBox

    letterboxed = LetterBox(shape, auto=False, stride=32)(image=np.ascontiguousarray(rgb[..., ::-1]))
    return np.ascontiguousarray(letterboxed[..., ::-1].transpose(2, 0, 1)).astype(np.float32) / 255.0


@needs_ultralytics
@pytest.mark.parametrize("shape", [(160, 160), (160, 224), (224, 160)])
def test_letterbox_matches_ultralytics_bit_for_bit(shape: tuple[int, int]) -> None:
    prep = Preprocessing.yolo(*shape)
    images = [_image(h, w, i) for i, (h, w) in enumerate(ODD_SIZES)] + [read_rgb(p) for p in sample_image_paths()[:3]]
    for rgb in images:
        ours = prep(rgb)
        theirs = _ultralytics_input(rgb, shape)
        assert ours.shape == theirs.shape == (3, *shape)
        assert np.array_equal(ours, theirs), f"{rgb.shape}: max diff {np.abs(ours - theirs).max()}"


@needs_ultralytics
def test_letterbox_geometry_is_ultralytics_and_maps_boxes_back() -> None:
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils.ops import scale_boxes

    for h, w in ODD_SIZES:
        params = LetterBox((160, 224), auto=False).get_params({"img": np.zeros((h, w, 3), np.uint8)})
        box = LetterboxBox.of(h, w, 160, 224)
        assert (box.width, box.height) == params["new_unpad"]
        assert (box.left, box.top) == (params["left"], params["top"])
        assert box.left + box.width + params["right"] == 224 and box.top + box.height + params["bottom"] == 160
        boxes = np.array([[10.0, 20.0, 150.0, 140.0], [0.0, 0.0, 224.0, 160.0]])
        ours = Preprocessing.yolo(160, 224).placement(h, w).to_source(boxes)
        theirs = scale_boxes((160, 224), boxes.copy(), (h, w))  # clipped to the frame
        assert np.allclose(ours.clip(0, [w, h, w, h]), theirs, atol=1e-6)


def test_letterbox_pads_with_grey_and_keeps_the_content() -> None:
    prep = Preprocessing.yolo(64)
    white = np.full((32, 64, 3), 255, np.uint8)  # half the height: 16 rows of grey above and below
    x = prep(white)
    assert x.shape == (3, 64, 64)
    assert np.allclose(x[:, :16], 114 / 255) and np.allclose(x[:, 48:], 114 / 255)
    assert np.allclose(x[:, 16:48], 1.0)
    other = Preprocessing.yolo(64, pad_value=0)(white)
    assert np.allclose(other[:, :16], 0.0)


def test_describe_says_which_preprocessing() -> None:
    assert Preprocessing.yolo(320).describe() == "letterbox 320x320, grey 114, RGB/255"
    assert Preprocessing.yolo(320, 256).describe() == "letterbox 320x256, grey 114, RGB/255"
    assert Preprocessing().describe() == "resize 256, centre crop 224x224, ImageNet mean/std"
    bicubic = Preprocessing.for_size(288, crop_pct=0.95, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3)
    assert bicubic.describe() == "resize 303, centre crop 288x288, bicubic, RGB, mean 0.5,0.5,0.5 std 0.5,0.5,0.5"


def test_letterbox_sizes_and_bad_values() -> None:
    prep = Preprocessing.yolo(160)
    assert prep.at_size(320) == Preprocessing.yolo(320)
    assert prep.at_hw((96, 128)).hw == (96, 128) and prep.at_hw((96, 128)).letterbox
    with pytest.raises(EcaDeployError, match="resize mode"):
        Preprocessing(resize_mode="stretch")
    with pytest.raises(EcaDeployError, match="OpenCV"):
        Preprocessing(resize_mode="letterbox", interpolation="hamming")
    with pytest.raises(EcaDeployError, match="between 0 and 255"):
        Preprocessing(resize_mode="letterbox", pad_value=300)


def _meta(prep: Preprocessing) -> ModelMetadata:
    return ModelMetadata("m", (3,), 10, prep, 17, "torch", "random(seed=0)", {"eca_deploy": "0"})


def test_metadata_records_the_resize_mode() -> None:
    for prep in (Preprocessing.yolo(160, 224), Preprocessing.yolo(96, pad_value=0), Preprocessing.for_size(192)):
        assert ModelMetadata.from_props(_meta(prep).to_props()).preprocessing == prep
    assert _meta(Preprocessing.yolo(160)).to_props()["resize_mode"] == "letterbox"


def test_files_without_the_key_are_crop() -> None:
    props = _meta(Preprocessing.for_size(160)).to_props()
    del props["resize_mode"]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 160, 160])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 160, 160])])  # fmt: skip
    model = helper.make_model(graph)
    for key, value in props.items():
        model.metadata_props.add(key=f"eca_deploy.{key}", value=value)
    meta = read_metadata(onnx.load_from_string(model.SerializeToString()))
    assert meta is not None and meta.preprocessing.resize_mode == "crop" and not meta.preprocessing.letterbox
