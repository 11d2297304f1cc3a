"""Small picture sets: adaptive discriminator augmentation (`--ada-target`), `--mirror` and `--lecam`."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

import dcgan.training.augment as augment
from conftest import TINY, assert_same_training_state, flat_tensors, snapshot
from dcgan.checkpoint import load_checkpoint
from dcgan.config import TrainConfig
from dcgan.data import ImageData, ShuffledBatches
from dcgan.plots import read_metrics
from dcgan.training.augment import MAX_PROBABILITY, AdaptiveAugment
from dcgan.training.losses import LECAM_DECAY, LeCam, lecam_penalty
from dcgan.training.step import TrainingStep, build_gan

CPU = torch.device("cpu")
OPERATIONS = {"flip": augment.random_flip, "translate": augment.random_translate,
              "brightness": augment.random_brightness, "contrast": augment.random_contrast,
              "saturation": augment.random_saturation, "zoom_rotate": augment.random_zoom_rotate,
              "cutout": augment.random_cutout, "all": augment.adaptive_augment,
              "all_geometric": lambda x, p: augment.adaptive_augment(x, p, geometric=True),
              "all_cutout": lambda x, p: augment.adaptive_augment(x, p, cutout=True)}
# Saturation moves a colour away from its grey: it changes colour images only.
CASES = [(name, channels) for name in OPERATIONS for channels in (1, 3) if (name, channels) != ("saturation", 1)]

pytestmark = pytest.mark.usefixtures("one_thread")


def pictures(channels: int, *, size: int = 8, batch: int = 16, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Random pictures in [-0.9, 0.9]: no two columns or channels alike, none at the ends of the range."""
    generator = torch.Generator().manual_seed(channels)
    return (torch.rand(batch, channels, size, size, generator=generator) * 1.8 - 0.9).to(dtype)


