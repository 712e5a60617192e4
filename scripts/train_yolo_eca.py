"""Train a small YOLOv8n-ECA with ultralytics' own trainer, then measure every eca-deploy artifact of it.

    python scripts/train_yolo_eca.py --output DIR [--epochs 16] [--train 640] [--val 300] [--stage all]

The task: scikit-learn's 8x8 handwritten digits (80% of them for training canvases, the other 20% for held-out
ones), scaled to 16..48 px and pasted (1 to 4 per canvas, never overlapping) at random places on 160x160
canvases of dim noise, written as a YOLO-format folder (`DIR/data/images/{train,val}`, `labels/...`,
`data.yaml`) with tight boxes around each digit's ink; seeded. The network is ultralytics' yolov8n with an ECA
layer after every C2f block (`examples/yolov8n-eca.yaml` when present, otherwise `eca_deploy.models.eca.ECALayer`
inserted after each C2f), 10 classes, trained on the CPU by ultralytics' DetectionTrainer (seeded,
deterministic, ultralytics' default augmentation without flips; 16 epochs took 43 minutes on 2 CPU cores
shared with other jobs).

Then (stage `measure`): ultralytics' own ONNX export of the trained weights (FP32), `eca-deploy fuse`,
`eca-deploy convert --fp16`, `eca-deploy quantize` (INT8, default calibration on the training canvases), two
INT8 models for comparison with the head's decoding quantized as well (letterbox and ImageNet calibration), and
every ONNX is scored by ultralytics' own `val` on the held-out canvases (mAP50-95, mAP50) beside
`eca-deploy check --reference-onnx` against the FP32 ONNX on the same canvases. Results go to
`DIR/results.json` and a Markdown table on stdout (the table in docs/precision.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("YOLO_OFFLINE", "1")

CANVAS = 160
SIZES = (16, 48)  # digit side in pixels, inclusive
PER_CANVAS = (1, 4)
NOISE = 40  # background noise amplitude (0..255)
NUM_CLASSES = 10
HELD_OUT = 0.2
SEED = 0
YAML = ROOT / "examples" / "yolov8n-eca.yaml"


# --- the data set -------------------------------------------------------------------------------------------


def _digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits as float 0..1 images [N, 8, 8] and labels, shuffled (seeded)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(SEED).permutation(len(data.target))
    return (data.images[order] / 16.0).astype(np.float32), data.target[order].astype(np.int64)


def _paste(canvas: np.ndarray, digit: np.ndarray, rng: np.random.Generator, taken: list) -> tuple | None:
    """Paste one scaled digit where it overlaps nothing already there; its tight box (x0, y0, x1, y1) or None."""
    from PIL import Image

    size = int(rng.integers(SIZES[0], SIZES[1] + 1))
    img = np.asarray(Image.fromarray((digit * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR))
    ink = np.argwhere(img > 64)
    if len(ink) == 0:
        return None
    (r0, c0), (r1, c1) = ink.min(0), ink.max(0) + 1
    for _ in range(20):
        y, x = (int(v) for v in rng.integers(0, CANVAS - size + 1, size=2))
        box = (x + c0, y + r0, x + c1, y + r1)
        if all(box[2] <= t[0] or t[2] <= box[0] or box[3] <= t[1] or t[3] <= box[1] for t in taken):
            colour = rng.uniform(0.6, 1.0, size=3).astype(np.float32)
            region = canvas[y : y + size, x : x + size]
            np.maximum(region, img[..., None].astype(np.float32) * colour, out=region)
            return box
    return None


def make_dataset(folder: Path, train: int, val: int) -> Path:
    """Write the YOLO-format data set (PNG canvases, label files, data.yaml); returns the data.yaml path."""
    from PIL import Image

    images, labels = _digit_images()
    split = int(len(labels) * (1 - HELD_OUT))
    parts = {"train": (train, images[:split], labels[:split]), "val": (val, images[split:], labels[split:])}
    for part, (count, digits, classes) in parts.items():
        rng = np.random.default_rng([SEED, 1 if part == "train" else 2])
        (folder / "images" / part).mkdir(parents=True, exist_ok=True)
        (folder / "labels" / part).mkdir(parents=True, exist_ok=True)
        for n in range(count):
            canvas = rng.uniform(0, NOISE, size=(CANVAS, CANVAS, 3)).astype(np.float32)
            rows, taken = [], []
            for _ in range(int(rng.integers(PER_CANVAS[0], PER_CANVAS[1] + 1))):
                k = int(rng.integers(len(classes)))
                box = _paste(canvas, digits[k], rng, taken)
                if box is None:
                    continue
                taken.append(box)
                x0, y0, x1, y1 = box
                cx, cy, w, h = (x0 + x1) / 2 / CANVAS, (y0 + y1) / 2 / CANVAS, (x1 - x0) / CANVAS, (y1 - y0) / CANVAS
                rows.append(f"{classes[k]} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
            Image.fromarray(canvas.clip(0, 255).astype(np.uint8)).save(folder / "images" / part / f"{n:05d}.png")
            (folder / "labels" / part / f"{n:05d}.txt").write_text("\n".join(rows) + "\n")
    names = "\n".join(f"  {i}: '{i}'" for i in range(NUM_CLASSES))
    data_yaml = folder / "data.yaml"
    data_yaml.write_text(f"path: {folder.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return data_yaml


# --- the model and its training -----------------------------------------------------------------------------


def _model_yaml() -> str:
    """The YOLOv8n-ECA YAML when the project ships one (ECA registered for ultralytics), else plain yolov8n."""
    if YAML.exists():
        from eca_deploy.models.ultralytics import register

        register()  # ECA for ultralytics' YAML parser
        return str(YAML)
    return "yolov8n.yaml"


class C2fECA(torch.nn.Module):
    """A C2f block followed by the project's ECA gate, keeping ultralytics' routing attributes (`f`, `i`, `type`,
    `np`), so layer indices and skip connections are unchanged. Defined at module level: checkpoints pickle it."""

    def __init__(self, block: torch.nn.Module) -> None:
        from eca_deploy.models.eca import ECALayer, adaptive_kernel_size

        super().__init__()
        self.block = block
        channels = block.cv2.conv.out_channels
        self.eca = ECALayer(channels, adaptive_kernel_size(channels))
        for attr in ("f", "i", "type", "np"):
            setattr(self, attr, getattr(block, attr))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.eca(self.block(x))


def insert_eca(model: torch.nn.Module) -> int:
    """Put the project's ECA layer after every C2f of an ultralytics DetectionModel (when the YAML has none)."""
    from ultralytics.nn.modules import C2f

    count = 0
    for index, module in enumerate(model.model):
        if isinstance(module, C2f):
            model.model[index] = C2fECA(module)
            count += 1
    return count


