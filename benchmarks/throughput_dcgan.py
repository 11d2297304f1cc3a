"""The `dcgan` preset at 64x64 on a folder of colour images against the reference DCGAN example's procedure.

    python benchmarks/throughput_dcgan.py [--images 6000] [--steps 100] [--rounds 2]
    python benchmarks/throughput_dcgan.py --rss 50000 [--steps 100]

Speed: a synthetic folder of colour images (80x64 pixels, so both sides resize and crop) is
written once; each round runs `benchmarks/reference_dcgan.py` (ImageFolder + Resize/CenterCrop,
a 2-worker DataLoader, fp32, batch 128) and `dcgan train --preset dcgan` in fp32 and in the
default precision, whole processes, alternated; images/s after 20 warm-up steps, wall time and
peak resident memory. Decoding: the images/s of building the image-folder cache with one process
and with every core.

`--rss N`: N images of 64x64, decoded to the mapped cache, then `dcgan train --preset dcgan` on
them; the peak of the training process's anonymous and file-backed resident memory (the mapped
cache's pages are file-backed: the kernel can drop them, so they do not bound the data set) against
the decoded size.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image
from machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]




def _write_images(task: tuple[Path, int, int, int, int]) -> None:
    root, start, stop, width, height = task
    rng = np.random.default_rng(start)
    for index in range(start, stop):
        pixels = np.full((height, width, 3), rng.integers(0, 255, 3), np.uint8)
        for _ in range(3):  # a few coloured rectangles: something to learn, and PNGs that compress like photos do not
            top, left = rng.integers(0, height - 8), rng.integers(0, width - 8)
            pixels[top:top + rng.integers(8, height // 2), left:left + rng.integers(8, width // 2)] = rng.integers(0, 255, 3)
        pixels = np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / str(index % 10) / f"{index}.png")


def make_folder(root: Path, count: int, width: int, height: int) -> Path:
    """`count` colour PNGs in 10 class folders, written by every core."""
    for label in range(10):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
    chunk = 500
    tasks = [(root, start, min(start + chunk, count), width, height) for start in range(0, count, chunk)]
    with multiprocessing.Pool() as pool:
        pool.map(_write_images, tasks)
    return root


def run_process(command: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run one process; its images/s, wall seconds, peak RSS, and peak anonymous/file-backed RSS (MiB)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})})
    peaks = {"RssAnon": 0, "RssFile": 0}

    def watch() -> None:
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    key = line.split(":")[0]
                    if key in peaks:
                        peaks[key] = max(peaks[key], int(line.split()[1]))
            except OSError:
                break
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(process.pid, 0)
    watcher.join()
    wall = time.perf_counter() - start
    stdout, stderr = process.stdout.read(), process.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {shlex.join(command)}\n{stderr[-2000:]}")
    speed = re.search(r"images_per_s=([\d.]+)", stdout)
    return {"images_per_s": float(speed.group(1)) if speed else float("nan"), "wall_s": wall,
            "peak_rss_mib": usage.ru_maxrss / 1024, "peak_anon_mib": peaks["RssAnon"] / 1024,
            "peak_file_mib": peaks["RssFile"] / 1024}


def decode_speed(folder: Path, cache: Path) -> dict[str, float]:
    """Images/s of building the folder's cache with one process and with every core."""
    result = {}
    for workers in (1, os.cpu_count() or 1):
        code = (f"import time; from dcgan.data import load_image_folder; start = time.perf_counter(); "
                f"data = load_image_folder({str(folder)!r}, 3, 64, workers={workers}); "
                f"print(len(data) / (time.perf_counter() - start))")
        env = {**os.environ, "DCGAN_CACHE_DIR": str(cache / f"decode-{workers}")}
        speed = float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                     check=True).stdout)
        result[f"{workers} process{'es' if workers > 1 else ''}"] = speed
        print(f"decoding with {workers} process(es): {speed:.0f} images/s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rss", type=int, metavar="N", help="peak memory of training on N 64x64 images instead")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = {"DCGAN_CACHE_DIR": str(tmp / "cache")}
        train = [sys.executable, "-m", "dcgan", "train", "--preset", "dcgan", "--quiet", "--sample-every", "0",
                 "--checkpoint-every", "0", "--steps", str(args.steps)]
        if args.rss:
            folder = make_folder(tmp / "images", args.rss, 64, 64)
            decoded_mib = args.rss * 3 * 64 * 64 / 2**20
            prepare = run_process([*train, "--steps", "1", "--out", str(tmp / "warm"), "--data", str(folder)],
                                  cache)  # builds the cache
            print(f"decoded {args.rss} images ({decoded_mib:.0f} MiB) in {prepare['wall_s']:.0f} s", flush=True)
            run = run_process([*train, "--data", str(folder), "--out", str(tmp / "rss")], cache)
            print(json.dumps(run), flush=True)
            result = {"images": args.rss, "decoded_mib": decoded_mib, "steps": args.steps, "train": run,
                      "cache_build_wall_s": prepare["wall_s"]}
        else:
            folder = make_folder(tmp / "images", args.images, 80, 64)
            result = {"images": args.images, "steps": args.steps, "rounds": args.rounds,
                      "decode_images_per_s": decode_speed(folder, tmp)}
            commands = {
                "reference (fp32)": [sys.executable, str(ROOT / "benchmarks" / "reference_dcgan.py"), "--data",
                                     str(folder), "--steps", str(args.steps)],
                "dcgan fp32": [*train, "--precision", "fp32", "--data", str(folder)],
                "dcgan auto": [*train, "--data", str(folder)],
            }
            run_process([*commands["dcgan fp32"], "--steps", "1", "--out", str(tmp / "warm")], cache)  # the cache
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
            for round_ in range(args.rounds):
                for name, command in commands.items():
                    if name.startswith("dcgan"):
                        command = [*command, "--out", str(tmp / f"{name.split()[1]}-{round_}")]
                    runs[name].append(run_process(command, cache))
                    print(f"round {round_ + 1} {name:>17}: {runs[name][-1]['images_per_s']:7.1f} images/s, "
                          f"peak {runs[name][-1]['peak_rss_mib']:.0f} MiB", flush=True)
            base = statistics.mean(r["images_per_s"] for r in runs["reference (fp32)"])
            result["runs"] = {name: {"mean_images_per_s": statistics.mean(r["images_per_s"] for r in rs),
                                     "x_reference": statistics.mean(r["images_per_s"] for r in rs) / base,
                                     "runs": rs} for name, rs in runs.items()}
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), **result}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
