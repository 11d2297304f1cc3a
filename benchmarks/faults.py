"""Fault injection: SIGKILL a training run at random moments, resume it each time, compare the end.

A reference run trains without interruption. The same run is then started, killed with SIGKILL
at a random moment, resumed with `--resume`, killed again, and so on; after the last kill it is
resumed to the end. Kills come at a uniform random time while the run trains (checkpoint saves
take a large share of that time), at a random time in start-up (imports, data, resume), or a
few milliseconds after the temporary file of a `last.pt` save appears (aimed at the write).
After every kill each checkpoint file must load. At the end the weights, optimiser states,
metrics and sample grids must equal the reference's.

    python benchmarks/faults.py [--kills 60] [--steps 600] [--seed 0]

Prints a summary and writes benchmarks/results/faults.json. Exit code 1 when a checkpoint was
unreadable, the final state differs from the reference, or fewer kills than asked could be made.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from dcgan.plots import read_metrics
from dcgan.checkpoint import load_checkpoint
from dcgan.data import bundled_mnist_dir, read_idx
from dcgan.errors import UserError

STATE_KEYS = ("generator", "discriminator", "opt_g", "opt_d", "rng")
LOSS_COLUMNS = ("step", "epoch", "d_loss", "g_loss", "d_real", "d_fake")
# Share of the kills of each kind (the rest fall at a uniform random time while the run trains).
AIMS = {"start-up": 0.2, "checkpoint write": 0.25}


@dataclass
class Child:
    """A `dcgan train` process and what it has said on stderr so far."""

    process: subprocess.Popen
    started: float
    training: threading.Event = field(default_factory=threading.Event)
    lines: list[str] = field(default_factory=list)

    def read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            if line.startswith("run directory:"):
                self.training.set()


@dataclass
class Report:
    """What the benchmark measured."""

    command: str
    kills: int = 0
    kills_aimed: dict = field(default_factory=lambda: {"training": 0, "start-up": 0, "checkpoint write": 0})
    kills_during_checkpoint_write: int = 0
    kills_during_write_of: dict = field(default_factory=lambda: {"last.pt": 0, "step_N.pt (keep-K rotation)": 0})
    resumes: int = 0
    checkpoint_checks: int = 0
    unreadable_checkpoints: int = 0
    steps: int = 0
    final_step: int = 0
    weights_identical: bool = False
    metrics_identical: bool = False
    samples_identical: bool = False
    reference_s: float = 0.0
    faulted_s: float = 0.0
    setup: dict = field(default_factory=dict)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def make_data(root: Path, count: int) -> Path:
    """The first `count` MNIST training images, as IDX files."""
    root.mkdir(parents=True)
    source = bundled_mnist_dir()
    write_idx(root / "train-images-idx3-ubyte", read_idx(source / "train-images-idx3-ubyte.gz")[:count])
    write_idx(root / "train-labels-idx1-ubyte", read_idx(source / "train-labels-idx1-ubyte.gz")[:count])
    return root


def spawn(args: list[str]) -> Child:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "dcgan", "train", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=env)
    child = Child(process, time.monotonic())
    threading.Thread(target=child.read, daemon=True).start()
    return child


def finish(child: Child) -> None:
    child.process.wait()
    if child.process.returncode != 0:
        sys.exit(f"training failed ({child.process.returncode}): {''.join(child.lines)}")


def check_checkpoints(directory: Path, report: Report) -> None:
    """Every checkpoint file must load; a missing last.pt counts as unreadable."""
    paths = [directory / "last.pt", *sorted(directory.glob("step_*.pt"))]
    for path in paths:
        report.checkpoint_checks += 1
        try:
            load_checkpoint(path)
        except UserError as exc:
            report.unreadable_checkpoints += 1
            print(f"  UNREADABLE: {exc}")


def partial_files(checkpoints: Path, pid: int, name: str = "*") -> list[Path]:
    """The temporary files that process `pid` is writing (or was, when it was killed)."""
    return list(checkpoints.glob(f".{name}.tmp{pid}*"))


def kill_at_random(child: Child, checkpoints: Path, rng: random.Random, aim: str, startup_s: float,
                   window_s: float) -> bool:
    """SIGKILL the child at a random moment of the `aim`ed kind; False when it finished first."""
    def alive() -> bool:
        return child.process.poll() is None

    if aim == "start-up":
        deadline = child.started + rng.uniform(0, startup_s)
    else:
        while not child.training.wait(0.01):
            if not alive():
                return False
        if aim == "checkpoint write":
            while not partial_files(checkpoints, child.process.pid, "last.pt"):
                if not alive():
                    return False
                time.sleep(0.001)
        deadline = time.monotonic() + rng.uniform(0, 0.01 if aim == "checkpoint write" else window_s)
    while time.monotonic() < deadline:
        if not alive():
            return False
        time.sleep(0.001)
    if not alive():
        return False
    child.process.send_signal(signal.SIGKILL)
    child.process.wait()
    return True


def choose_aim(rng: random.Random, first: bool) -> str:
    if first:  # the first run must reach its step-0 checkpoint
        return "training"
    draw = rng.random()
    for aim, share in AIMS.items():
        if draw < share:
            return aim
        draw -= share
    return "training"


def reference_run(args: list[str], out: Path) -> tuple[float, float]:
    """Train without interruption; returns (start-up seconds, training seconds)."""
    child = spawn([*args, "--out", str(out)])
    child.training.wait()
    startup = time.monotonic() - child.started
    finish(child)
    return startup, time.monotonic() - child.started - startup


def faulted_run(args: list[str], out: Path, kills: int, rng: random.Random, startup_s: float, window_s: float,
                report: Report) -> None:
    """Kill and resume until `kills` kills are done, then resume to the end."""
    checkpoints = out / "checkpoints"
    child = spawn([*args, "--out", str(out)])
    while report.kills < kills:
        aim = choose_aim(rng, first=report.kills == 0)
        if not kill_at_random(child, checkpoints, rng, aim, startup_s, window_s):
            break
        report.kills += 1
        report.kills_aimed[aim] += 1
        partial = partial_files(checkpoints, child.process.pid)
        report.kills_during_checkpoint_write += bool(partial)
        for path in partial:
            report.kills_during_write_of["last.pt" if path.name.startswith(".last.pt") else
                                         "step_N.pt (keep-K rotation)"] += 1
        check_checkpoints(checkpoints, report)
        step = load_checkpoint(checkpoints / "last.pt")["step"]
        landed = f"; landed in the write of {partial[0].name}" if partial else ""
        print(f"kill {report.kills:3d}: aimed at {aim:16s} last.pt at step {step:4d}{landed}")
        child = spawn(["--resume", str(out), "--quiet"])
        report.resumes += 1
    finish(child)


def same_state(a: dict, b: dict) -> bool:
    def flat(value, prefix=""):
        if isinstance(value, torch.Tensor):
            yield prefix, value
        elif isinstance(value, dict):
            for key, item in value.items():
                yield from flat(item, f"{prefix}/{key}")
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                yield from flat(item, f"{prefix}/{index}")

    left = dict(flat({k: a[k] for k in STATE_KEYS}))
    right = dict(flat({k: b[k] for k in STATE_KEYS}))
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def compare(reference: Path, faulted: Path, report: Report) -> None:
    a, b = load_checkpoint(reference), load_checkpoint(faulted)
    report.final_step = b["step"]
    report.weights_identical = a["step"] == b["step"] and same_state(a, b)

    def losses(run: Path) -> list[tuple[float, ...]]:
        return [tuple(row[c] for c in LOSS_COLUMNS) for row in read_metrics(run / "metrics.csv")]

    def grids(run: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted((run / "samples").iterdir())}

    report.metrics_identical = losses(reference) == losses(faulted)
    report.samples_identical = grids(reference) == grids(faulted)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=60, help="SIGKILLs to inject (default 60)")
    parser.add_argument("--steps", type=int, default=600, help="length of the run (default 600)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times (default 0)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "faults.json")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    return parser.parse_args()


def main() -> int:
    options = parse_args()
    rng = random.Random(options.seed)
    work = Path(tempfile.mkdtemp(prefix="dcgan-faults-"))
    data = make_data(work / "data", 512)
    # Checkpoints every 3 steps (keeping 2) and rows every 5: saves are a large share of the time,
    # and most checkpoints fall on steps that are not multiples of --log-every.
    args = ["--data", str(data), "--image-size", "8", "--latent-dim", "4", "--batch-size", "16",
            "--steps", str(options.steps), "--checkpoint-every", "3", "--keep-checkpoints", "2",
            "--log-every", "5", "--sample-every", "50", "--seed", "1", "--quiet"]
    report = Report(command=" ".join(["python", "benchmarks/faults.py", *sys.argv[1:]]))
    report.steps = options.steps
    report.setup = {"train_args": " ".join(a if a != str(data) else "DATA" for a in args), "data_images": 512,
                    "python": platform.python_version(), "torch": torch.__version__,
                    "cpus": os.cpu_count(), "threads_per_process": 1, "seed": options.seed}

    began = time.monotonic()
    startup_s, training_s = reference_run(args, work / "reference")
    report.reference_s = round(time.monotonic() - began, 1)
    # Aim for about 60% of the run to be done under fire: each kill timed within training comes
    # after a uniform wait whose mean covers its share of those steps.
    window_s = 2 * 0.6 * training_s / (options.kills * (1 - sum(AIMS.values())))
    print(f"reference: {options.steps} steps, start-up {startup_s:.1f} s, training {training_s:.1f} s; "
          f"kill window {window_s:.2f} s")

    began = time.monotonic()
    faulted_run(args, work / "faulted", options.kills, rng, startup_s, window_s, report)
    report.faulted_s = round(time.monotonic() - began, 1)
    compare(work / "reference", work / "faulted", report)

    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(asdict(report), indent=2) + "\n")
    print(json.dumps({k: v for k, v in asdict(report).items() if k != "setup"}, indent=2))
    if not options.keep:
        shutil.rmtree(work)
    ok = (report.kills >= options.kills and report.unreadable_checkpoints == 0 and report.weights_identical
          and report.metrics_identical and report.samples_identical)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
