"""Truncation: noise drawn closer to the latent's centre (z = psi * z) in the API, `generate`, `interpolate`,
`export`, and benchmarks/truncation.py; at psi 1 every output is today's."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dcgan
from conftest import load_benchmark, snapshot, train_tiny_runs
from dcgan.images import grid_image, to_uint8
from dcgan.interpolation import latent_walk, slerp
from dcgan.ops import seeded_noise
from dcgan.sampling import TruncatedGenerator, load_generator, truncated

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, mnist_subset: dict) -> dict[str, Path]:
    """Tiny unconditional, conditional (with EMA) and k-means-cluster runs (8x8 digits)."""
    recipes = {"plain": (), "conditional": ("--conditional", "--ema-decay", "0.9"), "clusters": ("--clusters", "3")}
    return train_tiny_runs(tmp_path_factory.mktemp("truncation"), mnist_subset, recipes)


def drawn(run: Path, noise: torch.Tensor, labels: torch.Tensor | None) -> np.ndarray:
    """uint8 images (N, H, W) of the run's sampling generator at exactly this noise and these labels."""
    generator, _ = load_generator(run, CPU)
    with torch.no_grad():
        return to_uint8(generator(noise, labels))[..., 0]


@pytest.mark.parametrize("kind", ["plain", "conditional", "clusters"])
def test_psi_one_is_today_s_samples_and_psi_scales_the_same_noise(runs: dict[str, Path], kind: str) -> None:
    g = dcgan.load(runs[kind])
    noise = seeded_noise(12, g.latent_dim, 5)
    labels = g.generator.sample_labels(12, seed=5)
    today = drawn(runs[kind], noise, labels)  # what sample() drew before truncation existed
    assert np.array_equal(g.sample(12, seed=5), today)
    assert np.array_equal(g.sample(12, seed=5, truncation=1.0), today)
    assert np.array_equal(g.sample(12, seed=5, truncation=1), today)
    half = g.sample(12, seed=5, truncation=0.5)
    assert np.array_equal(half, drawn(runs[kind], 0.5 * noise, labels))
    assert not np.array_equal(half, today)


def test_a_truncated_conditional_model_keeps_the_classes_asked_for(runs: dict[str, Path]) -> None:
    g = dcgan.load(runs["conditional"])
    sevens = g.sample(4, seed=2, labels=7, truncation=np.float32(0.25))
    assert np.array_equal(sevens, drawn(runs["conditional"], 0.25 * seeded_noise(4, 4, 2), torch.full((4,), 7)))


def test_the_truncated_generator_has_the_generator_interface_and_psi_one_is_the_generator_itself(
        runs: dict[str, Path]) -> None:
    generator, _ = load_generator(runs["conditional"], CPU)
    assert truncated(generator, 1.0) is generator
    wrapped = truncated(generator, 0.5)
    assert isinstance(wrapped, TruncatedGenerator)
    assert (wrapped.latent_dim, wrapped.num_classes, wrapped.takes_labels, wrapped.label_classes,
            wrapped.conditioning) == (4, 10, True, 10, "classes")
    assert torch.equal(wrapped.sample_labels(7, seed=1), generator.sample_labels(7, seed=1))
    z, start, end = torch.randn(3, 4), torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    with torch.no_grad():
        assert torch.equal(wrapped.morph(z, start, end, 0.3), generator.morph(0.5 * z, start, end, 0.3))


@pytest.mark.parametrize("value", [0, 0.0, -0.5, 1.5, 1.0000001, float("nan"), float("inf"), "0.5", True, None,
                                   [0.5]])
def test_a_bad_truncation_in_python_is_one_line_naming_it(runs: dict[str, Path], value) -> None:
    g = dcgan.load(runs["plain"])
    with pytest.raises(dcgan.UserError) as refused:
        g.sample(2, truncation=value)
    message = str(refused.value)
    assert message.startswith("truncation: must be a number greater than 0 and at most 1 (1: no truncation), got ")
    assert "\n" not in message


