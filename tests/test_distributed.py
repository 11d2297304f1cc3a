"""Training with several processes: torchrun with 2 CPU processes (gloo), as a user runs it.

Every run here is a real `torchrun --standalone --nproc_per_node 2` of the tiny 8x8 model. A test
worker script wraps `dcgan train` to report what each rank holds at the end and what it wrote.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY, assert_same_training_state, flat_tensors
from dcgan.checkpoint import load_checkpoint
from dcgan.data import ImageData, ShuffledBatches
from dcgan.networks.tutorial import TutorialDiscriminator
from dcgan.plots import read_metrics
from dcgan.training.distributed import World, world_from_env
from dcgan.training.step import Logits

# Runs `dcgan train` on each rank. Ranks other than 0 record every write under the run directory
# (through Python's audit hooks); every rank saves its final networks; with DCGAN_TEST_KILL_AT=N,
# rank 1 of the first attempt SIGKILLs itself at its N-th step.
WORKER = """
import atexit, json, os, signal, sys
from pathlib import Path
import torch
from dcgan.cli import main
from dcgan.training.loop import TrainingLoop
from dcgan.training.step import TrainingStep

rank, attempt = int(os.environ["RANK"]), int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
report, out = Path(os.environ["DCGAN_TEST_REPORT"]), str(Path(os.environ["DCGAN_TEST_OUT"]).resolve())
writes = []

def audit(event, args):
    if event == "open" and str(args[0]).startswith(out):
        mode, flags = args[1], args[2]
        if (mode and any(c in mode for c in "wax+")) or (mode is None and flags & (os.O_WRONLY | os.O_RDWR)):
            writes.append(str(args[0]))
    elif event in ("os.rename", "os.replace", "os.mkdir", "os.remove", "os.link") and str(args[0]).startswith(out):
        writes.append(f"{event} {args[0]}")

if rank != 0:
    sys.addaudithook(audit)
atexit.register(lambda: (report / f"writes{rank}.json").write_text(json.dumps(writes)))

run = TrainingLoop.run
def run_and_report(self, *args, **kwargs):
    result = run(self, *args, **kwargs)
    gan = self.gan
    torch.save({"generator": gan.generator.state_dict(), "discriminator": gan.discriminator.state_dict(),
                "ema": gan.sampler().state_dict() if gan.ema else {}}, report / f"rank{rank}.pt")
    return result
TrainingLoop.run = run_and_report

kill_at, calls = int(os.environ.get("DCGAN_TEST_KILL_AT", 0)), [0]
step = TrainingStep.__call__
def step_or_die(self, *args, **kwargs):
    calls[0] += 1
    if kill_at and attempt == 0 and rank == 1 and calls[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, *args, **kwargs)
TrainingStep.__call__ = step_or_die

sys.exit(main(sys.argv[1:]))
"""

# D's gradient over 2 ranks, each on its half of a fixed batch, through the package's DDP wrapper.
GRADIENTS = """
import os, sys
import torch
import torch.nn.functional as F
from dcgan.networks.tutorial import TutorialDiscriminator
from dcgan.training.distributed import parallel, start, stop, world_from_env
from dcgan.training.step import Logits

world = start(world_from_env(), torch.device("cpu"))
torch.manual_seed(0)
discriminator = TutorialDiscriminator(image_size=8).eval()  # no dropout: a known answer
model = parallel(world, Logits(discriminator), torch.device("cpu"))
images = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
targets = (torch.arange(8) % 2).float().unsqueeze(1)
half = slice(4 * world.rank, 4 * world.rank + 4)
F.binary_cross_entropy_with_logits(model(images[half]), targets[half]).backward()
torch.save({n: p.grad for n, p in discriminator.named_parameters()}, sys.argv[1] + f"/grads{world.rank}.pt")
del model  # its reducer holds the process group: released now, not while the interpreter shuts down
stop(world)
"""


def torchrun(script: Path, *args: object, restarts: int = 0, env: dict[str, str] | None = None,
             wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    """`torchrun --standalone --nproc_per_node 2 SCRIPT ARGS` (one thread per process)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "--max-restarts", str(restarts), "--monitor-interval", "0.1", str(script), *map(str, args)]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
    return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=300)


