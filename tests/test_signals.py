"""Signals and kills, in real subprocesses: SIGINT/SIGTERM stop cleanly, SIGKILL never damages a file."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import TINY, assert_same_training_state, wait_for_child
from dcgan.plots import read_metrics
from dcgan.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

# Installed before the CLI runs: the second checkpoint save hangs after writing its data and
# before the rename, and says so through a marker file, so the test can SIGKILL it mid-save.
HANG_IN_SECOND_SAVE = """
import os, sys, time
from pathlib import Path
marker, real_fsync, files = Path(sys.argv[1]), os.fsync, []
def fsync(fd):
    if ".last.pt.tmp" in os.readlink(f"/proc/self/fd/{fd}"):  # a checkpoint's staged file
        files.append(fd)
        if len(files) == 2:
            marker.touch()
            time.sleep(600)
    real_fsync(fd)
os.fsync = fsync
from dcgan.cli import main
sys.exit(main(sys.argv[2:]))
"""


def spawn(*args: object, prelude: str | None = None) -> subprocess.Popen:
    """`dcgan ARGS` in a child process (one thread, like the in-process runs it is compared with)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "dcgan"] if prelude is None else [sys.executable, "-c", prelude]
    return subprocess.Popen([*command, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def rows(run: Path) -> int:
    path = run / "metrics.csv"
    return len(path.read_text().splitlines()) - 1 if path.exists() else 0


def assert_intact(run: Path) -> None:
    """Every file of the run reads back whole, and no temporary file is left behind."""
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]
    load_checkpoint(run / "checkpoints" / "last.pt")
    columns = ("step", "epoch", "d_loss", "g_loss", "d_real", "d_fake", "wall_time")
    assert all(math.isfinite(row[name]) for row in read_metrics(run / "metrics.csv") for name in columns)
    for png in (run / "samples").glob("*.png"):
        Image.open(png).load()


def resume_and_compare_with_a_straight_run(run_cli, run: Path, straight: Path, args: tuple) -> None:
    """Resume the killed `run`, check its files, and compare it bit for bit with an uninterrupted run."""
    code, _, err = run_cli("train", "--resume", run, "--quiet")
    assert code == 0, err
    assert_intact(run)
    code, _, err = run_cli("train", "--out", straight, *args)
    assert code == 0, err
    assert_same_training_state(load_checkpoint(run), load_checkpoint(straight))


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.slow
def test_a_signal_finishes_the_step_checkpoints_and_says_how_to_resume(run_cli, idx_dir, tmp_path, signum, code):
    run = tmp_path / "run"
    child = spawn("train", "--data", idx_dir, "--out", run, *TINY, "--steps", "100000", "--batch-size", "16",
                  "--log-every", "1", "--checkpoint-every", "0")
    wait_for_child(lambda: rows(run) >= 3, child)
    child.send_signal(signum)
    _, err = child.communicate(timeout=60)
    assert child.returncode == code, err
    assert f"resume with: dcgan train --resume {run}" in err.splitlines()
    assert "Traceback" not in err
    assert_intact(run)
    stopped = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert stopped == read_metrics(run / "metrics.csv")[-1]["step"] >= 3  # the checkpoint is of the last step

    code, _, err = run_cli("train", "--resume", run, "--quiet", "--steps", stopped + 2)
    assert code == 0, err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == stopped + 2


@pytest.mark.slow
def test_a_second_ctrl_c_exits_at_once_and_damages_nothing(run_cli, idx_dir, tmp_path):
    run = tmp_path / "run"
    # Full-size images and batches of 64: a step takes long enough for the second signal to land in it.
    child = spawn("train", "--data", idx_dir, "--out", run, "--quiet", "--sample-every", "1", "--steps", "100000",
                  "--batch-size", "64", "--log-every", "1", "--checkpoint-every", "0")
    wait_for_child(lambda: rows(run) >= 1, child)
    child.send_signal(signal.SIGINT)
    for line in child.stderr:
        if "stopping after this step" in line:
            break
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert f"dcgan: stopped at once; resume with: dcgan train --resume {run}" in err
    assert "Traceback" not in err
    assert_intact(run)
    step = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    code, _, err = run_cli("train", "--resume", run, "--quiet", "--steps", step + 1)
    assert code == 0, err


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_checkpoint_save_leaves_a_loadable_last_pt(run_cli, idx_dir, tmp_path):
    args = ("--data", idx_dir, *TINY, "--batch-size", "16", "--steps", "6", "--checkpoint-every", "3")
    run, marker = tmp_path / "run", tmp_path / "saving"
    child = spawn(marker, "train", "--out", run, *args, prelude=HANG_IN_SECOND_SAVE)
    wait_for_child(marker.exists, child)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    partial = list((run / "checkpoints").glob(".last.pt.tmp*"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0  # killed with the new data unrenamed
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 0

    resume_and_compare_with_a_straight_run(run_cli, run, tmp_path / "straight", args)
    assert read_metrics(run / "metrics.csv")[-1]["step"] == 6


@pytest.mark.slow
def test_sigkill_at_any_step_then_resume_matches_an_uninterrupted_run(run_cli, idx_dir, tmp_path):
    args = ("--data", idx_dir, *TINY, "--batch-size", "16", "--steps", "40", "--checkpoint-every", "2",
            "--log-every", "1")
    run = tmp_path / "run"
    child = spawn("train", "--out", run, *args)
    wait_for_child(lambda: rows(run) >= 5, child)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    killed_at = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert 0 < killed_at < 40

    resume_and_compare_with_a_straight_run(run_cli, run, tmp_path / "straight", args)
    steps = [row["step"] for row in read_metrics(run / "metrics.csv")]
    assert steps == list(range(1, 41))