@pytest.mark.parametrize("kind", ["plain", "conditional"])
def test_generate_at_psi_one_writes_today_s_samples_and_at_psi_the_api_s(run_cli, runs: dict[str, Path],
                                                                         tmp_path: Path, kind: str) -> None:
    outputs = {}
    for name, flags in {"none": (), "one": ("--truncation", "1"), "psi": ("--truncation", "0.6")}.items():
        out = tmp_path / f"{name}.npy"
        code, _, err = run_cli("generate", "--checkpoint", runs[kind], "--num", "6", "--seed", "3", "--format", "npy",
                               "--out", out, "--device", "cpu", *flags)
        assert code == 0, err
        outputs[name] = out.read_bytes()
    assert outputs["one"] == outputs["none"]
    g = dcgan.load(runs[kind])
    labels = None if kind == "plain" else np.repeat(np.arange(10), 6)  # a class per row of 6
    expected = g.sample(len(labels) if labels is not None else 6, seed=3, labels=labels, truncation=0.6)
    assert np.array_equal(np.load(tmp_path / "psi.npy"), expected)
    assert outputs["psi"] != outputs["none"]


def test_interpolate_scales_the_whole_walk(run_cli, runs: dict[str, Path], tmp_path: Path) -> None:
    for name, flags in {"none": (), "one": ("--truncation", "1.0"), "psi": ("--truncation", "0.5")}.items():
        code, _, err = run_cli("interpolate", "--checkpoint", runs["plain"], "--out", tmp_path / f"{name}.png",
                               "--frames", "3", "--anchors", "2", "--num", "2", "--seed", "4", "--device", "cpu",
                               *flags)
        assert code == 0, err
    pictures = {name: np.asarray(Image.open(tmp_path / f"{name}.png")) for name in ("none", "one", "psi")}
    assert np.array_equal(pictures["one"], pictures["none"])
    anchors = torch.randn(2, 2, 4, generator=torch.Generator().manual_seed(4))
    path = 0.5 * latent_walk(anchors, 3)  # (6 frames, 2 walks, 4)
    frames = np.stack([drawn(runs["plain"], noise, None) for noise in path])  # (6, 2, 8, 8)
    walks = frames.transpose(1, 0, 2, 3).reshape(-1, 8, 8, 1)  # a walk per row
    assert np.array_equal(pictures["psi"], np.asarray(grid_image(walks, columns=6)))
    # the scaled walk is the walk between the scaled anchors (slerp is linear in its end points)
    torch.testing.assert_close(slerp(0.5 * anchors[0], 0.5 * anchors[1], 1 / 3), path[1])


def test_a_class_morph_is_truncated_too(run_cli, runs: dict[str, Path], tmp_path: Path) -> None:
    code, _, err = run_cli("interpolate", "--checkpoint", runs["conditional"], "--out", tmp_path / "morph.png",
                           "--labels", "2,5", "--frames", "2", "--num", "1", "--seed", "1", "--truncation", "0.3",
                           "--device", "cpu")
    assert code == 0, err
    first = np.asarray(Image.open(tmp_path / "morph.png"))[2:10, 2:10]  # frame 0: class 2 at the walk's noise
    noise = torch.randn(1, 4, generator=torch.Generator().manual_seed(1))
    assert np.array_equal(first, drawn(runs["conditional"], 0.3 * noise, torch.tensor([2]))[0])


@pytest.mark.parametrize("command", ["generate", "interpolate", "export", "demo"])
@pytest.mark.parametrize("value", ["1.5", "-0.2", "0"])
def test_a_truncation_outside_0_to_1_is_one_line_and_writes_nothing(run_cli, runs: dict[str, Path], tmp_path: Path,
                                                                    command: str, value: str) -> None:
    out = {"generate": "g.png", "interpolate": "w.gif", "export": "g.onnx", "demo": None}[command]
    before = snapshot(tmp_path)
    code, stdout, err = run_cli(command, "--checkpoint", runs["plain"], *(("--out", tmp_path / out) if out else ()),
                                "--truncation", value)
    assert code == 2 and stdout == ""
    assert err == (f"dcgan: error: argument --truncation: must be a number greater than 0 and at most 1 "
                   f"(1: no truncation), got {value!r}\n")
    assert snapshot(tmp_path) == before


def export_extra() -> tuple:
    """onnxruntime and onnx, or a skip when the export extra is not installed."""
    reason = "the export extra (pip install 'dcgan[export]') is not installed"
    return pytest.importorskip("onnxruntime", reason=reason), pytest.importorskip("onnx", reason=reason)


