"""Peak resident memory of `eca-deploy quantize` on a timm ECA model: the numbers in docs/precision.md.

    python scripts/measure_calibration_memory.py --model ecaresnet269d --img-size 320 --counts 256
    python scripts/measure_calibration_memory.py --model ecaresnet50d --img-size 224 --counts 4,32,64,256

Exports the timm model with random weights (seed 0; memory does not depend on the weights) through
eca-deploy's export function, writes calibration images made from scikit-image's photographs by random
crops and horizontal flips (real photo content, never noise), then runs `eca-deploy quantize` (with its
INT8-vs-FP32 check on the sample photos) once per count in a child process and reports that child's peak
resident set size (ru_maxrss from wait4, the figure `/usr/bin/time -v` prints), wall time and how
calibration streamed. A watchdog kills a child that passes `--limit-gb`. Needs timm and psutil.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def export_timm(name: str, img_size: int, output: Path) -> None:
    """timm model with random weights -> ONNX through eca-deploy's exporter (metadata carries the preprocessing)."""
    import timm
    import torch

    from eca_deploy.data.images import Preprocessing
    from eca_deploy.exporters import ExportOptions, export_onnx
    from eca_deploy.onnx_io import save_onnx

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    cfg = model.pretrained_cfg
    prep = Preprocessing.for_size(img_size, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    with torch.no_grad():
        onnx_model = export_onnx(model, f"timm:{name}", ExportOptions(img_size=img_size, preprocessing=prep),
                                 weights_source="random (seed 0)")  # fmt: skip
    save_onnx(onnx_model, output)


def augmented_photos(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` PNG files: random crops (35-100% of the area, aspect 3:4 to 4:3) of the sample photographs,
    half of them flipped left-right."""
    from PIL import Image

    from eca_deploy.data.images import read_rgb, sample_image_paths

    folder.mkdir(parents=True, exist_ok=True)
    photos = [read_rgb(p) for p in sample_image_paths()]
    rng = np.random.default_rng(seed)
    for i in range(count):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        area = rng.uniform(0.35, 1.0) * h * w
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch, cw = min(h, round(np.sqrt(area / aspect))), min(w, round(np.sqrt(area * aspect)))
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = img[top : top + ch, left : left + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"photo_{i:04d}.png")
    return folder


def run_measured(cmd: list[str], limit_gb: float) -> tuple[int, float, float, str]:
    """Run `cmd`; return (exit code, its peak RSS in GiB from wait4's rusage, seconds, stdout); kill it past
    `limit_gb`."""
    import tempfile

    import psutil

    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        killed = threading.Event()

        def watch() -> None:
            try:
                p = psutil.Process(proc.pid)
                while not killed.is_set():
                    if p.memory_info().rss > limit_gb * 2**30:
                        killed.set()
                        proc.kill()
                    time.sleep(0.2)
            except psutil.Error:
                return

        threading.Thread(target=watch, daemon=True).start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stopped_by_watchdog = killed.is_set()
        killed.set()
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if stopped_by_watchdog:
        stderr += f"\nkilled: resident memory passed {limit_gb} GiB"
    if proc.returncode:
        sys.stderr.write(stderr[-2000:] + "\n")
    return proc.returncode, usage.ru_maxrss / 2**20, seconds, stdout  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ecaresnet50d", help="timm model name")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--counts", default="4,32,64,256", help="calibration image counts, comma-separated")
    parser.add_argument("--method", default="percentile")
    parser.add_argument("--work", type=Path, default=Path("calibration-memory"), help="folder for the files")
    parser.add_argument("--limit-gb", type=float, default=16.0, help="kill a run above this resident memory")
    parser.add_argument("--export-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    onnx_path = args.work / f"{args.model}_{args.img_size}.onnx"
    if args.export_only:
        export_timm(args.model, args.img_size, onnx_path)
        return
    python = sys.executable
    if not onnx_path.is_file():  # a child of its own, so the export's memory does not count below
        code, peak, seconds, _ = run_measured(
            [python, __file__, "--export-only", "--model", args.model, "--img-size", str(args.img_size),
             "--work", str(args.work)], args.limit_gb)  # fmt: skip
        if code:
            sys.exit(f"export of {args.model} failed")
        print(f"exported {onnx_path} ({peak:.2f} GiB peak, {seconds:.0f} s)", file=sys.stderr)
    counts = [int(c) for c in args.counts.split(",")]
    photos = augmented_photos(args.work / "photos", max(counts))
    env_cmd = [python, "-m", "eca_deploy.cli.main", "quantize", "--onnx", str(onnx_path), "--calib-images",
               str(photos), "--method", args.method, "--no-cache", "--json"]  # fmt: skip
    rows = []
    for count in counts:
        cmd = [*env_cmd, "--calib-count", str(count), "--output", str(args.work / f"q{count}.onnx")]
        code, peak, seconds, out = run_measured(cmd, args.limit_gb)
        calib = json.loads(out).get("calibration") if code == 0 else None
        rows.append({"model": args.model, "img_size": args.img_size, "images": count, "exit": code,
                     "peak_rss_gib": round(peak, 2), "seconds": round(seconds, 1), "calibration": calib})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    print("\n| model | input | images | peak resident memory | time | calibration runs |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        c = r["calibration"] or {}
        runs = f"{c.get('groups')} group(s), batch {c.get('batch')}, {c.get('passes')} pass(es)" if c else "failed"
        print(f"| {r['model']} | {r['img_size']} | {r['images']} | {r['peak_rss_gib']:.2f} GiB | {r['seconds']:.0f} s "
              f"| {runs} |")  # fmt: skip


if __name__ == "__main__":
    main()