def train(data_yaml: Path, out: Path, epochs: int, batch: int) -> Path:
    """Train with ultralytics' own DetectionTrainer on the CPU; returns the best weights (best.pt)."""
    from ultralytics import YOLO
    from ultralytics.models.yolo.detect import DetectionTrainer

    model_yaml = _model_yaml()
    programmatic = model_yaml == "yolov8n.yaml"

    class EcaTrainer(DetectionTrainer):
        def get_model(self, cfg=None, weights=None, verbose=True):
            model = super().get_model(cfg=cfg, weights=weights, verbose=verbose)
            if programmatic:
                insert_eca(model)
            return model

    YOLO(model_yaml).train(
        trainer=EcaTrainer,
        data=str(data_yaml),
        epochs=epochs,
        imgsz=CANVAS,
        batch=batch,
        device="cpu",
        workers=0,
        seed=SEED,
        deterministic=True,
        project=str(out),
        name="train",
        exist_ok=True,
        plots=False,
        amp=False,
        fliplr=0.0,  # a mirrored digit is another glyph
        mosaic=1.0,
        close_mosaic=max(1, epochs // 5),
        val=False,  # validate once, after the last epoch (every epoch would cost a third of the time)
        verbose=False,
    )
    return out / "train" / "weights" / "best.pt"


# --- measurement --------------------------------------------------------------------------------------------


def export_onnx(weights: Path, out: Path) -> Path:
    """ultralytics' own ONNX export of the trained weights (FP32, static 1x3x160x160, no simplifier)."""
    from ultralytics import YOLO

    path = Path(YOLO(str(weights)).export(format="onnx", imgsz=CANVAS, simplify=False, dynamic=False, device="cpu"))
    target = out / "yolo.onnx"
    path.replace(target)
    return target


def cli(*args: str) -> subprocess.CompletedProcess:
    """Run the eca-deploy command line as a user would (same interpreter, this checkout first on the path)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "eca_deploy.cli.main", *args], capture_output=True, text=True, env=env, check=False
    )


@contextlib.contextmanager
def plain_qdq_sessions() -> Iterator[None]:
    """ONNX Runtime sessions with graph optimisations off while inside: Q/DQ pairs computed as written (TensorRT's
    arithmetic) instead of ORT's own fused int8 kernels (docs/precision.md)."""
    import onnxruntime as ort

    original = ort.InferenceSession

    def session(path: object, sess_options: object = None, *args: object, **kwargs: object) -> object:
        options = sess_options or ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return original(path, options, *args, **kwargs)

    ort.InferenceSession = session
    try:
        yield
    finally:
        ort.InferenceSession = original


def val_map(onnx_path: Path, data_yaml: Path, plain_qdq: bool = False) -> tuple[float, float]:
    """ultralytics' own `val` of one ONNX on the held-out canvases: (mAP50-95, mAP50)."""
    from ultralytics import YOLO

    with plain_qdq_sessions() if plain_qdq else contextlib.nullcontext():
        metrics = YOLO(str(onnx_path), task="detect").val(
            data=str(data_yaml), imgsz=CANVAS, batch=1, device="cpu", plots=False, verbose=False, workers=0
        )
    return float(metrics.box.map), float(metrics.box.map50)


def check(reference: Path, candidate: Path, images: Path) -> dict:
    """`eca-deploy check --reference-onnx` of one artifact against the FP32 ONNX, as --json."""
    result = cli("check", "--onnx", str(candidate), "--reference-onnx", str(reference), "--images", str(images),
                 "--json")  # fmt: skip
    try:
        payload = json.loads(result.stdout)
    except json.JSONDecodeError:
        payload = {"error": (result.stderr or result.stdout).strip().splitlines()[-1:]}
    payload["exit_code"] = result.returncode
    return payload


def head_quantized_int8(fused: Path, calib: Path, output: Path, imagenet: bool) -> None:
    """INT8 as eca-deploy's quantizer made it before it kept a head's decoding in float: the same quantizer with
    the decoding nodes quantized too; with `imagenet`, calibrated on ImageNet-preprocessed crops as well (what
    quantize did with an ONNX whose YOLO preprocessing it could not read). For comparison only."""
    import eca_deploy.precision.qdq as qdq
    from eca_deploy.data.images import Preprocessing
    from eca_deploy.pipeline.quantize import run_quantize
    from eca_deploy.precision.quantize import QuantizeOptions

    kept = qdq.decoding_nodes
    qdq.decoding_nodes = lambda model: set()
    try:
        adjust = (lambda prep: Preprocessing.for_size(CANVAS)) if imagenet else None
        options = QuantizeOptions(method="percentile", use_cache=False)  # `quantize`'s default method
        run_quantize(fused, calib, output, options, verify=False, adjust=adjust)
    finally:
        qdq.decoding_nodes = kept


def measure(out: Path, data_yaml: Path, weights: Path, calib_count: int | None) -> list[dict]:
    fp32 = export_onnx(weights, out)
    calib = out / "data" / "images" / "train"
    fused, fp16, int8 = out / "yolo.fused.onnx", out / "yolo.fused.fp16.onnx", out / "yolo.fused.int8.onnx"
    steps = [
        ("fuse", str(fp32), "--output", str(fused)),
        ("convert", "--fp16", "--onnx", str(fused), "--output", str(fp16)),
        ("quantize", "--onnx", str(fused), "--calib-images", str(calib))
        + (("--calib-count", str(calib_count)) if calib_count else ())
        + ("--keep-failed", "--output", str(int8)),
    ]
    commands = []
    for step in steps:
        result = cli(*step)
        commands.append({"command": "eca-deploy " + " ".join(step), "exit_code": result.returncode,
                         "stdout": result.stdout[-2000:], "stderr": result.stderr[-2000:]})  # fmt: skip
        print(f"$ eca-deploy {' '.join(step)}  -> exit {result.returncode}", flush=True)
        if result.returncode not in (0, 1):
            print(result.stderr, file=sys.stderr)
    head_yolo, head_imagenet = out / "yolo.fused.int8-head.onnx", out / "yolo.fused.int8-head-imagenet.onnx"
    head_quantized_int8(fused, calib, head_yolo, imagenet=False)
    head_quantized_int8(fused, calib, head_imagenet, imagenet=True)
    artifacts = [
        ("ultralytics' ONNX (FP32)", fp32, False),
        ("fused (`fuse`)", fused, False),
        ("FP16 (`convert --fp16`)", fp16, False),
        ("INT8 (`quantize`, default: head decoding in float, YOLO letterbox calibration)", int8, True),
        ("INT8, head decoding quantized, YOLO letterbox calibration", head_yolo, True),
        ("INT8, head decoding quantized, ImageNet calibration (the quantizer before)", head_imagenet, True),
    ]
    images = out / "data" / "images" / "val"
    rows = []
    for label, path, qdq_model in artifacts:
        if not path.exists():
            rows.append({"artifact": label, "path": path.name, "missing": True})
            continue
        map5095, map50 = val_map(path, data_yaml, plain_qdq=qdq_model)
        row = {"artifact": label, "path": path.name, "map50_95": map5095, "map50": map50}
        if qdq_model:  # what ultralytics' val gives with ONNX Runtime's default (fused int8 kernel) session
            row["map50_95_ort_default"], row["map50_ort_default"] = val_map(path, data_yaml)
        row["check"] = check(fp32, path, images)
        rows.append(row)
        print(f"{label}: mAP50-95 {map5095:.3f} mAP50 {map50:.3f} check exit {row['check']['exit_code']}", flush=True)
    rows.append({"commands": commands})
    return rows


def verdict_text(verdict: dict) -> str:
    """'PASS (F1 0.998, agreement mAP50-95 0.97)' or 'FAIL: the first failure'."""
    code = verdict.get("exit_code")
    if code not in (0, 1):
        return f"error (exit {code}): {' '.join(verdict.get('error') or [])}"
    detection = verdict.get("detection") or {}
    found = detection.get("agreement") or {} if detection.get("measured") else {}
    figures = [] if found or not detection else ["detections not measured: the reference found none"]
    if found.get("f1") is not None:
        figures.append(f"F1 {found['f1']:.3f}")
    if found.get("map50_95") is not None:
        figures.append(f"agreement mAP50-95 {found['map50_95']:.3f}")
    if code == 0:
        return "PASS" + (f" ({', '.join(figures)})" if figures else "")
    failures = verdict.get("failures") or []
    return "FAIL" + (f" ({', '.join(figures)})" if figures else "") + (f": {failures[0]}" if failures else "")


def table(rows: list[dict]) -> str:
    lines = ["| artifact | mAP50-95 | mAP50 | mAP50-95 / mAP50, ORT default session | eca-deploy check |",
             "| --- | ---: | ---: | ---: | --- |"]  # fmt: skip
    for row in rows:
        if "commands" in row:
            continue
        if row.get("missing"):
            lines.append(f"| {row['artifact']} | - | - | - | not written |")
            continue
        ort = (f"{row['map50_95_ort_default']:.3f} / {row['map50_ort_default']:.3f}"
               if "map50_95_ort_default" in row else "")  # fmt: skip
        lines.append(f"| {row['artifact']} | {row['map50_95']:.3f} | {row['map50']:.3f} | {ort} | "
                     f"{verdict_text(row['check'])} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="folder for the data set, weights and ONNX files")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--train", type=int, default=640, help="training canvases")
    parser.add_argument("--val", type=int, default=300, help="held-out canvases")
    parser.add_argument("--calib-count", type=int, default=None, help="quantize's --calib-count (default: its own)")
    parser.add_argument("--stage", choices=("all", "train", "measure"), default="all")
    args = parser.parse_args(argv)

    from eca_deploy.environment import cpu_model

    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_yaml = out / "data" / "data.yaml"
    weights = out / "train" / "weights" / "best.pt"
    started = time.time()
    if args.stage in ("all", "train"):
        if not data_yaml.exists():
            make_dataset(out / "data", args.train, args.val)
        weights = train(data_yaml, out, args.epochs, args.batch)
        print(f"trained in {time.time() - started:.0f} s: {weights}", flush=True)
    if args.stage in ("all", "measure"):
        rows = measure(out, data_yaml, weights, args.calib_count)
        summary = {
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "cpu": cpu_model(),
            "epochs": args.epochs,
            "train_canvases": args.train,
            "val_canvases": args.val,
            "rows": rows,
        }
        (out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
        print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