def changed(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Which images of the batch differ: (B,) bool."""
    return (before != after).flatten(1).any(dim=1)


@pytest.mark.parametrize(("name", "channels"), CASES)
def test_an_operation_at_p_0_is_the_identity_and_at_p_1_changes_every_image(name, channels):
    x = pictures(channels)
    torch.manual_seed(0)
    assert torch.equal(OPERATIONS[name](x, 0.0), x)
    assert changed(x, OPERATIONS[name](x, 1.0)).all()


@pytest.mark.parametrize(("name", "channels"), CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_operations_keep_the_shape_the_dtype_and_the_range(name, channels, dtype):
    torch.manual_seed(1)
    for x in (pictures(channels, size=12, dtype=dtype), torch.ones(16, channels, 12, 12, dtype=dtype),
              -torch.ones(16, channels, 12, 12, dtype=dtype)):
        out = OPERATIONS[name](x, 1.0)
        assert out.shape == x.shape and out.dtype == dtype
        assert out.min() >= -1 and out.max() <= 1


def test_each_image_is_transformed_with_probability_p():
    x = pictures(3, batch=4000)
    torch.manual_seed(2)
    for name, operation in OPERATIONS.items():
        if not name.startswith("all"):
            # zoom, rotation and stretch are three operations, each with probability p
            expected = 1 - (1 - 0.3) ** 3 if name == "zoom_rotate" else 0.3
            assert changed(x, operation(x, 0.3)).float().mean().item() == pytest.approx(expected, abs=0.03), name


def test_translation_moves_by_whole_pixels_up_to_an_eighth_with_reflected_edges():
    x = pictures(1, size=16, batch=256)
    torch.manual_seed(3)
    out = augment.random_translate(x, 1.0)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")  # 16 / 8 = 2 pixels each way
    shifts = {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)} - {(0, 0)}
    for image, source in zip(out, padded):
        found = [s for s in shifts if torch.equal(image, source[:, 2 + s[0]:18 + s[0], 2 + s[1]:18 + s[1]])]
        assert len(found) == 1


def test_warp_turns_zooms_and_stretches_about_the_centre():
    x = pictures(3)
    ones, zeros = torch.ones(16), torch.zeros(16)
    assert torch.allclose(augment.warp(x, ones, zeros, ones), x, atol=1e-6)
    assert torch.allclose(augment.warp(x, ones, torch.full((16,), math.pi), ones), x.flip(2, 3), atol=1e-5)
    assert torch.allclose(augment.warp(x, ones, torch.full((16,), math.pi / 2), ones), x.rot90(1, (2, 3)), atol=1e-5)
    # a ramp across the columns (the pixel centres' x coordinates, -7/8 to 7/8): bilinear sampling keeps a ramp
    ramp = ((torch.arange(8) * 2 + 1) / 8 - 1).expand(1, 1, 8, 8)
    two, one, none = torch.full((1,), 2.0), torch.ones(1), torch.zeros(1)
    assert torch.allclose(augment.warp(ramp, two, none, one), ramp / 2)  # zoomed in twice: half the slope
    assert torch.allclose(augment.warp(ramp, one, none, two), ramp / 2)  # stretched twice as wide: the same
    shorter = augment.warp(ramp.transpose(2, 3), one, none, two)[0, 0, :, 0]  # and half as high: rows 2v, reflected
    assert torch.allclose(shorter, torch.tensor([-0.25, -0.75, -0.75, -0.25, 0.25, 0.75, 0.75, 0.25]))


@pytest.mark.parametrize(("name", "channels"), CASES)
def test_gradients_flow_through_every_operation(name, channels):
    x = pictures(channels).requires_grad_(True)
    torch.manual_seed(4)
    (OPERATIONS[name](x, 1.0) * torch.randn(x.shape)).sum().backward()
    assert (x.grad.flatten(1).abs().sum(dim=1) > 0).all()


def adaptive(**changes) -> AdaptiveAugment:
    return AdaptiveAugment(**{"target": 0.6, "speed": 1000, "batch_size": 10, "device": CPU, **changes})


def feed(ada: AdaptiveAugment, logit: float, steps: int) -> list[float]:
    """`steps` training steps on which D gives every real image `logit`; p after each."""
    history = []
    for _ in range(steps):
        ada.observe(torch.full((10, 1), logit))
        ada.end_step()
        history.append(ada.probability.item())
    return history


def test_p_rises_every_4_steps_while_d_is_sure_of_real_images_and_falls_when_it_is_not():
    ada = adaptive()  # each adjustment: 10 images x 4 steps / 1000 = 0.04
    assert feed(ada, 2.0, 8) == pytest.approx([0, 0, 0, 0.04, 0.04, 0.04, 0.04, 0.08])
    assert ada.signal.item() == 1.0  # every sign positive: above the target
    feed(ada, -0.5, 4)
    assert ada.probability.item() == pytest.approx(0.04) and ada.signal.item() == -1.0
    # signs 3 of 4 positive: r = (3 - 1) / 4 = 0.5, below 0.6
    for _ in range(4):
        ada.observe(torch.tensor([[1.0], [2.0], [3.0], [-1.0]]))
        ada.end_step()
    assert ada.signal.item() == 0.5 and ada.probability.item() == pytest.approx(0.0, abs=1e-7)


def test_p_stays_in_0_to_below_1():
    ada = adaptive(speed=40)  # each adjustment 1.0: the clamp decides
    assert min(feed(ada, -1.0, 8)) == 0.0
    rising = feed(ada, 1.0, 40)
    assert max(rising) == pytest.approx(MAX_PROBABILITY) and MAX_PROBABILITY < 1 and min(rising) >= 0


def test_the_signal_is_the_mean_over_every_process(monkeypatch):
    # another process whose D gave all its 10 real images negative logits over the 4 steps
    monkeypatch.setattr(augment, "mean_over_ranks", lambda world, sums: (sums + torch.tensor([-40.0, 40.0])) / 2)
    ada = adaptive()
    feed(ada, 1.0, 4)
    assert ada.signal.item() == 0.0 and ada.probability.item() == 0.0


def test_the_augmentation_probability_and_its_sums_round_trip_and_an_old_checkpoint_starts_from_0():
    config = TrainConfig(preset="tutorial", image_size=8, latent_dim=4, ada_target=0.6, lecam=0.1, device="cpu")
    gan = build_gan(config, CPU)
    feed(gan.ada, 1.0, 6)
    gan.lecam(torch.full((4, 1), 2.0), torch.full((4, 1), -1.0))
    state = gan.state_dict()
    other = build_gan(config, CPU)
    other.load_state_dict(state)
    assert other.ada.state_dict()["steps"] == 6
    assert all(torch.equal(a, b) for a, b in zip(flat_tensors(other.ada.state_dict()).values(),
                                                 flat_tensors(gan.ada.state_dict()).values()))
    assert torch.equal(other.lecam.anchors, gan.lecam.anchors)
    older = {k: v for k, v in state.items() if k not in ("ada", "lecam")}
    other.load_state_dict(older)
    assert other.ada.probability.item() == 0.0 and other.ada.steps == 0
    assert other.lecam.anchors.tolist() == [0.0, 0.0]


def test_the_lecam_penalty_has_the_hand_computed_value():
    real, fake = torch.tensor([[1.0], [3.0]]), torch.tensor([[-2.0], [0.0]])
    # real to a_fake = -1: (2² + 4²) / 2 = 10; fake to a_real = 2: (4² + 2²) / 2 = 10
    assert lecam_penalty(real, fake, torch.tensor(2.0), torch.tensor(-1.0)).item() == 20.0
    lecam = LeCam(0.5, device=CPU)
    lecam.anchors = torch.tensor([2.0, -1.0])
    # the anchors move first: a_real = 0.99·2 + 0.01·2 = 2, a_fake = 0.99·(-1) + 0.01·(-1) = -1
    assert lecam(real, fake).item() == pytest.approx(0.5 * 20.0)
    lecam = LeCam(1.0, device=CPU)  # from 0: a_real = 0.01 · 2, a_fake = 0.01 · (-1)
    expected = ((real + 0.01) ** 2).mean() + ((fake - 0.02) ** 2).mean()
    assert lecam(real, fake).item() == pytest.approx(expected.item())
    assert lecam.anchors.tolist() == pytest.approx([(1 - LECAM_DECAY) * 2, (1 - LECAM_DECAY) * -1])


def test_lecam_is_added_to_ds_objective_and_not_to_the_reported_loss():
    config = TrainConfig(preset="tutorial", image_size=8, latent_dim=4, device="cpu")
    real = pictures(1)
    fake = pictures(1).flip(0)
    results = {}
    for weight in (0.0, 5.0):
        torch.manual_seed(5)
        gan = build_gan(config.replace(lecam=weight), CPU)
        d_loss, _, _ = TrainingStep.from_config(gan, config.replace(lecam=weight), CPU).discriminator_step(real, fake)
        results[weight] = (d_loss.item(), [p.clone() for p in gan.discriminator.parameters()])
    assert results[0.0][0] == results[5.0][0]
    assert any(not torch.equal(a, b) for a, b in zip(results[0.0][1], results[5.0][1]))


def test_cutout_greys_out_one_square_of_half_the_size_at_least_half_inside_the_image():
    x = pictures(3, size=16, batch=256)
    torch.manual_seed(9)
    out = augment.random_cutout(x, 1.0)
    grey = (out != x).all(dim=1)  # (B, H, W): the pixels set to 0 in every channel
    assert torch.equal(out[grey.unsqueeze(1).expand_as(out)], torch.zeros(int(grey.sum()) * 3))
    assert torch.equal(out[~grey.unsqueeze(1).expand_as(out)], x[~grey.unsqueeze(1).expand_as(x)])
    rows, cols = grey.any(dim=2), grey.any(dim=1)  # (B, H), (B, W)
    for image_rows, image_cols, image_grey in zip(rows, cols, grey):
        height, width = int(image_rows.sum()), int(image_cols.sum())
        assert 4 <= height <= 8 and 4 <= width <= 8  # an 8x8 square, cut by the border to no less than half
        assert int(image_grey.sum()) == height * width  # a rectangle: the square's part inside
    inside = (rows.sum(dim=1) * cols.sum(dim=1) == 64).float().mean().item()
    assert 0.2 < inside < 0.5  # centres in 9 x 9 of the 17 x 17 places keep the whole square


@pytest.mark.parametrize("option", ["ada_geometric", "ada_cutout"])
def test_an_ada_option_adds_its_operations_to_the_runs_augmentation(option):
    config = TrainConfig(preset="tutorial", image_size=8, latent_dim=4, ada_target=0.6, device="cpu")
    keyword = option.removeprefix("ada_")  # the keyword of adaptive_augment
    x = pictures(3)
    augmented, expected = [], []
    for on in (False, True):
        ada = build_gan(config.replace(**{option: on}), CPU).ada
        ada.probability = torch.tensor(MAX_PROBABILITY)
        torch.manual_seed(8)
        augmented.append(ada(x))
        torch.manual_seed(8)
        expected.append(augment.adaptive_augment(x, MAX_PROBABILITY, **{keyword: on}))
    assert all(torch.equal(a, b) for a, b in zip(augmented, expected))
    assert not torch.equal(*augmented)


# ---------------------------------------------------------------------------------------------
# --mirror: flips of the data, from (seed, epoch)
# ---------------------------------------------------------------------------------------------

def asymmetric_data(count: int = 64) -> ImageData:
    """uint8 images none of which is its own mirror image."""
    images = torch.randint(0, 256, (count, 1, 8, 8), generator=torch.Generator().manual_seed(6), dtype=torch.uint8)
    images[:, :, :, 0], images[:, :, :, -1] = 0, 255
    return ImageData(images=images, labels=torch.zeros(count, dtype=torch.long), classes=("x",), source="test")


def drawn(batches: ShuffledBatches, epoch: int, start: int = 0) -> list[torch.Tensor]:
    return [images for images, _ in batches.epoch(epoch, start)]


def test_mirror_flips_about_half_of_the_images_drawn_differently_each_epoch_and_the_same_after_resume():
    data = asymmetric_data(512)
    plain = ShuffledBatches(data, batch_size=16, seed=3, device=CPU)
    mirrored = ShuffledBatches(data, batch_size=16, seed=3, device=CPU, mirror=True)
    flipped_by_epoch = []
    for epoch in (0, 1):
        a, b = torch.cat(drawn(plain, epoch)), torch.cat(drawn(mirrored, epoch))
        flipped = changed(a, b)
        assert torch.equal(b[flipped], a[flipped].flip(3)) and torch.equal(b[~flipped], a[~flipped])
        assert 0.4 < flipped.float().mean().item() < 0.6
        flipped_by_epoch.append(flipped)
    assert not torch.equal(*flipped_by_epoch)
    again = ShuffledBatches(data, batch_size=16, seed=3, device=CPU, mirror=True)
    assert all(torch.equal(x, y) for x, y in zip(drawn(again, 1, start=5), drawn(mirrored, 1)[5:]))


def test_without_mirror_the_images_are_drawn_as_stored():
    data = asymmetric_data()
    batches = ShuffledBatches(data, batch_size=16, seed=3, device=CPU)
    expected = data.images[batches.order(0)].float() / 127.5 - 1
    assert torch.equal(torch.cat(drawn(batches, 0)), expected)


# ---------------------------------------------------------------------------------------------
# Training runs: metrics, plot, exact resume, bad values
# ---------------------------------------------------------------------------------------------

SMALL = ("--batch-size", "16", "--log-every", "4")
ADA = ("--ada-target", "0.6", "--ada-speed", "2000")


def test_metrics_have_the_augmentation_columns_filled_only_with_ada(run_cli, idx_dir, tmp_path):
    for name, flags in (("ada", ADA), ("plain", ())):
        code, _, err = run_cli("train", "--data", idx_dir, "--out", tmp_path / name, *TINY, *SMALL, "--steps", "8",
                               *flags)
        assert code == 0, err
    rows = read_metrics(tmp_path / "ada" / "metrics.csv")
    assert [row["step"] for row in rows] == [4, 8]
    assert all(0 <= row["ada_p"] < 1 and -1 <= row["ada_signal"] <= 1 for row in rows)
    assert rows[0]["ada_p"] in (0.0, pytest.approx(16 * 4 / 2000))  # one adjustment, up or (from 0) not at all
    plain = read_metrics(tmp_path / "plain" / "metrics.csv")
    assert "ada_p" in plain[0] and all(math.isnan(row["ada_p"]) and math.isnan(row["ada_signal"]) for row in plain)
    with Image.open(tmp_path / "ada" / "losses.png") as with_ada, Image.open(tmp_path / "plain" / "losses.png") as not_:
        assert with_ada.height == 900 and not_.height == 600  # the third panel, only with ADA


@pytest.mark.slow
def test_half_then_resume_with_ada_mirror_and_lecam_is_bit_identical_to_straight(run_cli, idx_dir, tmp_path):
    # 512 images in batches of 48: the run crosses an epoch (new flips); checkpoints every 6 steps
    # fall between ADA's adjustments (every 4), so the signal's running sums must be kept.
    recipe = (*TINY, "--batch-size", "48", "--log-every", "5", "--checkpoint-every", "6", "--seed", "7",
              "--ada-target", "0.2", "--ada-speed", "1000", "--ada-geometric", "--ada-cutout", "--mirror", "--lecam",
              "0.1")
    straight, split = tmp_path / "straight", tmp_path / "split"
    for out, steps in ((straight, "18"), (split, "10")):
        code, _, err = run_cli("train", "--data", idx_dir, "--out", out, *recipe, "--steps", steps)
        assert code == 0, err
    code, _, err = run_cli("train", "--resume", split, "--quiet", "--steps", "18")
    assert code == 0, err

    a, b = (load_checkpoint(run / "checkpoints" / "last.pt") for run in (straight, split))
    assert_same_training_state(a, b)
    assert a["ada"]["steps"] == b["ada"]["steps"] == 18
    assert a["ada"]["probability"].item() > 0  # the augmentation was at work
    for key in ("ada", "lecam"):
        left, right = flat_tensors(a[key]), flat_tensors(b[key])
        assert all(torch.equal(left[k], right[k]) for k in left)
    columns = ("step", "d_loss", "g_loss", "ada_p", "ada_signal")
    rows = [[tuple(row[c] for c in columns) for row in read_metrics(run / "metrics.csv")] for run in (straight, split)]
    assert rows[0] == rows[1]


@pytest.mark.parametrize(("flags", "expected"), [
    (("--ada-target", "1.5"), "argument --ada-target: must be in [0, 1), got '1.5'"),
    (("--ada-target", "-1"), "argument --ada-target: must be in [0, 1), got '-1'"),
    (("--ada-target", "nan"), "argument --ada-target: must be in [0, 1), got 'nan'"),
    (("--lecam", "-1"), "argument --lecam: must be a non-negative number, got '-1'"),
    (("--lecam", "inf"), "argument --lecam: must be a non-negative number, got 'inf'"),
    (("--ada-speed", "0"), "argument --ada-speed: must be a positive integer, got '0'"),
    (("--ada-target", "0.6", "--augment"), "--augment and --ada-target exclude each other"),
    (("--ada-geometric",), "--ada-geometric adds operations to the adaptive augmentation: it needs --ada-target"),
    (("--ada-cutout",), "--ada-cutout adds operations to the adaptive augmentation: it needs --ada-target"),
])
def test_bad_values_are_one_line_errors(run_cli, idx_dir, tmp_path, flags, expected):
    before = snapshot(tmp_path)
    code, _, err = run_cli("train", "--data", idx_dir, "--out", tmp_path / "run", *TINY, "--steps", "2", *flags)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("dcgan: error: ") and expected in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("line", "expected"), [
    ("ada_target = 1.5", "ada_target = 1.5: must be in [0, 1)"),
    ("ada_target = nan", "ada_target = nan: must be in [0, 1)"),
    ("lecam = -1", "lecam = -1.0: must not be negative"),
    ("ada_speed = 0", "ada_speed = 0: must be positive"),
])
def test_bad_values_in_a_config_file_name_the_file(run_cli, idx_dir, tmp_path, line, expected):
    config = tmp_path / "recipe.toml"
    config.write_text(line + "\n")
    code, _, err = run_cli("train", "--data", idx_dir, "--out", tmp_path / "run", "--config", config, *TINY,
                           "--steps", "2")
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith(f"dcgan: error: {config}: {expected}"), err


def test_the_recipe_options_cannot_change_on_resume(run_cli, idx_dir, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", idx_dir, "--out", run, *TINY, *SMALL, *ADA, "--steps", "2")
    assert code == 0, err
    before = snapshot(tmp_path)
    code, _, err = run_cli("train", "--resume", run, "--quiet", "--steps", "4", "--ada-target", "0.3", "--mirror")
    assert code == 2 and len(err.splitlines()) == 1
    assert "cannot change --ada-target 0.3 (the run has 0.6), --mirror True (the run has False)" in err
    assert snapshot(tmp_path) == before
