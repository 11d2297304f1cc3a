"""Behaviour is pinned: every preset's weights after 30 CPU fp32 steps equal the recorded ones.

`tests/golden_weights.json` holds, per preset, a SHA-256 of the generator's, the discriminator's
and the moving average's weights (names and bytes) after
`dcgan train --preset P --steps 30 --precision fp32 --device cpu --seed 3` on one thread, and the
float64 sum and absolute sum of every tensor. On the machine type that recorded it (same torch
version, CPU model and kernels) the hash must match exactly; elsewhere kernels may round differently, so
each network's summed absolute weights must agree to 0.1% instead (an AMX Xeon against the AMD
EPYC that recorded them: within 0.07%; G's learning rate at 3e-4 instead of 2e-4: 0.2%).

Re-record (only for an intended change of behaviour): `python tests/test_golden.py --record`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from conftest import load_benchmark, single_thread
from dcgan.checkpoint import load_checkpoint
from dcgan.cli import main

GOLDEN = Path(__file__).with_name("golden_weights.json")
PRESETS = ("tutorial", "default", "conditional")
STEPS = 30


def environment() -> dict[str, str]:
    """What decides the exact rounding of CPU kernels (one instruction set still rounds differently by CPU model)."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu": load_benchmark("machine").cpu_name()}


def trained_weights(preset: str, out: Path) -> dict[str, torch.Tensor]:
    """Weights of G, D and G's moving average after STEPS steps of `preset` on the bundled MNIST."""
    with single_thread():
        code = main(["train", "--preset", preset, "--steps", str(STEPS), "--precision", "fp32", "--device", "cpu",
                     "--seed", "3", "--sample-every", "0", "--quiet", "--out", str(out)])
    assert code == 0
    payload = load_checkpoint(out / "checkpoints" / "last.pt")
    assert payload["step"] == STEPS
    weights = {f"generator/{k}": v for k, v in payload["generator"].items()}
    weights.update({f"discriminator/{k}": v for k, v in payload["discriminator"].items()})
    if "ema" in payload:
        weights.update({f"ema/{k}": v for k, v in payload["ema"]["module"].items()})
    return weights


def fingerprint(weights: dict[str, torch.Tensor]) -> dict:
    """The exact hash of the weights, and per-tensor sums for a tolerant comparison."""
    digest = hashlib.sha256()
    sums = {}
    for name in sorted(weights):
        tensor = weights[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
        if tensor.is_floating_point():
            sums[name] = [float(tensor.double().sum()), float(tensor.double().abs().sum())]
    return {"sha256": digest.hexdigest(), "sums": sums}


def network_total(fingerprinted: dict, network: str) -> float:
    """The summed absolute weights of one network ("generator", "discriminator", "ema") of a fingerprint."""
    return sum(absolute for name, (_, absolute) in fingerprinted["sums"].items() if name.startswith(network + "/"))


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.slow
def test_preset_weights_after_30_steps_are_unchanged(preset: str, tmp_path: Path) -> None:
    golden = json.loads(GOLDEN.read_text())
    expected = golden["presets"][preset]
    actual = fingerprint(trained_weights(preset, tmp_path / "run"))
    assert sorted(actual["sums"]) == sorted(expected["sums"]), "the networks' parameter names changed"
    if environment() == golden["environment"]:
        assert actual["sha256"] == expected["sha256"], f"{preset}: the weights after {STEPS} steps changed"
    else:  # other kernels round differently, and 30 Adam steps grow that in single small tensors (a bias
        # whose gradient is near zero): each network's total weight must still be the same to 0.1%
        for network in dict.fromkeys(name.split("/")[0] for name in expected["sums"]):
            assert network_total(actual, network) == pytest.approx(network_total(expected, network), rel=1e-3), network


def record() -> None:
    """Write golden_weights.json from the current code."""
    presets = {}
    for preset in PRESETS:
        with tempfile.TemporaryDirectory() as tmp:
            presets[preset] = fingerprint(trained_weights(preset, Path(tmp) / "run"))
    GOLDEN.write_text(json.dumps({"environment": environment(), "steps": STEPS, "presets": presets}, indent=1) + "\n")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_golden.py --record")
    record()