@pytest.fixture
def worker(tmp_path: Path) -> Path:
    path = tmp_path / "worker.py"
    path.write_text(WORKER)
    return path


def train_2(worker: Path, out: Path, report: Path, *args: object, restarts: int = 0, **env: str):
    report.mkdir(exist_ok=True)
    return torchrun(worker, "train", "--out", out, *args, restarts=restarts,
                    env={"DCGAN_TEST_REPORT": str(report), "DCGAN_TEST_OUT": str(out), **env})


def resume_2(worker: Path, out: Path, report: Path, *args: object):
    report.mkdir(exist_ok=True)
    return torchrun(worker, "train", "--resume", out, "--quiet", *args,
                    env={"DCGAN_TEST_REPORT": str(report), "DCGAN_TEST_OUT": str(out)})


def dcgan_lines(stderr: str) -> list[str]:
    """What dcgan itself printed (torchrun's own log lines and failure report left out)."""
    return [line for line in stderr.splitlines() if line.startswith(("dcgan", "world size", "run directory"))]


def test_the_environment_describes_the_world() -> None:
    assert world_from_env({}) == World()
    world = world_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "TORCHELASTIC_RESTART_COUNT": "2",
                            "TORCHELASTIC_RUN_ID": "job"})
    assert (world.rank, world.local_rank, world.size, world.restart, world.run_id) == (3, 1, 4, 2, "job")
    assert world.distributed and not world.is_main
    assert world.device(torch.device("cuda")) == torch.device("cuda", 1)
    assert world.device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("size", [96, 100, 101])
def test_the_ranks_slices_of_an_epoch_are_disjoint_and_cover_it(size: int) -> None:
    data = ImageData(torch.arange(size, dtype=torch.uint8).view(size, 1, 1, 1), torch.arange(size),
                     ("x",), "numbers")
    ranks = [ShuffledBatches(data, batch_size=16, seed=3, device=torch.device("cpu"), rank=r, world_size=2)
             for r in range(2)]
    single = ShuffledBatches(data, batch_size=16, seed=3, device=torch.device("cpu"))
    # 96 = 6 full batches; 100 leaves 4 (2 per rank: kept); 101 leaves 5 (2 and 3: kept)
    assert ranks[0].batches_per_epoch == single.batches_per_epoch == 6 + (size > 96)
    seen = [torch.cat([labels for _, labels in batches.epoch(1)]) for batches in ranks]
    assert not set(seen[0].tolist()) & set(seen[1].tolist())
    assert sorted(torch.cat(seen).tolist()) == list(range(size))
    order = single.order(1)
    for b in range(single.batches_per_epoch):  # each global batch is the single process's batch, split in two
        global_batch = order[b * 16:(b + 1) * 16]
        assert torch.equal(torch.cat([batches.indices(order, b) for batches in ranks]), global_batch)
    one_each = ImageData(data.images[:98], data.labels[:98], ("x",), "numbers")  # leaves 2: one per rank
    assert ShuffledBatches(one_each, batch_size=16, seed=3, device=torch.device("cpu"), rank=0,
                           world_size=2).batches_per_epoch == 6


