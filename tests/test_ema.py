"""The generator's exponential moving average: update arithmetic, buffers, checkpoints and sampling."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import TINY
from dcgan.checkpoint import load_checkpoint, write_checkpoint
from dcgan.config import TrainConfig, config_from_dict
from dcgan.training.ema import EMA
from dcgan.sampling import load_generator
from dcgan.ops import recalibrate_batch_norm
from dcgan.networks.calibration import calibration_inputs
from dcgan.training.step import TrainingStep, build_gan

CPU = torch.device("cpu")


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_update_is_decay_times_average_plus_one_minus_decay_times_weights() -> None:
    module = net()
    ema = EMA(module, decay=0.9, warmup=False)
    before = [p.clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p))
    ema.update(module)
    for average, old, current in zip(ema.module.parameters(), before, module.parameters()):
        torch.testing.assert_close(average, 0.9 * old + 0.1 * current)
    assert ema.updates == 1


def test_buffers_are_copied_not_averaged() -> None:
    module = net()
    ema = EMA(module, decay=0.9, warmup=False)
    module.train()
    module(torch.randn(8, 3))  # moves batch norm's running statistics
    ema.update(module)
    for mine, theirs in zip(ema.module.buffers(), module.buffers()):
        assert torch.equal(mine, theirs)


def test_warmup_decay_starts_low_and_reaches_the_set_decay() -> None:
    ema = EMA(net(), decay=0.999)
    assert ema.current_decay() == pytest.approx(1 / 10)  # (1 + 0) / (10 + 0)
    ema.updates = 10
    assert ema.current_decay() == pytest.approx(11 / 20)
    ema.updates = 100_000
    assert ema.current_decay() == 0.999


def test_the_average_is_frozen_and_survives_a_state_dict_round_trip() -> None:
    module = net()
    ema = EMA(module, decay=0.99)
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training
    ema.update(module)
    copy = EMA(net(), decay=0.99)
    with torch.no_grad():
        for p in copy.module.parameters():
            p.zero_()
    copy.load_state_dict(ema.state_dict())
    assert copy.updates == 1
    assert all(torch.equal(a, b) for a, b in zip(copy.module.state_dict().values(), ema.module.state_dict().values()))


def test_a_bad_decay_is_refused() -> None:
    with pytest.raises(ValueError):
        EMA(net(), decay=1.0)


def test_each_training_step_updates_the_average_and_not_the_reverse() -> None:
    torch.manual_seed(0)
    gan = build_gan(TrainConfig(device="cpu", ema_decay=0.5), CPU)
    assert gan.ema is not None and gan.sampler() is gan.ema.module
    initial = [p.clone() for p in gan.ema.module.parameters()]
    TrainingStep(gan, latent_dim=16)(torch.rand(8, 1, 28, 28) * 2 - 1)
    assert gan.ema.updates == 1
    # first update: decay min(0.5, 1/10) = 0.1, so the average is 0.1 * initial + 0.9 * the new weights
    for average, old, current in zip(gan.ema.module.parameters(), initial, gan.generator.parameters()):
        torch.testing.assert_close(average, 0.1 * old + 0.9 * current)


@pytest.mark.slow
def test_the_sampler_normalises_with_its_own_statistics_and_leaves_the_random_state_alone() -> None:
    torch.manual_seed(0)
    gan = build_gan(TrainConfig(device="cpu", ema_decay=0.9, clusters=3), CPU)
    step = TrainingStep(gan, latent_dim=16)
    for _ in range(3):
        step(torch.rand(8, 1, 28, 28) * 2 - 1, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    assert gan.ema.stale
    copied = [b.clone() for b in gan.ema.module.buffers()]  # the trained generator's statistics
    rng = torch.get_rng_state()
    sampler = gan.sampler()
    assert torch.equal(torch.get_rng_state(), rng) and not gan.ema.stale
    expected = copy.deepcopy(sampler)
    recalibrate_batch_norm(expected, *calibration_inputs(expected, gan.calibration_samples))
    assert all(torch.equal(a, b) for a, b in zip(sampler.buffers(), expected.buffers()))
    assert not all(torch.equal(a, b) for a, b in zip(sampler.buffers(), copied) if a.is_floating_point())
    assert all(torch.equal(a, b) for a, b in zip(gan.state_dict()["ema"]["module"].values(),
                                                 sampler.state_dict().values()))


def test_no_average_without_ema_decay() -> None:
    gan = build_gan(TrainConfig(device="cpu"), CPU)
    assert gan.ema is None and gan.sampler() is gan.generator
    assert "ema" not in gan.state_dict()


@pytest.mark.slow
def test_checkpoints_hold_the_average_and_sampling_uses_it(run_cli, idx_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--data", idx_dir, "--out", out, *TINY, "--steps", "3", "--batch-size", "16",
                           "--ema-decay", "0.9")
    assert code == 0, err
    payload = load_checkpoint(out)
    assert payload["ema"]["updates"] == 3
    generator, config = load_generator(out, CPU)
    assert config.ema_decay == 0.9
    for name, value in generator.state_dict().items():
        assert torch.equal(value, payload["ema"]["module"][name])
    assert not all(torch.equal(payload["generator"][k], payload["ema"]["module"][k]) for k in payload["generator"])


@pytest.mark.slow
def test_an_older_checkpoint_samples_with_the_averages_own_statistics(run_cli, idx_dir: Path,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--data", idx_dir, "--out", out, *TINY, "--steps", "3", "--batch-size", "16",
                           "--ema-decay", "0.9")
    assert code == 0, err
    payload = load_checkpoint(out)
    assert payload["ema"]["own_statistics"] is True
    # as checkpoints were written before the average kept statistics of its own: the generator's, no flag
    older = copy.deepcopy(payload)
    del older["ema"]["own_statistics"]
    for name, value in payload["generator"].items():
        if "running_" in name:
            older["ema"]["module"][name] = value.clone()
    write_checkpoint({k: v for k, v in older.items() if k not in ("kind", "format_version")}, tmp_path / "older.pt")
    generator, _ = load_generator(tmp_path / "older.pt", CPU)
    recalibrated = generator.state_dict()
    assert any("running_" in name for name in recalibrated)
    for name, value in payload["ema"]["module"].items():  # the statistics training saves today
        torch.testing.assert_close(recalibrated[name], value)
    ema = build_gan(config_from_dict(older["config"], "older.pt"), CPU).ema
    ema.load_state_dict(older["ema"])
    assert ema.stale  # a resumed run recomputes them before it next samples or saves
    ema.load_state_dict(payload["ema"])
    assert not ema.stale
