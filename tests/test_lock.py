"""One process per run: a run being written refuses a second writer, and a killed writer's lock blocks nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY, wait_for_child
from dcgan.checkpoint import load_checkpoint
from dcgan.errors import UserError
from dcgan.training.lock import LOCK_FILE, RunLock
from dcgan.training.prepare import new_run_directory

pytestmark = pytest.mark.usefixtures("one_thread")

ENDLESS = (*TINY, "--batch-size", "16", "--steps", "100000", "--log-every", "1", "--checkpoint-every", "0")


def spawn(*args: object) -> subprocess.Popen:
    """`python -m dcgan ARGS` in a child process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "dcgan", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def holds_lock(run: Path, child: subprocess.Popen) -> bool:
    """Whether `child` has written its pid into the run's lock file (it does so once it holds the lock)."""
    try:
        return (run / LOCK_FILE).read_text().split("\n")[0] == str(child.pid)
    except OSError:
        return False


def rows(run: Path) -> list[int]:
    """The steps of the metrics rows written so far (a row still being appended left out)."""
    path = run / "metrics.csv"
    text = path.read_text() if path.exists() else ""
    return [int(line.split(",")[0]) for line in text[: text.rfind("\n") + 1].splitlines()[1:]]


@pytest.fixture
def training(idx_dir: Path, tmp_path: Path):
    """A new run in tmp_path/run, trained by another process, which holds its lock and has written a row."""
    run = tmp_path / "run"
    child = spawn("train", "--data", idx_dir, "--out", run, *ENDLESS)
    wait_for_child(lambda: holds_lock(run, child) and len(rows(run)) >= 1, child)
    yield run, child
    child.kill()
    child.wait()


def assert_trains_on_unharmed(run: Path, writer: subprocess.Popen) -> None:
    """The writer goes on with its run: its own config, and rows with no gap or repeat past the refusal."""
    seen = len(rows(run))
    wait_for_child(lambda: len(rows(run)) >= seen + 2, writer)
    steps = rows(run)
    assert steps == list(range(1, len(steps) + 1))
    assert "steps = 100000\n" in (run / "config.toml").read_text()
    assert holds_lock(run, writer)


@pytest.mark.slow
def test_a_resume_of_a_run_being_written_is_refused_naming_the_writer(training):
    run, writer = training
    second = spawn("train", "--resume", run, "--quiet", "--steps", "200000")
    _, err = second.communicate(timeout=60)
    assert second.returncode == 2, err
    assert err.splitlines() == [f"dcgan: error: --resume {run}: run is being written by process {writer.pid} "
                                f"(dcgan train --data {run.parent / 'idx'} --out {run} {' '.join(ENDLESS)}); "
                                f"wait for it or stop it"]
    assert_trains_on_unharmed(run, writer)


@pytest.mark.slow
def test_a_new_run_into_a_run_being_written_is_refused_naming_the_writer(training, run_cli, idx_dir):
    run, writer = training
    code, _, err = run_cli("train", "--data", idx_dir, "--out", run, *TINY, "--steps", "1")
    assert code == 2, err
    (line,) = err.splitlines()
    assert line.startswith(f"dcgan: error: --out {run}: run is being written by process {writer.pid} (dcgan train ")
    assert_trains_on_unharmed(run, writer)


@pytest.mark.slow
def test_the_lock_of_a_killed_writer_does_not_block_a_resume(training, run_cli):
    run, writer = training
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=60)
    assert (run / LOCK_FILE).read_text().startswith(f"{writer.pid}\n")  # left behind: only information
    killed_at = load_checkpoint(run / "checkpoints" / "last.pt")["step"]

    code, out, err = run_cli("train", "--resume", run, "--quiet", "--steps", killed_at + 2)
    assert code == 0, err
    assert out.startswith(f"completed: step={killed_at + 2} ")
    assert not (run / LOCK_FILE).exists()  # let go, with its file


def test_a_held_lock_refuses_another_holder_until_it_is_released(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    first, second = RunLock(), RunLock()
    first.acquire(run, "--resume")
    with pytest.raises(UserError, match=rf"^--resume {run}: run is being written by process {os.getpid()} "
                                        rf"\(dcgan .*\); wait for it or stop it$"):
        second.acquire(run, "--resume")
    second.release()  # holds nothing: the first keeps its lock and its file
    assert (run / LOCK_FILE).exists()
    first.release()
    assert list(run.iterdir()) == []
    second.acquire(run, "--resume")
    second.release()


def test_a_lock_file_without_a_holder_blocks_nothing(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text("12345\nanother-host\ndcgan train --out run\n")  # left by a killed process
    lock = RunLock()
    lock.acquire(run, "--resume")
    assert (run / LOCK_FILE).read_text().startswith(f"{os.getpid()}\n")
    lock.release()


def test_of_two_new_runs_into_one_folder_only_the_first_starts(tmp_path):
    out = tmp_path / "runs" / "x"
    first, second = RunLock(), RunLock()
    new_run_directory(out, first)
    (out / "config.toml").write_text("")  # the first run has started writing
    first.release()
    assert out.is_dir()  # not removed: the run wrote into it
    with pytest.raises(UserError, match="already exists and is not empty"):
        new_run_directory(out, second)
    second.release()
    assert sorted(p.name for p in out.iterdir()) == ["config.toml"]


def test_a_new_run_that_fails_before_writing_removes_the_folders_it_made(run_cli, tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "empty").mkdir()
    out = tmp_path / "runs" / "new" / "run"
    code, _, err = run_cli("train", "--data", tmp_path / "empty", "--out", out, *TINY, "--steps", "1")
    assert code == 2 and "the directory is empty" in err, err  # found once the run is locked, loading the data
    assert list((tmp_path / "runs").iterdir()) == []  # "new" and "new/run" gone, "runs" (the user's) kept
