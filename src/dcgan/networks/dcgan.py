"""The DCGAN architecture of Radford et al. (2015), as the reference PyTorch DCGAN example builds it.

G: the noise as a 1x1 map, a 4x4 transposed convolution to 4x4, then 4x4 stride-2 transposed
convolutions doubling the size up to the image, batch norm and ReLU after each but the last,
Tanh out. D: 4x4 stride-2 convolutions halving the size down to 4x4, LeakyReLU 0.2, batch norm
after each but the first, then a 4x4 convolution to one logit; with `minibatch_std`, the 4x4 maps
gain a channel of their spread over groups of images first. Weights start from N(0, 0.02),
batch-norm scales from N(1, 0.02). Shapes are written for 64x64 and width 64; the widths double
as the maps halve, up to 16 times the base width.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import DCGAN_SIZES
from .matmul_conv import Conv2d, ConvTranspose2d
from .tutorial import refuse_labels

MAX_WIDTH_FACTOR = 16


def width_at(size: int, image_size: int, base_width: int) -> int:
    """Channels of the maps of side `size`: `base_width` at half the image size, doubling as the maps halve."""
    return base_width * min(MAX_WIDTH_FACTOR, image_size // (2 * size))


def check_size(image_size: int) -> None:
    if image_size not in DCGAN_SIZES:
        raise ValueError(f"the dcgan architecture makes images of {', '.join(map(str, DCGAN_SIZES))} pixels, "
                         f"not {image_size}")


class DCGANGenerator(nn.Module):
    """Noise (B, latent_dim) -> images (B, channels, image_size, image_size) in [-1, 1]."""

    conditioning = "none"
    num_classes = 0
    takes_labels = False
    label_classes: int | None = None

    def __init__(self, *, latent_dim: int = 100, channels: int = 3, image_size: int = 64, width: int = 64) -> None:
        super().__init__()
        check_size(image_size)
        self.latent_dim = latent_dim
        layers: list[nn.Module] = [
            ConvTranspose2d(latent_dim, width_at(4, image_size, width), 4, 1, 0, bias=False),  # (B, 512, 4, 4)
            nn.BatchNorm2d(width_at(4, image_size, width)),
            nn.ReLU(True),
        ]
        for size in (4 * 2**i for i in range(int(math.log2(image_size // 8)))):  # 4, 8, 16 for 64x64
            c_in, c_out = width_at(size, image_size, width), width_at(2 * size, image_size, width)
            layers += [ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),  # (B, 256, 8, 8) ... (B, 64, 32, 32)
                       nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [ConvTranspose2d(width_at(image_size // 2, image_size, width), channels, 4, 2, 1, bias=False),
                   nn.Tanh()]  # (B, C, 64, 64)
        self.main = nn.Sequential(*layers)
        initialise(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        refuse_labels(labels)
        return self.main(z.view(z.shape[0], -1, 1, 1))  # (B, latent_dim, 1, 1) -> (B, C, 64, 64)

    def sample_labels(self, num: int, *, seed: int) -> None:
        """An unconditional generator takes no labels."""
        return None


class MinibatchStd(nn.Module):
    """(B, C, H, W) -> (B, C + 1, H, W): a channel holding how much the images of each one's group differ.

    The batch is cut into groups of `group_size` (fewer when B is not a multiple of it); the added
    channel is the standard deviation of each feature over the group, averaged over features and
    positions (Karras et al., 2018). A generator whose images are all alike gives D a low value
    that no real batch gives, so D can tell a collapsed batch from a real one and G is pushed to
    vary its images.
    """

    batch_dependent = True  # an image's output depends on the other images in its batch

    def __init__(self, *, group_size: int = 4) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        group = math.gcd(batch, self.group_size)
        # image i is in group i mod (B / group), as in StyleGAN: (group, B / group, C, H, W)
        grouped = x.float().view(group, batch // group, channels, height, width)
        spread = (grouped.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (B / group,)
        channel = spread.repeat(group).view(batch, 1, 1, 1).expand(batch, 1, height, width)  # (B, 1, H, W)
        return torch.cat([x, channel.to(x.dtype)], dim=1)


class DCGANDiscriminator(nn.Module):
    """Images (B, channels, image_size, image_size) -> probability of being real, (B, 1).

    `features` ends at the 4x4 maps (flattened); `classify` is the final 4x4 convolution to one logit.
    """

    def __init__(self, *, channels: int = 3, image_size: int = 64, width: int = 64,
                 minibatch_std: bool = False) -> None:
        super().__init__()
        check_size(image_size)
        size = image_size // 2
        layers: list[nn.Module] = [Conv2d(channels, width_at(size, image_size, width), 4, 2, 1, bias=False),
                                   nn.LeakyReLU(0.2, inplace=True)]  # (B, 64, 32, 32)
        while size > 4:
            c_in, c_out = width_at(size, image_size, width), width_at(size // 2, image_size, width)
            layers += [Conv2d(c_in, c_out, 4, 2, 1, bias=False),  # (B, 128, 16, 16) ... (B, 512, 4, 4)
                       nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True)]
            size //= 2
        top = width_at(4, image_size, width)
        if minibatch_std:
            layers.append(MinibatchStd())  # (B, 513, 4, 4)
            top += 1
        layers.append(nn.Flatten())  # (B, 512*4*4), 513*4*4 with the spread
        self.features = nn.Sequential(*layers)
        self.feature_dim = top * 16
        self.classify = nn.Sequential(nn.Unflatten(1, (top, 4, 4)), Conv2d(top, 1, 4, 1, 0, bias=False),
                                      nn.Flatten())  # (B, 1)
        initialise(self)

    def logits(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Pre-sigmoid scores, (B, 1)."""
        refuse_labels(labels)
        return self.classify(self.features(x))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.logits(x, labels))


@torch.no_grad()
def initialise(module: nn.Module) -> None:
    """The DCGAN paper's start: convolutions from N(0, 0.02), batch-norm scales from N(1, 0.02), shifts 0."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(layer.weight, 0.0, 0.02)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)
