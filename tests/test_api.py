"""The Python API: `dcgan.load(path)` and what the loaded generator gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import dcgan
from conftest import train_tiny_runs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, mnist_subset: dict) -> dict[str, Path]:
    """A tiny unconditional run, a conditional one (with EMA), a k-means-cluster one and a colour one."""
    recipes = {"plain": (), "conditional": ("--conditional", "--ema-decay", "0.9"), "clusters": ("--clusters", "3"),
               "colour": ("--channels", "3")}
    return train_tiny_runs(tmp_path_factory.mktemp("api"), mnist_subset, recipes)


def test_load_a_run_and_sample_uint8_images(runs: dict[str, Path]) -> None:
    g = dcgan.load(runs["plain"])
    assert (g.latent_dim, g.num_classes, g.image_size, g.channels) == (4, None, 8, 1)
    images = g.sample(5, seed=3)
    assert images.shape == (5, 8, 8) and images.dtype == np.uint8
    assert np.array_equal(images, g.sample(5, seed=3)) and not np.array_equal(images, g.sample(5, seed=4))
    same_file = dcgan.load(runs["plain"] / "checkpoints" / "last.pt", device="cpu")
    assert np.array_equal(same_file.sample(5, seed=3), images)


def test_calling_the_generator_gives_floats_in_range(runs: dict[str, Path]) -> None:
    g = dcgan.load(runs["colour"])
    images = g(torch.randn(3, g.latent_dim))
    assert images.shape == (3, 3, 8, 8) and images.dtype == torch.float32 and images.abs().max() <= 1
    assert not images.requires_grad
    assert g.sample(2).shape == (2, 8, 8, 3)
    # sample() is the same generator, scaled to bytes: 0 for -1, 255 for 1
    z = torch.randn(2, g.latent_dim, generator=torch.Generator().manual_seed(0))
    expected = ((g(z) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(g.sample(2, seed=0), expected)


def test_a_conditional_model_draws_the_classes_asked_for(runs: dict[str, Path]) -> None:
    g = dcgan.load(runs["conditional"])
    assert g.num_classes == 10
    sevens = g.sample(4, labels=7)
    assert np.array_equal(sevens, g.sample(4, labels=[7, 7, 7, 7]))
    assert not np.array_equal(sevens, g.sample(4, labels=[1, 2, 3, 4]))
    assert np.array_equal(g.sample(10), g.sample(10, labels=np.arange(10)))  # every class in turn by default
    assert g(torch.zeros(2, g.latent_dim), labels=[3, 3]).shape == (2, 1, 8, 8)


BIG = 2**70


@pytest.mark.parametrize(("run", "call", "message"), [
    ("plain", lambda g: g.sample(2.5), "num: must be a positive integer, got 2.5"),
    ("plain", lambda g: g.sample("3"), "num: must be a positive integer, got '3'"),
    ("plain", lambda g: g.sample(None), "num: must be a positive integer, got None"),
    ("plain", lambda g: g.sample(True), "num: must be a positive integer, got True"),
    ("plain", lambda g: g.sample(0), "num: must be a positive integer, got 0"),
    ("plain", lambda g: g.sample(2, seed=BIG),
     "seed: must be an integer from 0 to 2**64 - 1, got 1180591620717411303424"),
    ("plain", lambda g: g.sample(2, seed=2**64),
     "seed: must be an integer from 0 to 2**64 - 1, got 18446744073709551616"),
    ("plain", lambda g: g.sample(2, seed=-1), "seed: must be an integer from 0 to 2**64 - 1, got -1"),
    ("plain", lambda g: g.sample(2, seed=1.5), "seed: must be an integer from 0 to 2**64 - 1, got 1.5"),
    ("conditional", lambda g: g.sample(3, labels="7"), "labels: must be one class or 3 integer classes, got '7'"),
    ("conditional", lambda g: g.sample(3, labels=BIG),
     "labels: class 1180591620717411303424 is out of range; this model has classes 0-9"),
    ("conditional", lambda g: g.sample(1, labels=[1.5]), "labels: must be one class or 1 integer classes, got [1.5]"),
    ("conditional", lambda g: g.sample(2, labels=[True, False]),
     "labels: must be one class or 2 integer classes, got [True, False]"),
    ("conditional", lambda g: g.sample(3, labels=[1, 2]), "labels: must be one class or 3 integer classes, got [1, 2]"),
    ("conditional", lambda g: g.sample(2, labels=[[1], [1, 2]]),
     "labels: must be one class or 2 integer classes, got [[1], [1, 2]]"),
    ("conditional", lambda g: g.sample(3, labels=10), "labels: class 10 is out of range; this model has classes 0-9"),
    ("conditional", lambda g: g.sample(2, labels=np.array([-1, 3])),
     "labels: class -1 is out of range; this model has classes 0-9"),
    ("conditional", lambda g: g(torch.zeros(2, 4), labels=[3]),
     "labels: must be one class or 2 integer classes, got [3]"),
    ("plain", lambda g: g.sample(3, labels=1), "labels: this generator takes no class labels (an unconditional model); "
                                               "train a class-conditional model with --conditional (or --preset "
                                               "conditional)"),
    ("clusters", lambda g: g.sample(3, labels=1), "labels: this generator takes no class labels (trained on k-means "
                                                  "clusters, not classes); train a class-conditional model with "
                                                  "--conditional (or --preset conditional)"),
    ("plain", lambda g: g("hello"), "z: must be a float tensor or array of shape (N, 4), got str"),
    ("plain", lambda g: g(torch.full((2, 4), float("nan"))), "z: must be finite noise, got NaN or inf"),
    ("plain", lambda g: g(np.array([[0.0, 1.0, float("inf"), 0.0]])), "z: must be finite noise, got NaN or inf"),
    ("plain", lambda g: g(torch.zeros(2, 5)), "z: must have shape (N, 4) with N >= 1, got (2, 5)"),
    ("plain", lambda g: g(torch.zeros(4)), "z: must have shape (N, 4) with N >= 1, got (4,)"),
    ("plain", lambda g: g(torch.zeros(0, 4)), "z: must have shape (N, 4) with N >= 1, got (0, 4)"),
])
def test_every_bad_argument_raises_one_line_naming_it(runs: dict[str, Path], run: str, call, message: str) -> None:
    with pytest.raises(dcgan.UserError) as refused:
        call(dcgan.load(runs[run]))
    assert str(refused.value) == message


def test_the_largest_seed_torch_takes_is_accepted(runs: dict[str, Path]) -> None:
    g = dcgan.load(runs["plain"])
    assert g.sample(2, seed=2**64 - 1).shape == (2, 8, 8)
    assert np.array_equal(g.sample(2, seed=np.int64(5)), g.sample(2, seed=5))
    assert np.array_equal(dcgan.load(runs["conditional"]).sample(2, labels=np.uint8(3)),
                          dcgan.load(runs["conditional"]).sample(2, labels=[3, 3]))


def test_a_number_of_images_that_cannot_fit_is_refused_before_anything_is_allocated(runs: dict[str, Path]) -> None:
    with pytest.raises(dcgan.UserError) as refused:
        dcgan.load(runs["plain"]).sample(10**15)
    message = str(refused.value)
    assert message.startswith("num 1,000,000,000,000,000: needs about ") and "at most" in message
    assert "\n" not in message


@pytest.mark.parametrize(("path", "message"), [
    (None, "path: must be a run directory or a checkpoint file (str or Path), got None"),
    (123, "path: must be a run directory or a checkpoint file (str or Path), got 123"),
    ("/dev/zero", "/dev/zero: not a checkpoint file or a run directory (a device, pipe or socket)"),
])
def test_load_refuses_what_is_not_a_path_to_a_checkpoint(path, message: str) -> None:
    with pytest.raises(dcgan.UserError) as refused:
        dcgan.load(path)
    assert str(refused.value) == message


@pytest.mark.parametrize(("device", "cuda_devices", "message"), [
    ("tpu", 0, "device: must be one of None, auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    ("cuda:x", 0, "device: must be one of None, auto, cpu, cuda, cuda:N or mps, got 'cuda:x'"),
    (7, 0, "device: must be one of None, auto, cpu, cuda, cuda:N or mps, got 7"),
    ("cuda", 0, "device cuda: not available on this machine (it has no CUDA device)"),
    ("cuda:7", 0, "device cuda:7: not available on this machine (it has no CUDA device)"),
    ("cuda:7", 1, "device cuda:7: not available on this machine (it has 1 CUDA device, numbered from 0)"),
    (torch.device("cuda", 2), 2,
     "device cuda:2: not available on this machine (it has 2 CUDA devices, numbered from 0)"),
])
def test_load_refuses_a_device_this_machine_does_not_have(runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                         device, cuda_devices: int, message: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_devices > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda_devices)
    with pytest.raises(dcgan.UserError) as refused:
        dcgan.load(runs["plain"], device=device)
    assert str(refused.value) == message


def test_a_bad_path_raises_the_message_the_command_line_prints(tmp_path: Path) -> None:
    with pytest.raises(dcgan.UserError, match=f"checkpoint not found: {tmp_path / 'nothing'}"):
        dcgan.load(tmp_path / "nothing")
    with pytest.raises(dcgan.UserError, match="checkpoint not found: missing"):
        dcgan.load("missing")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(dcgan.UserError, match="is not a readable checkpoint"):
        dcgan.load(tmp_path / "junk.pt")
