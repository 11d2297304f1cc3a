"""Exact resume, `--steps` as the run's total, random-number states, and roll-back on divergence."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import dcgan.training.labels as labels
import dcgan.training.loop as loop
import dcgan.training.state as state
from dcgan.training.step import TrainingStep
from conftest import TINY, assert_same_training_state, flat_tensors, snapshot
from dcgan.plots import read_metrics
from dcgan.checkpoint import load_checkpoint

# 512 images in batches of 48: 11 batches an epoch, the last one partial (32 images), so 24 steps
# cross two epoch boundaries. Rows every 5 steps and checkpoints every 6: checkpoints fall on steps
# that are not multiples of --log-every.
SCHEDULE = ("--batch-size", "48", "--log-every", "5", "--checkpoint-every", "6", "--seed", "7")
LOSS_COLUMNS = ("step", "epoch", "d_loss", "g_loss", "d_real", "d_fake")

pytestmark = pytest.mark.usefixtures("one_thread")


def train(run_cli, idx_dir: Path, out: Path, *extra: str) -> None:
    code, _, err = run_cli("train", "--data", idx_dir, "--out", out, *TINY, *SCHEDULE, *extra)
    assert code == 0, err


def resume(run_cli, out: Path, *extra: str) -> str:
    code, _, err = run_cli("train", "--resume", out, "--quiet", *extra)
    assert code == 0, err
    return err


def losses(run: Path) -> list[tuple[float, ...]]:
    """The metrics rows without their timing columns (which differ from run to run)."""
    return [tuple(row[name] for name in LOSS_COLUMNS) for row in read_metrics(run / "metrics.csv")]


def grids(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "samples").iterdir())}


def last(run: Path) -> dict:
    return load_checkpoint(run / "checkpoints" / "last.pt")


@pytest.fixture
def straight(run_cli, idx_dir: Path, tmp_path: Path) -> Path:
    """24 steps in one go, sample grids every 6 steps."""
    train(run_cli, idx_dir, tmp_path / "straight", "--steps", "24", "--sample-every", "6")
    return tmp_path / "straight"


@pytest.mark.slow
def test_half_then_resume_is_bit_identical_to_straight(run_cli, idx_dir, tmp_path, straight):
    split = tmp_path / "split"
    train(run_cli, idx_dir, split, "--steps", "12", "--sample-every", "6")
    assert last(split)["step"] == 12
    resume(run_cli, split, "--steps", "24")

    a, b = last(straight), last(split)
    assert_same_training_state(a, b)
    assert (a["step"], a["epoch"], a["batch"]) == (b["step"], b["epoch"], b["batch"]) == (24, 2, 2)
    rng_a, rng_b = flat_tensors(a["rng"]), flat_tensors(b["rng"])
    assert all(torch.equal(rng_a[k], rng_b[k]) for k in rng_a)
    assert losses(split) == losses(straight)
    assert [row[0] for row in losses(split)] == [5, 6, 10, 12, 15, 18, 20, 24]
    assert grids(split) == grids(straight)
    assert sorted(grids(split)) == [f"step_{s:07d}.png" for s in (0, 6, 12, 18, 24)]


@pytest.mark.parametrize("recipe", [("--conditional", "--ema-decay", "0.9"),
                                    ("--clusters", "3", "--mode-seeking", "0.5", "--ema-decay", "0.9"),
                                    ("--ema-decay", "0.99", "--loss", "hinge", "--spectral-norm", "--augment",
                                     "--d-steps", "2")])
@pytest.mark.slow
def test_resume_with_an_average_and_other_recipe_options_is_bit_identical(run_cli, idx_dir, tmp_path, recipe):
    straight, split = tmp_path / "straight-ema", tmp_path / "split-ema"
    train(run_cli, idx_dir, straight, "--steps", "24", *recipe)
    train(run_cli, idx_dir, split, "--steps", "12", *recipe)
    resume(run_cli, split, "--steps", "24")

    a, b = last(straight), last(split)
    assert_same_training_state(a, b)
    assert a["ema"]["updates"] == b["ema"]["updates"] == 24
    ema_a, ema_b = flat_tensors(a["ema"]), flat_tensors(b["ema"])
    assert ema_a.keys() == ema_b.keys() and all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    assert losses(split) == losses(straight)


@pytest.mark.slow
def test_resume_after_a_crash_redoes_the_steps_past_the_checkpoint(run_cli, idx_dir, tmp_path, straight):
    crashed = tmp_path / "crashed"
    train(run_cli, idx_dir, crashed, "--steps", "12", "--sample-every", "6", "--keep-checkpoints", "2")
    checkpoints = crashed / "checkpoints"
    # What a kill in the middle of the step-12 save leaves: rows and the grid of step 12 already
    # written, last.pt still at step 6, a partial temporary file, a metrics row cut short.
    os.replace(checkpoints / "step_00000006.pt", checkpoints / "last.pt")
    (checkpoints / ".last.pt.tmp99999").write_bytes(b"PK\x03\x04 half a zip")
    with open(crashed / "metrics.csv", "a") as handle:
        handle.write("13,1,0.69")
    assert last(crashed)["step"] == 6

    resume(run_cli, crashed, "--steps", "24")

    assert_same_training_state(last(straight), last(crashed))
    assert losses(crashed) == losses(straight)
    assert grids(crashed) == grids(straight)
    assert not list(checkpoints.glob(".*tmp*"))


def test_steps_and_epochs_name_the_total_on_resume(run_cli, idx_dir, tmp_path):
    run = tmp_path / "run"
    train(run_cli, idx_dir, run, "--steps", "4")
    resume(run_cli, run, "--steps", "8")
    assert last(run)["step"] == 8
    assert [row[0] for row in losses(run)] == [4, 5, 6, 8]
    resume(run_cli, run, "--epochs", "1")  # 11 batches per epoch: 3 more steps
    assert (last(run)["step"], last(run)["epoch"], last(run)["batch"]) == (11, 1, 0)
    resume(run_cli, run, "--epochs", "1")  # already complete: nothing to do, nothing changes
    assert last(run)["step"] == 11
    assert [row[0] for row in losses(run)] == [4, 5, 6, 8, 10, 11]


def test_a_resume_already_past_its_goal_is_refused_before_the_data_is_clustered(run_cli, idx_dir, tmp_path,
                                                                                 monkeypatch):
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", idx_dir, "--out", run, "--preset", "default", "--image-size", "8",
                           "--quiet", "--sample-every", "0", "--batch-size", "48", "--steps", "12")
    assert code == 0, err
    assert "clustering 512 images" in err  # the default preset's k-means, which takes a while on real data

    def never(*args, **kwargs):
        raise AssertionError("the data was clustered")

    monkeypatch.setattr(labels, "cluster_images", never)
    before = snapshot(tmp_path)
    for flags, goal in ((("--steps", "4"), 4), (("--epochs", "1"), 11)):  # 11 batches of 48 an epoch
        code, _, err = run_cli("train", "--resume", run, "--quiet", *flags)
        assert code == 2
        assert err.splitlines() == [f"dcgan: error: {run / 'checkpoints' / 'last.pt'}: the run is already at step "
                                    f"12, past the {goal} steps asked for (--steps and --epochs name the run's total)"]
    assert snapshot(tmp_path) == before


def test_random_states_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    torch.save(state.capture_rng(), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.rand(5)  # move every generator on
    np.random.rand(5)
    random.random()
    state.restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]


# ---------------------------------------------------------------------------------------------
# Divergence: a non-finite loss or weight rolls back to the last checkpoint with lower rates
# ---------------------------------------------------------------------------------------------

DIVERGE = ("--steps", "12", "--batch-size", "16", "--log-every", "2", "--checkpoint-every", "4")


def poison_generator(monkeypatch, steps: set[int] | None = None, *, from_step: int | None = None) -> None:
    """After the generator update of the given calls, set one of its weights to NaN."""
    real, calls = TrainingStep.generator_step, [0]

    def step(self, fake, *args, **kwargs):
        loss = real(self, fake, *args, **kwargs)
        calls[0] += 1
        if (steps and calls[0] in steps) or (from_step is not None and calls[0] >= from_step):
            with torch.no_grad():
                self.gan.generator.upsample[0].weight[0, 0, 0, 0] = math.nan
        return loss

    monkeypatch.setattr(TrainingStep, "generator_step", step)


def spy_on_checkpoints(monkeypatch) -> list[dict]:
    """Record every payload written, so a test can check that none holds a non-finite number."""
    real, saved = loop.save_checkpoint, []

    def save(payload, directory, *, keep=1):
        saved.append(payload)
        return real(payload, directory, keep=keep)

    monkeypatch.setattr(loop, "save_checkpoint", save)
    return saved


def all_finite(payload: dict) -> bool:
    tensors = flat_tensors({k: payload[k] for k in ("generator", "discriminator")})
    return all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def test_a_nan_weight_rolls_back_with_half_the_learning_rates(run_cli, idx_dir, tmp_path, monkeypatch):
    # Step 8 is a checkpoint step and its losses were computed before the weight broke:
    # only the weight check stands between the NaN and the checkpoint.
    poison_generator(monkeypatch, {8})
    saved = spy_on_checkpoints(monkeypatch)
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", idx_dir, "--out", run, *TINY, *DIVERGE)
    assert code == 0, err
    assert "rolled back to step 4 with learning rates x0.5" in err
    assert [p["step"] for p in saved] == [0, 4, 8, 12]  # the retry's step 8 is the good one
    assert all(all_finite(p) for p in saved)
    final = last(run)
    assert (final["step"], final["rollbacks"], final["lr_scale"]) == (12, 1, 0.5)
    assert final["opt_g"]["param_groups"][0]["lr"] == pytest.approx(2e-4 * 0.5)
    assert final["opt_d"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 0.5)
    assert [row["step"] for row in read_metrics(run / "metrics.csv")] == [2, 4, 6, 8, 10, 12]


def test_a_nan_loss_rolls_back(run_cli, idx_dir, tmp_path, monkeypatch):
    real, calls = TrainingStep.generator_step, [0]

    def step(self, fake, *args, **kwargs):
        calls[0] += 1
        loss = real(self, fake, *args, **kwargs)
        return loss * math.nan if calls[0] == 6 else loss

    monkeypatch.setattr(TrainingStep, "generator_step", step)
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", idx_dir, "--out", run, *TINY, *DIVERGE)
    assert code == 0, err
    assert "rolled back to step 4" in err
    assert last(run)["rollbacks"] == 1
    assert all(math.isfinite(v) for row in losses(run) for v in row)


def test_a_lasting_divergence_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(
        run_cli, idx_dir, tmp_path, monkeypatch):
    poison_generator(monkeypatch, from_step=5)
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", idx_dir, "--out", run, *TINY, *DIVERGE)
    assert code == 2
    error = err.strip().splitlines()[-1]
    assert error.startswith("dcgan: error: training diverged") and "after 3 roll-backs" in error
    assert err.count("rolled back to step 4") == 3
    assert "Traceback" not in err
    kept = last(run)
    assert kept["step"] == 4 and all_finite(kept)
    assert [row["step"] for row in read_metrics(run / "metrics.csv")] == [2, 4]


def test_the_lowered_rates_survive_a_resume(run_cli, idx_dir, tmp_path, monkeypatch):
    poison_generator(monkeypatch, {8})
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", idx_dir, "--out", run, *TINY, *DIVERGE)
    assert code == 0, err
    resume(run_cli, run, "--steps", "14")  # the poisoned call (the 8th) does not come again
    final = last(run)
    assert (final["step"], final["rollbacks"], final["lr_scale"]) == (14, 1, 0.5)
    assert final["opt_d"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 0.5)