@pytest.mark.parametrize("kind", ["plain", "conditional"])
def test_an_onnx_file_applies_its_truncation_and_keeps_its_inputs(run_cli, runs: dict[str, Path], tmp_path: Path,
                                                                  kind: str) -> None:
    ort, onnx = export_extra()
    z = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    labels = np.array([0, 3, 9, 1, 2], dtype=np.int64) if kind == "conditional" else None
    generator, _ = load_generator(runs[kind], CPU)
    for flags, psi in (((), 1.0), (("--truncation", "0.7"), 0.7)):
        out = tmp_path / f"g{psi}.onnx"
        code, _, err = run_cli("export", "--checkpoint", runs[kind], "--out", out, *flags)
        assert code == 0, err
        session = ort.InferenceSession(str(out))
        assert [i.name for i in session.get_inputs()] == (["z", "labels"] if labels is not None else ["z"])
        (images,) = session.run(["images"], {"z": z, **({"labels": labels} if labels is not None else {})})
        with torch.no_grad():
            expected = generator(psi * torch.from_numpy(z), None if labels is None else torch.from_numpy(labels))
        assert np.abs(images - expected.numpy()).max() <= 1e-4
        meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
        assert float(meta["truncation"]) == psi
        assert meta["noise"] == ("z ~ N(0, 1)" if psi == 1 else "z ~ N(0, 1), multiplied by truncation 0.7 in the file")
    untruncated = generator(torch.from_numpy(z), None if labels is None else torch.from_numpy(labels))
    assert np.abs(images - untruncated.detach().numpy()).max() > 1e-3  # the 0.7 file is not the untruncated one


def test_a_torchscript_file_applies_its_truncation_and_says_so(run_cli, runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "g.pt"
    code, _, err = run_cli("export", "--checkpoint", runs["clusters"], "--format", "torchscript", "--out", out,
                           "--truncation", "0.25")
    assert code == 0, err
    files = {"dcgan.json": ""}
    loaded = torch.jit.load(str(out), _extra_files=files)
    assert json.loads(files["dcgan.json"])["truncation"] == "0.25"
    generator, _ = load_generator(runs["clusters"], CPU)
    z, labels = torch.randn(3, 4), torch.tensor([0, 1, 2])
    with torch.no_grad():
        torch.testing.assert_close(loaded(z, labels), generator(0.25 * z, labels), atol=1e-5, rtol=0)


def test_the_benchmark_scores_each_psi_and_draws_the_same_noise_in_every_row_of_its_sheet(
        tmp_path: Path, mnist_subset: dict, idx_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "training").mkdir()
    run = train_tiny_runs(tmp_path / "training", mnist_subset, {"digits": ("--image-size", "28")})["digits"]
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", [
        "truncation.py", "--checkpoint", str(run), "--psi", "1,0.5", "--num", "50", "--reference", str(idx_dir),
        "--json", str(out / "t.json"), "--markdown", str(out / "t.md"), "--plot", str(out / "t.png"),
        "--sheet", str(out / "sheet.png"), "--sheet-columns", "3"])
    load_benchmark("truncation").main()
    report = json.loads((out / "t.json").read_text())
    assert report["truncations"] == [1.0, 0.5] and report["num_samples"] == 50
    assert [(row["preset"], row["truncation"]) for row in report["runs"]] == [("tutorial", 1.0), ("tutorial", 0.5)]
    assert all(math.isfinite(row["fid"]) and 0 <= row["precision"] <= 1 for row in report["runs"])
    assert [(s["preset"], s["truncation"], s["checkpoints"], s["fid"]["sd"]) for s in report["summary"]] == [
        ("tutorial", 1.0, 1, 0.0), ("tutorial", 0.5, 1, 0.0)]
    table = (out / "t.md").read_text()
    assert "| `tutorial` | 0.5 | 1 |" in table
    assert Image.open(out / "t.png").format == "PNG"
    sheet = np.asarray(Image.open(out / "sheet.png"))
    scale, left = 2, 44
    assert sheet.shape == (scale * (2 * 30 + 2), left + scale * (3 * 30 + 2))
    g = dcgan.load(run)
    for row, psi in enumerate((1.0, 0.5)):
        top = scale * (2 + 30 * row)
        shown = sheet[top:top + scale * 28:scale, left + scale * 2:left + scale * 30:scale]
        assert np.array_equal(shown, g.sample(3, seed=0, truncation=psi)[0])