@pytest.mark.slow
def test_d_gradient_averaged_over_2_ranks_equals_the_gradient_of_the_whole_batch(tmp_path: Path) -> None:
    script = tmp_path / "gradients.py"
    script.write_text(GRADIENTS)
    result = torchrun(script, tmp_path)
    assert result.returncode == 0, result.stderr
    torch.manual_seed(0)
    discriminator = TutorialDiscriminator(image_size=8).eval()
    images = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    targets = (torch.arange(8) % 2).float().unsqueeze(1)
    F.binary_cross_entropy_with_logits(Logits(discriminator)(images), targets).backward()
    for rank in range(2):
        grads = torch.load(tmp_path / f"grads{rank}.pt", weights_only=True)
        for name, parameter in discriminator.named_parameters():
            torch.testing.assert_close(grads[name], parameter.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_two_ranks_stay_identical_and_only_rank_0_writes(worker: Path, idx_dir: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "run", tmp_path / "report"
    result = train_2(worker, out, report, "--data", idx_dir, *TINY, "--batch-size", "16", "--steps", "8",
                     "--ema-decay", "0.9", "--augment", "--log-every", "4", "--sample-every", "4")
    assert result.returncode == 0, result.stderr
    assert "world size 2 (gloo): rank 0 writes the run directory" in result.stderr
    assert result.stdout.startswith("completed: step=8 ")
    states = [flat_tensors(torch.load(report / f"rank{r}.pt", weights_only=True)) for r in range(2)]
    assert states[0].keys() == states[1].keys() and any(k.startswith("/ema/") for k in states[0])
    assert [k for k in states[0] if not torch.equal(states[0][k], states[1][k])] == []
    assert json.loads((report / "writes1.json").read_text()) == []
    assert json.loads((report / "writes0.json").read_text()) == []  # rank 0 is not audited: the hook works
    payload = load_checkpoint(out)
    assert payload["world_size"] == 2 and len(payload["rng_by_rank"]) == 2
    streams = [state["torch"] for state in payload["rng_by_rank"]]
    assert not torch.equal(*streams)  # each rank draws its own noise and dropout
    assert torch.equal(payload["generator"]["upsample.0.weight"], states[0]["/generator/upsample.0.weight"])
    assert [row["step"] for row in read_metrics(out / "metrics.csv")] == [4, 8]
    assert sorted(p.name for p in (out / "samples").iterdir()) == [f"step_{s:07d}.png" for s in (0, 4, 8)]


@pytest.mark.slow
def test_resume_at_world_size_2_is_bit_identical(worker: Path, idx_dir: Path, tmp_path: Path) -> None:
    args = ("--data", idx_dir, *TINY, "--batch-size", "16", "--log-every", "2", "--conditional",
            "--ema-decay", "0.9")
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train_2(worker, straight, tmp_path / "r1", *args, "--steps", "8").returncode == 0
    assert train_2(worker, split, tmp_path / "r2", *args, "--steps", "4").returncode == 0
    result = resume_2(worker, split, tmp_path / "r3", "--steps", "8")
    assert result.returncode == 0, result.stderr
    a, b = load_checkpoint(straight), load_checkpoint(split)
    assert_same_training_state(a, b)
    assert all(torch.equal(x, y) for x, y in zip(flat_tensors(a["ema"]).values(), flat_tensors(b["ema"]).values()))
    rng_a, rng_b = flat_tensors(a["rng_by_rank"]), flat_tensors(b["rng_by_rank"])
    assert rng_a.keys() == rng_b.keys() and all(torch.equal(rng_a[k], rng_b[k]) for k in rng_a)
    columns = ("step", "d_loss", "g_loss", "d_real", "d_fake")
    rows = [[tuple(r[c] for c in columns) for r in read_metrics(run / "metrics.csv")] for run in (straight, split)]
    assert rows[0] == rows[1] and [r[0] for r in rows[0]] == [2, 4, 6, 8]


@pytest.mark.slow
def test_resume_at_another_world_size_continues_from_the_same_step(worker: Path, idx_dir: Path, tmp_path: Path,
                                                                     run_cli, one_thread) -> None:
    run = tmp_path / "run"
    assert train_2(worker, run, tmp_path / "r", "--data", idx_dir, *TINY, "--batch-size", "16",
                   "--steps", "4").returncode == 0
    code, out, err = run_cli("train", "--resume", run, "--steps", "6", "--quiet")  # one process now
    assert code == 0, err
    assert out.startswith("completed: step=6 ")
    payload = load_checkpoint(run)
    assert payload["world_size"] == 1 and "rng_by_rank" not in payload


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_the_run_completes(worker: Path, idx_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train_2(worker, out, tmp_path / "report", "--data", idx_dir, *TINY, "--batch-size", "16",
                     "--steps", "30", "--checkpoint-every", "10", "--log-every", "5", restarts=1,
                     DCGAN_TEST_KILL_AT="17")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr.split("torchrun restart 1")[0]  # rank 0 lost rank 1: no traceback
    assert f"torchrun restart 1: continuing {out} from its last checkpoint" in result.stderr
    assert "completed: step=30 " in result.stdout
    assert load_checkpoint(out)["step"] == 30
    steps = [row["step"] for row in read_metrics(out / "metrics.csv")]
    assert steps == [5, 10, 15, 20, 25, 30]  # the rows after the step-10 checkpoint were redone once


@pytest.mark.slow
def test_sigterm_to_torchrun_leaves_a_loadable_checkpoint(worker: Path, idx_dir: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "run", tmp_path / "report"
    report.mkdir()
    child = torchrun(worker, "train", "--out", out, "--data", idx_dir, *TINY, "--batch-size", "16",
                     "--steps", "100000", "--log-every", "5", "--checkpoint-every", "1000", wait=False,
                     env={"DCGAN_TEST_REPORT": str(report), "DCGAN_TEST_OUT": str(out)})
    deadline = time.monotonic() + 120
    while not (out / "metrics.csv").exists() or len((out / "metrics.csv").read_text().splitlines()) < 3:
        assert child.poll() is None and time.monotonic() < deadline, child.stderr.read() if child.poll() else ""
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    stdout, stderr = child.communicate(timeout=120)
    assert "interrupted: step=" in stdout, stderr
    step = int(stdout.split("interrupted: step=")[1].split()[0])
    payload = load_checkpoint(out)
    assert payload["step"] == step > 0 and payload["world_size"] == 2
    assert all(math.isfinite(row["d_loss"]) for row in read_metrics(out / "metrics.csv"))
    assert dcgan_lines(stderr).count(f"resume with: dcgan train --resume {out}") == 0  # that line goes to stderr ...
    assert f"resume with: dcgan train --resume {out}" in stderr  # ... once, from rank 0


@pytest.mark.parametrize(("flags", "message"), [
    (("--batch-size", "15"), "--batch-size 15 (the global batch) must split into equal parts of at least 2 images "
                             "over 2 processes: use a multiple of 2"),
    (("--sync-bn",), "--sync-bn synchronises batch norm over GPUs (NCCL); on the CPU each process keeps its own "
                     "batch statistics: drop --sync-bn"),
])
@pytest.mark.slow
def test_bad_distributed_options_stop_every_rank_with_one_error_line(worker: Path, idx_dir: Path, tmp_path: Path,
                                                                     flags: tuple[str, ...], message: str) -> None:
    out = tmp_path / "run"
    result = train_2(worker, out, tmp_path / "report", "--data", idx_dir, *TINY, "--steps", "2", *flags)
    assert result.returncode != 0
    assert [line for line in dcgan_lines(result.stderr) if line.startswith("dcgan")] == [f"dcgan: error: {message}"]
    assert not out.exists()


# A worker that asks to be stopped with its parent, then waits; its SIGTERM handler leaves a file.
ORPHAN = """
import os, signal, sys, time
from dcgan.training.distributed import stop_with_parent
stopped, ready = sys.argv[1], sys.argv[2]


def write_atomically(path, text):
    # the test polls for the file: it must never see it created but still empty
    with open(path + ".part", "w") as file:
        file.write(text)
    os.replace(path + ".part", path)


signal.signal(signal.SIGTERM, lambda signum, frame: (write_atomically(stopped, str(signum)), sys.exit(0)))
assert stop_with_parent()
write_atomically(ready, str(os.getpid()))
time.sleep(120)
"""


def wait_for(path: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
@pytest.mark.slow
def test_a_worker_gets_sigterm_when_its_launcher_is_killed(tmp_path: Path) -> None:
    stopped, ready = tmp_path / "stopped", tmp_path / "ready"
    launcher = (f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {ORPHAN!r}, "
                f"{str(stopped)!r}, {str(ready)!r}]); time.sleep(120)")
    parent = subprocess.Popen([sys.executable, "-c", launcher])
    try:
        assert wait_for(ready, 60), "the worker never started"
        assert not stopped.exists()
        parent.kill()  # as `kill -9` of torchrun: no chance to stop its workers itself
        parent.wait()
        assert wait_for(stopped, 20), "the orphaned worker was not signalled"
        assert stopped.read_text() == str(int(signal.SIGTERM))
    finally:
        parent.kill()
        if ready.exists() and not stopped.exists():
            os.kill(int(ready.read_text()), signal.SIGKILL)
