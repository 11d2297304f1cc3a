"""Shapes and layer make-up of the tutorial's networks."""

import pytest
import torch
from torch import nn

from dcgan.networks.tutorial import TutorialDiscriminator as Discriminator
from dcgan.networks.tutorial import TutorialGenerator as Generator


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32), (1, 16)])
def test_generator_maps_noise_to_images_in_range(channels: int, size: int) -> None:
    generator = Generator(latent_dim=16, channels=channels, image_size=size)
    images = generator(torch.randn(5, 16))
    assert images.shape == (5, channels, size, size)
    assert images.min() >= -1 and images.max() <= 1


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_discriminator_outputs_one_probability_per_image(channels: int, size: int) -> None:
    discriminator = Discriminator(channels=channels, image_size=size)
    images = torch.rand(4, channels, size, size) * 2 - 1
    probabilities = discriminator(images)
    assert probabilities.shape == (4, 1)
    assert torch.all((probabilities > 0) & (probabilities < 1))
    # forward is the sigmoid of the logits used by the training loss
    discriminator.eval()
    torch.testing.assert_close(discriminator(images), torch.sigmoid(discriminator.logits(images)))


def test_generator_has_the_tutorials_layers() -> None:
    generator = Generator(latent_dim=16)
    linear, conv, up1, up2 = (m for m in generator.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)))
    assert (linear.in_features, linear.out_features) == (16, 7 * 7 * 256)
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (256, 128, (5, 5))
    assert isinstance(up1, nn.ConvTranspose2d) and (up1.in_channels, up1.out_channels) == (128, 64)
    assert (up2.kernel_size, up2.stride) == ((4, 4), (2, 2))
    assert isinstance(list(generator.modules())[-1], nn.Tanh)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in generator.modules()) == 1
    assert sum(isinstance(m, nn.BatchNorm2d) for m in generator.modules()) == 2


def test_discriminator_has_the_tutorials_layers() -> None:
    discriminator = Discriminator()
    convs = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (1, 64, (5, 5), (2, 2)), (64, 128, (5, 5), (2, 2))]
    dropouts = [m for m in discriminator.modules() if isinstance(m, nn.Dropout2d)]
    assert [d.p for d in dropouts] == [0.3, 0.3]
    assert discriminator.classify.in_features == 128 * 7 * 7
