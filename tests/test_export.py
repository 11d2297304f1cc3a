"""`dcgan export`: ONNX files run with onnxruntime and TorchScript files match the PyTorch generator."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import train_tiny_runs
from dcgan.sampling import load_generator

ort = pytest.importorskip("onnxruntime", reason="the export extra (pip install 'dcgan[export]') is not installed")
onnx = pytest.importorskip("onnx")
pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, mnist_subset: dict) -> dict[str, Path]:
    """Tiny unconditional, conditional (with EMA) and cluster runs."""
    recipes = {"unconditional": (), "conditional": ("--conditional", "--ema-decay", "0.9"),
               "clusters": ("--clusters", "3", "--ema-decay", "0.9")}
    return train_tiny_runs(tmp_path_factory.mktemp("export"), mnist_subset, recipes, steps=3)


def reference(run: Path, z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    generator, _ = load_generator(run, CPU)
    with torch.no_grad():
        return generator(torch.from_numpy(z), None if labels is None else torch.from_numpy(labels)).numpy()


@pytest.mark.parametrize("kind", ["unconditional", "conditional", "clusters"])
def test_onnx_matches_the_pytorch_generator_at_any_batch_size(run_cli, runs, tmp_path: Path, kind: str) -> None:
    out = tmp_path / "g.onnx"
    code, stdout, err = run_cli("export", "--checkpoint", runs[kind], "--format", "onnx", "--out", out)
    assert code == 0, err
    session = ort.InferenceSession(str(out))
    labelled = kind != "unconditional"
    assert [i.name for i in session.get_inputs()] == (["z", "labels"] if labelled else ["z"])
    assert [o.name for o in session.get_outputs()] == ["images"]
    for n in (5, 1):
        z = np.random.default_rng(n).standard_normal((n, 4)).astype(np.float32)
        labels = (np.arange(n) % (10 if kind == "conditional" else 3)).astype(np.int64) if labelled else None
        feed = {"z": z, **({"labels": labels} if labelled else {})}
        (images,) = session.run(["images"], feed)
        assert images.shape == (n, 1, 8, 8) and images.dtype == np.float32
        assert np.abs(images - reference(runs[kind], z, labels)).max() <= 1e-4
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert (meta["latent_dim"], meta["image_size"], meta["channels"]) == ("4", "8", "1")
    assert meta["num_classes"] == {"unconditional": "0", "conditional": "10", "clusters": "3"}[kind]
    assert meta["inputs"] == ("z, labels" if labelled else "z")
    assert "round((images + 1) * 127.5)" in meta["pixels"]
    if kind == "clusters":
        assert sum(json.loads(meta["cluster_prior"])) == pytest.approx(1.0, abs=1e-5)
    assert "inputs z" + (", labels" if labelled else "") in stdout


def test_torchscript_matches_and_carries_its_metadata(run_cli, runs, tmp_path: Path) -> None:
    out = tmp_path / "g.pt"
    code, _, err = run_cli("export", "--checkpoint", runs["conditional"], "--format", "torchscript", "--out", out)
    assert code == 0, err
    files = {"dcgan.json": ""}
    loaded = torch.jit.load(str(out), _extra_files=files)
    z, labels = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32), np.array([1, 5, 9])
    with torch.no_grad():
        images = loaded(torch.from_numpy(z), torch.from_numpy(labels)).numpy()
    assert np.abs(images - reference(runs["conditional"], z, labels)).max() <= 1e-5
    assert json.loads(files["dcgan.json"])["conditioning"] == "classes"


def test_export_refuses_an_existing_file_and_names_a_missing_extra(run_cli, runs, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    existing = tmp_path / "there.onnx"
    existing.write_text("mine")
    code, _, err = run_cli("export", "--checkpoint", runs["unconditional"], "--out", existing)
    assert code == 2 and existing.read_text() == "mine" and len(err.strip().splitlines()) == 1
    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx":
            raise ImportError("No module named 'onnx'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    code, _, err = run_cli("export", "--checkpoint", runs["unconditional"], "--out", tmp_path / "g.onnx")
    assert code == 2 and err.strip() == "dcgan: error: --format onnx needs the export extra: pip install 'dcgan[export]'"
    assert not (tmp_path / "g.onnx").exists()
