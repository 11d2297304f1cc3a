"""The shared helpers: pairwise distances, eval mode, and the atomic write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from dcgan.files import atomic_write, remove_temporaries, replace_file
from dcgan.errors import UserError
from dcgan.ops import eval_mode, recalibrate_batch_norm, squared_distances


def test_squared_distances_known_answer_and_exact_zeros() -> None:
    a = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    b = torch.tensor([[3.0, 4.0], [0.0, 1.0], [0.0, 0.0]])
    assert squared_distances(a, b).tolist() == [[25.0, 1.0, 0.0], [0.0, 18.0, 25.0]]
    x = torch.randn(50, 7, generator=torch.Generator().manual_seed(0)) * 1000
    same = squared_distances(x, x)
    assert same.min() >= 0  # rounding of |a|² - 2ab + |b|² is clamped
    torch.testing.assert_close(same, torch.cdist(x.double(), x.double()).square().float(), rtol=1e-4, atol=1.0)
    norms = x.square().sum(1, keepdim=True)
    assert torch.equal(squared_distances(x, x[:3], a_squared_norms=norms), squared_distances(x, x[:3]))


def test_eval_mode_restores_each_modules_own_mode() -> None:
    training, frozen = nn.Dropout(0.5).train(), nn.Dropout(0.5).eval()
    with eval_mode(training, frozen):
        assert not training.training and not frozen.training
    assert training.training and not frozen.training
    with pytest.raises(RuntimeError), eval_mode(training):
        raise RuntimeError
    assert training.training


def test_atomic_write_fsyncs_file_and_folder_then_renames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced, real_fsync = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    target = tmp_path / "config.toml"
    atomic_write(target, lambda tmp: tmp.write_text("a = 1\n"))
    assert target.read_text() == "a = 1\n" and [p.name for p in tmp_path.iterdir()] == ["config.toml"]
    assert ".config.toml.tmp" in synced[0] and synced[0].endswith(".toml") and synced[1] == str(tmp_path)
    atomic_write(target, lambda tmp: None)  # nothing to write: the file stays
    assert target.read_text() == "a = 1\n"


def test_a_failed_atomic_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "metrics.csv"
    target.write_text("old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("ne")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, half_then_fail)
    with pytest.raises(UserError, match=f"cannot write {target}: No space left on device"):
        replace_file(target, half_then_fail)
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"] and target.read_text() == "old"


def test_remove_temporaries_deletes_only_staged_files(tmp_path: Path) -> None:
    for name in ("last.pt", ".last.pt.tmp123.pt", ".step_0000001.png.tmp9.png", "notes.tmp"):
        (tmp_path / name).write_text("x")
    remove_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "notes.tmp"]


def test_recalibrated_batch_norm_holds_the_statistics_of_its_input_layer_by_layer() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2), nn.BatchNorm1d(2)).train()
    x = torch.randn(64, 3) * 5 + 2
    recalibrate_batch_norm(net, x)
    assert net.training  # the mode is restored
    first = net[0](x)
    torch.testing.assert_close(net[1].running_mean, first.mean(0))
    torch.testing.assert_close(net[1].running_var, first.var(0))  # unbiased, as batch norm keeps it
    # the second layer sees the first normalised with its new statistics (eval mode), not the old ones
    second = net[2]((first - first.mean(0)) / (first.var(0) + net[1].eps).sqrt() * net[1].weight + net[1].bias)
    torch.testing.assert_close(net[3].running_mean, second.mean(0))
    torch.testing.assert_close(net[3].running_var, second.var(0))
