"""Each GAN loss on known logits, and `bce` as the tutorial's BCE on probabilities."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dcgan.config import TrainConfig
from dcgan.errors import UserError
from dcgan.training.losses import LOSSES, discriminator_loss, generator_loss, r1_penalty


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values).view(-1, 1)  # (B, 1), as D returns them


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_bce_on_known_logits() -> None:
    # ½ [-log σ(2) - log(1 - σ(-1))] = ½ [softplus(-2) + softplus(-1)]
    d = discriminator_loss("bce")(t(2.0), t(-1.0))
    assert d.item() == pytest.approx(0.5 * (softplus(-2.0) + softplus(-1.0)), rel=1e-6)
    assert discriminator_loss("bce")(t(0.0, 0.0), t(0.0, 0.0)).item() == pytest.approx(math.log(2), rel=1e-6)
    assert generator_loss("bce")(t(3.0)).item() == pytest.approx(softplus(-3.0), rel=1e-6)  # -log σ(3)


def test_bce_is_the_tutorials_bce_on_probabilities() -> None:
    torch.manual_seed(0)
    real, fake = torch.randn(16, 1), torch.randn(16, 1)
    p_real, p_fake = torch.sigmoid(real), torch.sigmoid(fake)
    expected_d = 0.5 * (F.binary_cross_entropy(p_real, torch.ones_like(p_real))
                        + F.binary_cross_entropy(p_fake, torch.zeros_like(p_fake)))
    torch.testing.assert_close(discriminator_loss("bce")(real, fake), expected_d)
    torch.testing.assert_close(generator_loss("bce")(fake), F.binary_cross_entropy(p_fake, torch.ones_like(p_fake)))


def test_hinge_on_known_logits() -> None:
    # real: max(0, 1 - 0.5) = 0.5, max(0, 1 - 2) = 0 -> 0.25; fake: max(0, 1 - 2) = 0, max(0, 1 + 0) = 1 -> 0.5
    assert discriminator_loss("hinge")(t(0.5, 2.0), t(-2.0, 0.0)).item() == pytest.approx(0.75)
    assert generator_loss("hinge")(t(1.0, 3.0)).item() == pytest.approx(-2.0)


def test_hinge_is_zero_for_a_confident_discriminator() -> None:
    assert discriminator_loss("hinge")(t(1.0, 5.0), t(-1.0, -7.0)).item() == 0.0


def test_lsgan_on_known_logits() -> None:
    # ½ [mean((1-1)², (3-1)²) + mean(0², 2²)] = ½ [2 + 2]
    assert discriminator_loss("lsgan")(t(1.0, 3.0), t(0.0, 2.0)).item() == pytest.approx(2.0)
    assert generator_loss("lsgan")(t(1.0, 3.0)).item() == pytest.approx(1.0)  # ½ mean(0, 4)


def test_the_losses_are_distinct() -> None:
    real, fake = t(0.3, -1.2), t(0.7, 2.5)
    values = {name: discriminator_loss(name)(real, fake).item() for name in LOSSES}
    assert len(set(values.values())) == len(LOSSES)


def test_an_unknown_loss_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="--loss must be one of bce, hinge, lsgan"):
        TrainConfig(loss="wgan")


def test_train_rejects_an_unknown_loss_on_the_command_line(run_cli, idx_dir) -> None:
    code, _, err = run_cli("train", "--data", idx_dir, "--loss", "wgan", "--out", "unused")
    assert code == 2 and "--loss" in err and len(err.strip().splitlines()) == 1


def test_r1_penalty_of_a_linear_discriminator_is_its_squared_weight_norm() -> None:
    # D(x) = <w, x> + b has gradient w at every x, so E|grad D|^2 = |w|^2, and d/dw of it is 2w.
    weight = torch.tensor([[0.5, -2.0, 1.0]], requires_grad=True)
    real = torch.randn(4, 3, requires_grad=True)
    logits = real @ weight.T + 0.3  # (4, 1)
    penalty = r1_penalty(logits, real)
    assert penalty.item() == pytest.approx(0.25 + 4.0 + 1.0)
    penalty.backward()
    assert torch.allclose(weight.grad, 2 * weight.detach())


def test_r1_changes_the_discriminator_update_and_rejects_bad_values(run_cli, idx_dir, tmp_path) -> None:
    from dcgan.training.step import TrainingStep, build_gan

    real = torch.rand(8, 1, 8, 8) * 2 - 1
    states = []
    for gamma in (0.0, 10.0):
        torch.manual_seed(0)
        gan = build_gan(TrainConfig(image_size=8, latent_dim=4, precision="fp32"), torch.device("cpu"))
        TrainingStep(gan, latent_dim=4, r1=gamma).discriminator_step(real, torch.zeros_like(real))
        states.append(gan.discriminator.state_dict())
    assert not all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    code, _, err = run_cli("train", "--data", idx_dir, "--out", tmp_path / "run", "--r1", "-1")
    assert code == 2 and "--r1" in err and len(err.strip().splitlines()) == 1
