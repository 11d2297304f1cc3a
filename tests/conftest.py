"""Shared fixtures: small datasets written in tmp folders, and a helper to run the CLI."""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcgan.cli import main
from dcgan.data import bundled_mnist_dir, read_idx

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> Path:
    """Write a uint8 array as an IDX file (gzip-compressed when `compress`)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


@pytest.fixture(scope="session")
def mnist_subset() -> dict[str, np.ndarray]:
    """The first 512 training and 256 test images of the bundled MNIST, with labels."""
    src = bundled_mnist_dir()
    return {
        "train_images": read_idx(src / "train-images-idx3-ubyte.gz")[:512],
        "train_labels": read_idx(src / "train-labels-idx1-ubyte.gz")[:512],
        "test_images": read_idx(src / "t10k-images-idx3-ubyte.gz")[:256],
        "test_labels": read_idx(src / "t10k-labels-idx1-ubyte.gz")[:256],
    }


@pytest.fixture
def idx_dir(tmp_path: Path, mnist_subset: dict[str, np.ndarray]) -> Path:
    """A directory of small uncompressed IDX files in MNIST's naming."""
    root = tmp_path / "idx"
    root.mkdir()
    write_idx(root / "train-images-idx3-ubyte", mnist_subset["train_images"])
    write_idx(root / "train-labels-idx1-ubyte", mnist_subset["train_labels"])
    write_idx(root / "t10k-images-idx3-ubyte", mnist_subset["test_images"])
    write_idx(root / "t10k-labels-idx1-ubyte", mnist_subset["test_labels"])
    return root


@pytest.fixture
def image_folder(tmp_path: Path, mnist_subset: dict[str, np.ndarray]) -> Path:
    """An image folder with one subfolder per digit: 10 RGB PNGs each."""
    root = tmp_path / "folder"
    counts: dict[int, int] = {}
    for image, label in zip(mnist_subset["train_images"], mnist_subset["train_labels"]):
        label = int(label)
        if counts.get(label, 0) >= 10:
            continue
        counts[label] = counts.get(label, 0) + 1
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).convert("RGB").save(root / str(label) / f"{counts[label]}.png")
    return root


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep dataset caches inside the test's tmp folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("DCGAN_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture):
    """Run `dcgan ARGS...` in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


# Reliability helpers: a tiny model (8x8 images) trains a step in milliseconds on one CPU thread.
# The `tutorial` preset keeps the networks plain; tests of the recipes add their options.
TINY = ("--preset", "tutorial", "--image-size", "8", "--latent-dim", "4", "--quiet", "--sample-every", "0")
STATE_KEYS = ("generator", "discriminator", "opt_g", "opt_d")


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op thread inside: faster for a tiny model on a small machine, and the same every run."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture
def one_thread():
    """Train on one intra-op thread (`single_thread`)."""
    with single_thread():
        yield


def flat_tensors(value, prefix: str = "") -> dict:
    """Every tensor inside nested dicts/lists/tuples, keyed by its path."""
    import torch

    if isinstance(value, torch.Tensor):
        return {prefix: value}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    found = {}
    for key, item in items:
        found.update(flat_tensors(item, f"{prefix}/{key}"))
    return found


def assert_same_training_state(a: dict, b: dict) -> None:
    """Bit-identical networks and optimisers (every tensor compared with torch.equal)."""
    import torch

    left, right = flat_tensors({k: a[k] for k in STATE_KEYS}), flat_tensors({k: b[k] for k in STATE_KEYS})
    assert left.keys() == right.keys()
    different = [key for key in left if not torch.equal(left[key], right[key])]
    assert not different, f"tensors differ: {different[:5]}"


def snapshot(root: Path, *, skip: tuple[str, ...] = ("cache",)) -> dict[str, bytes]:
    """Every file (with its bytes) and folder under `root`, but those in `skip`: proof that nothing changed."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<folder>" for p in sorted(root.rglob("*"))
            if p.relative_to(root).parts[0] not in skip}


def train_tiny_runs(root: Path, mnist_subset: dict, recipes: dict[str, tuple[str, ...]], *, steps: int = 2
                    ) -> dict[str, Path]:
    """A few `steps`-step runs of the tiny model on 512 MNIST images, one per recipe (name: extra flags), each on
    one thread (as `one_thread`: module-wide fixtures are set up before it)."""
    data = root / "idx"
    data.mkdir()
    write_idx(data / "train-images-idx3-ubyte", mnist_subset["train_images"])
    write_idx(data / "train-labels-idx1-ubyte", mnist_subset["train_labels"])
    with single_thread():
        for name, flags in recipes.items():
            assert main(["train", "--data", str(data), *TINY, "--batch-size", "16", "--steps", str(steps), *flags,
                         "--out", str(root / name)]) == 0
    return {name: root / name for name in recipes}


def wait_for_child(condition, child, timeout: float = 60) -> None:
    """Poll `condition` until it holds; fail the test if the child process `child` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if child.poll() is not None:
            pytest.fail(f"the child exited early ({child.returncode}): {child.stderr.read()}")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail("timed out waiting for the child")
        time.sleep(0.02)


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module (its folder on the path for its `machine` and `roofline` imports)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module
