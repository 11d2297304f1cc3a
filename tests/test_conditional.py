"""Conditional networks, label handling, spectral norm, and `generate --label` / `evaluate` of a conditional model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn.utils import parametrize

from conftest import TINY
from dcgan.plots import read_metrics
from dcgan.checkpoint import load_checkpoint
from dcgan.networks.labelled import ConditionalGenerator, ProjectionDiscriminator
from dcgan.networks.tutorial import TutorialDiscriminator, TutorialGenerator
from dcgan.config import TrainConfig
from dcgan.errors import UserError
from dcgan.evaluation.classifier import embed, load_classifier
from dcgan.sampling import generate, load_generator, parse_labels
from dcgan.training.losses import bce_discriminator
from dcgan.training.step import TrainingStep, build_gan, wrong_labels

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32), (1, 8)])
def test_conditional_shapes(channels: int, size: int) -> None:
    generator = ConditionalGenerator(TutorialGenerator, latent_dim=16, num_classes=10, channels=channels, image_size=size)
    images = generator(torch.randn(5, 16), torch.tensor([0, 1, 2, 3, 9]))
    assert images.shape == (5, channels, size, size)
    assert images.min() >= -1 and images.max() <= 1
    discriminator = ProjectionDiscriminator(TutorialDiscriminator(channels=channels, image_size=size), num_classes=10)
    assert discriminator.logits(images, torch.tensor([0, 1, 2, 3, 9])).shape == (5, 1)


def test_a_generator_says_whether_it_takes_labels_and_which_classes_a_user_may_ask_for() -> None:
    from dcgan.networks.dcgan import DCGANGenerator
    from dcgan.networks.labelled import ClusterGenerator

    kinds = {"tutorial": TutorialGenerator(), "dcgan": DCGANGenerator(image_size=32),
             "classes": ConditionalGenerator(TutorialGenerator, num_classes=7),
             "clusters": ClusterGenerator(TutorialGenerator, num_clusters=3)}
    assert {name: (g.takes_labels, g.label_classes) for name, g in kinds.items()} == {
        "tutorial": (False, None), "dcgan": (False, None), "classes": (True, 7), "clusters": (True, None)}


def test_forward_and_morph_share_the_path_from_the_embedding() -> None:
    torch.manual_seed(0)
    generator = ConditionalGenerator(TutorialGenerator, latent_dim=16, num_classes=10).eval()
    z, start, end = torch.randn(3, 16), torch.tensor([0, 4, 9]), torch.tensor([1, 2, 3])
    with torch.no_grad():
        torch.testing.assert_close(generator.morph(z, start, end, 0.0), generator(z, start))
        torch.testing.assert_close(generator.morph(z, start, end, 1.0), generator(z, end))
        torch.testing.assert_close(generator.from_embedding(z, generator.embed(end)), generator(z, end))


def test_the_label_changes_the_generated_image() -> None:
    torch.manual_seed(0)
    generator = ConditionalGenerator(TutorialGenerator, latent_dim=16, num_classes=10).eval()
    z = torch.randn(1, 16).repeat(2, 1)
    images = generator(z, torch.tensor([3, 7]))
    assert not torch.equal(images[0], images[1])


def test_projection_adds_the_inner_product_of_the_class_embedding_and_the_features() -> None:
    torch.manual_seed(0)
    discriminator = ProjectionDiscriminator(TutorialDiscriminator(), num_classes=10).eval()  # no dropout
    x = torch.rand(1, 1, 28, 28).repeat(2, 1, 1, 1) * 2 - 1
    logits = discriminator.logits(x, torch.tensor([2, 5]))
    features = discriminator.features(x[:1])[0]
    expected = (discriminator.embed.weight[2] - discriminator.embed.weight[5]) @ features
    torch.testing.assert_close(logits[0, 0] - logits[1, 0], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("labels", [[0, 10], [-1, 3]])
def test_out_of_range_labels_are_a_clear_error(labels: list[int]) -> None:
    generator = ConditionalGenerator(TutorialGenerator, num_classes=10)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 9\]"):
        generator(torch.randn(2, 16), torch.tensor(labels))
    discriminator = ProjectionDiscriminator(TutorialDiscriminator(), num_classes=10)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 9\]"):
        discriminator.logits(torch.zeros(2, 1, 28, 28), torch.tensor(labels))


def test_float_labels_and_mismatched_counts_are_refused() -> None:
    generator = ConditionalGenerator(TutorialGenerator, num_classes=10)
    with pytest.raises(ValueError, match="integer"):
        generator(torch.randn(2, 16), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="3 noise vectors but 2 labels"):
        generator(torch.randn(3, 16), torch.tensor([1, 2]))


@pytest.mark.parametrize("conditional", [False, True])
def test_spectral_norm_is_present_only_when_asked_for(conditional: bool) -> None:
    def layers(gan) -> list[nn.Module]:
        return [m for m in gan.discriminator.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]

    plain = build_gan(TrainConfig(device="cpu", conditional=conditional, num_classes=10), CPU)
    assert not any(parametrize.is_parametrized(m) for m in layers(plain))
    normed = build_gan(TrainConfig(device="cpu", conditional=conditional, num_classes=10, spectral_norm=True), CPU)
    assert len(layers(normed)) == (4 if conditional else 3)
    assert all(parametrize.is_parametrized(m, "weight") for m in layers(normed))
    assert not any(parametrize.is_parametrized(m) for m in normed.generator.modules())
    # after a few power iterations the largest singular value of each normalised weight is about 1
    normed.discriminator.train()
    for _ in range(20):
        normed.discriminator.logits(torch.zeros(2, 1, 28, 28), *([torch.tensor([0, 1])] if conditional else []))
    classify = normed.discriminator.classify.weight
    assert torch.linalg.matrix_norm(classify, ord=2).item() == pytest.approx(1.0, rel=1e-2)


def test_wrong_labels_are_every_other_class_never_the_right_one() -> None:
    torch.manual_seed(0)
    labels = torch.arange(10).repeat(200)
    wrong = wrong_labels(labels, 10)
    assert wrong.shape == labels.shape and not (wrong == labels).any()
    assert wrong.min() >= 0 and wrong.max() <= 9
    for label in range(10):  # each class's wrong labels cover the nine others
        assert set(wrong[labels == label].tolist()) == set(range(10)) - {label}


def test_mismatched_labels_add_real_images_with_wrong_labels_to_the_fakes() -> None:
    """L_D = ½ [BCE(D(x, y), 1) + ½ (BCE(D(G(z, y), y), 0) + BCE(D(x, y'), 0))], y' drawn by `wrong_labels`."""
    config = TrainConfig(device="cpu", precision="fp32", conditional=True, num_classes=10, mismatched_labels=True)
    torch.manual_seed(0)
    gan = build_gan(config, CPU)
    real, fake = torch.rand(8, 1, 28, 28) * 2 - 1, torch.rand(8, 1, 28, 28) * 2 - 1
    labels = torch.arange(8)
    torch.manual_seed(1)  # the same wrong labels and dropout masks in both computations
    wrong = wrong_labels(labels, 10)
    with torch.no_grad():
        logits = gan.discriminator.logits(torch.cat([real, fake, real]), torch.cat([labels, labels, wrong]))
    real_logits, fake_logits, mismatched_logits = logits.split(8)
    expected = bce_discriminator(real_logits, torch.cat([fake_logits, mismatched_logits]))
    torch.manual_seed(1)
    d_loss, _, d_fake = TrainingStep.from_config(gan, config, CPU).discriminator_step(real, fake, labels)
    assert d_loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert d_fake.item() == pytest.approx(torch.sigmoid(fake_logits).mean().item(), rel=1e-5)


@pytest.mark.parametrize(("text", "expected"), [("7", [7]), ("0-9", list(range(10))), ("1,3,5", [1, 3, 5]),
                                                ("0-2,7", [0, 1, 2, 7]), ("3,3", [3])])
def test_parse_labels(text: str, expected: list[int]) -> None:
    assert parse_labels(text, 10) == expected


@pytest.mark.parametrize(("text", "message"), [("10", "out of range"), ("seven", "expected class numbers"),
                                               ("-1", "expected class numbers"), ("5-2", "is empty"),
                                               ("", "expected class numbers")])
def test_parse_labels_refuses_bad_input(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_labels(text, 10)


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------

def train_conditional(run_cli, data: Path, out: Path, *extra: str) -> Path:
    code, _, err = run_cli("train", "--data", data, "--out", out, "--conditional", "--steps", "2",
                           "--batch-size", "16", *extra)
    assert code == 0, err
    return out


@pytest.fixture
def tiny_conditional(run_cli, idx_dir: Path, tmp_path: Path) -> Path:
    return train_conditional(run_cli, idx_dir, tmp_path / "cond", *TINY, "--ema-decay", "0.9")


@pytest.fixture
def tiny_unconditional(run_cli, idx_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "plain"
    code, _, err = run_cli("train", "--data", idx_dir, "--out", out, *TINY, "--steps", "2", "--batch-size", "16")
    assert code == 0, err
    return out


def test_num_classes_comes_from_the_data_and_is_stored(tiny_conditional: Path) -> None:
    config = load_checkpoint(tiny_conditional)["config"]
    assert config["conditional"] is True and config["num_classes"] == 10
    assert "num_classes = 10" in (tiny_conditional / "config.toml").read_text()


def test_an_image_folders_class_subfolders_are_the_classes(run_cli, image_folder: Path, tmp_path: Path) -> None:
    (image_folder / "extra").mkdir()
    Image.new("RGB", (28, 28)).save(image_folder / "extra" / "1.png")
    out = train_conditional(run_cli, image_folder, tmp_path / "folder-run", *TINY)
    assert load_checkpoint(out)["config"]["num_classes"] == 11


def test_generate_label_writes_one_subfolder_per_class(run_cli, tiny_conditional: Path, tmp_path: Path) -> None:
    code, out, err = run_cli("generate", "--checkpoint", tiny_conditional, "--label", "7", "--num", "3",
                             "--out", tmp_path / "sevens")
    assert code == 0, err
    assert [p.name for p in (tmp_path / "sevens").iterdir()] == ["7"]
    assert len(list((tmp_path / "sevens" / "7").glob("*.png"))) == 3
    code, out, err = run_cli("generate", "--checkpoint", tiny_conditional, "--labels", "0-2", "--num", "2",
                             "--out", tmp_path / "some")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "some").iterdir()) == ["0", "1", "2"]
    assert "wrote 6 samples" in out


def test_generate_labels_npy_has_a_labels_file(run_cli, tiny_conditional: Path, tmp_path: Path) -> None:
    code, _, err = run_cli("generate", "--checkpoint", tiny_conditional, "--labels", "1,4", "--num", "3",
                           "--format", "npy", "--out", tmp_path / "s.npy")
    assert code == 0, err
    assert np.load(tmp_path / "s.npy").shape == (6, 8, 8)
    assert np.load(tmp_path / "s.labels.npy").tolist() == [1, 1, 1, 4, 4, 4]


def test_generate_grid_has_one_class_per_row(run_cli, tiny_conditional: Path, tmp_path: Path) -> None:
    code, _, err = run_cli("generate", "--checkpoint", tiny_conditional, "--labels", "0-2", "--num", "5", "--grid",
                           "--out", tmp_path / "grid.png")
    assert code == 0, err
    width, height = Image.open(tmp_path / "grid.png").size
    assert (width, height) == (5 * 10 + 2, 3 * 10 + 2)  # 8x8 images with 2-pixel padding


def test_generate_without_labels_draws_every_class(run_cli, tiny_conditional: Path, tmp_path: Path) -> None:
    code, _, err = run_cli("generate", "--checkpoint", tiny_conditional, "--num", "1", "--out", tmp_path / "all")
    assert code == 0, err
    assert sorted(int(p.name) for p in (tmp_path / "all").iterdir()) == list(range(10))


@pytest.mark.parametrize(("flag", "value", "message"), [("--label", "10", "out of range"),
                                                        ("--label", "x", "expected class numbers"),
                                                        ("--labels", "3-1", "is empty")])
def test_generate_refuses_bad_labels(run_cli, tiny_conditional: Path, tmp_path: Path, flag: str, value: str,
                                     message: str) -> None:
    code, _, err = run_cli("generate", "--checkpoint", tiny_conditional, flag, value, "--out", tmp_path / "x")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_generate_label_on_an_unconditional_model_is_an_error(run_cli, tiny_unconditional: Path,
                                                              tmp_path: Path) -> None:
    code, _, err = run_cli("generate", "--checkpoint", tiny_unconditional, "--label", "7", "--out", tmp_path / "x")
    assert code == 2 and "unconditional" in err and len(err.strip().splitlines()) == 1


def class_match_of(checkpoint: Path, *, num: int, seed: int) -> float:
    """The requested-class accuracy computed here, independently: the bundled classifier's predictions
    on the checkpoint's samples of every class in turn, compared with the classes asked for."""
    generator, _ = load_generator(checkpoint, CPU)
    requested = torch.arange(num) % generator.num_classes
    images = torch.from_numpy(generate(generator, num, seed=seed, device=CPU, labels=requested))
    predicted = embed(load_classifier(), images.permute(0, 3, 1, 2).contiguous()).probabilities.argmax(1)
    return float((predicted == requested).double().mean())


@pytest.mark.slow
def test_evaluate_a_conditional_checkpoint_reports_the_requested_class(run_cli, idx_dir: Path,
                                                                        tmp_path: Path) -> None:
    run = train_conditional(run_cli, idx_dir, tmp_path / "cond28", "--quiet", "--sample-every", "0")
    code, out, err = run_cli("evaluate", "--checkpoint", run, "--num", "100", "--reference", idx_dir,
                             "--kid-subsets", "5")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["class_match"] == pytest.approx(class_match_of(run, num=100, seed=0), abs=1e-12)
    assert re.search(rf"^requested class +{result['class_match']:.4f}$", out, re.MULTILINE)


@pytest.mark.slow
def test_eval_every_logs_the_requested_class_accuracy_of_a_conditional_run(run_cli, idx_dir: Path,
                                                                           tmp_path: Path) -> None:
    run = train_conditional(run_cli, idx_dir, tmp_path / "cond28", "--quiet", "--sample-every", "0",
                            "--eval-every", "2", "--eval-samples", "50", "--seed", "4")
    scored = [row for row in read_metrics(run / "metrics.csv") if row["fid"] == row["fid"]]
    assert [row["step"] for row in scored] == [2]  # the run's last step, which last.pt holds
    assert scored[0]["class_match"] == pytest.approx(class_match_of(run, num=50, seed=4), abs=1e-6)


def test_the_class_embedding_of_d_starts_at_the_scale_of_its_linear_layer() -> None:
    # An N(0, 1) start let the class term dominate D (docs/quality.md: recall 0.16 instead of 0.41).
    discriminator = ProjectionDiscriminator(TutorialDiscriminator(), num_classes=10)
    bound = (6 / (10 + 128 * 7 * 7)) ** 0.5  # Xavier uniform
    assert discriminator.embed.weight.abs().max().item() <= bound
    assert discriminator.embed.weight.std().item() > 0.5 * bound / 3 ** 0.5
