"""benchmarks/ema_lengths.py: extra moving averages kept beside a run's own, without changing the run."""

import importlib.util
from pathlib import Path

import torch

from conftest import TINY
from dcgan.cli import main
from dcgan.training.ema import EMA

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ema_lengths.py"


def load_script():
    spec = importlib.util.spec_from_file_location("ema_lengths", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train(root: Path, data: Path) -> dict:
    assert main(["train", "--data", str(data), *TINY, "--batch-size", "16", "--steps", "5", "--ema-decay", "0.999",
                 "--out", str(root)]) == 0
    return torch.load(root / "checkpoints" / "last.pt", weights_only=True)


def test_the_preset_profile_reproduces_the_runs_own_average_and_the_run_is_unchanged(
        tmp_path, idx_dir, one_thread, monkeypatch) -> None:
    plain = train(tmp_path / "plain", idx_dir)
    monkeypatch.setattr(EMA, "update", EMA.update)  # undone after the test
    averages = load_script().keep_extra_averages([(8.0, 0.999), (1.0, 0.9999)])
    watched = train(tmp_path / "watched", idx_dir)

    assert all(torch.equal(plain["generator"][k], v) for k, v in watched["generator"].items())
    own = watched["ema"]["module"]
    same, longer = (average.module.state_dict() for average in averages)
    weights = [k for k, v in own.items() if v.is_floating_point() and "running" not in k]
    assert all(torch.equal(same[k], own[k]) for k in weights)
    assert not all(torch.equal(longer[k], own[k]) for k in weights)
    assert [average.updates for average in averages] == [5, 5]
