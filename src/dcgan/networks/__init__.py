"""The generator and discriminator that a config describes, built through a registry of architectures.

Every network has one interface, whatever its conditioning:

- a generator is called `G(z, labels=None)` on noise (B, latent_dim) and returns images
  (B, C, H, W) in [-1, 1]; it has `latent_dim`, `num_classes` (0 when unconditional),
  `takes_labels` (whether its forward needs labels: class- and cluster-conditional models),
  `label_classes` (the classes a user may ask for: the class count of a class-conditional model,
  None otherwise), `sample_labels(num, seed=...)`, the labels drawn when none are named (None,
  every class in turn, or clusters by their sizes), and `conditioning` ("none", "classes" or
  "clusters"), a name kept as metadata that no caller branches on;
- a discriminator's `D.logits(x, labels=None)` returns pre-sigmoid scores (B, 1).

An architecture is a pair of unconditional networks; the labelled variants wrap them
(`labelled.py`). A new architecture is a new file here and one entry in ARCHITECTURES.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import nn

from ..config import TrainConfig
from .dcgan import DCGANDiscriminator, DCGANGenerator
from .labelled import ClusterGenerator, ConditionalGenerator, ProjectionDiscriminator
from .tutorial import TutorialDiscriminator, TutorialGenerator


# D's width when the config leaves it to the data (0, the folder preset's): half Radford et al.'s on a set of
# at most SMALL_SET_IMAGES pictures, where a step with it takes about 0.6 of the time. In equal minutes it ended
# lower than D at 64 in all twelve runs measured: 500 and 250 pictures of two colour sets, three seeds each
# (docs/quality.md, "A narrower discriminator"). On 1,000 pictures it was ahead on one set and level on the
# other, so larger sets keep 64.
DEFAULT_D_WIDTH, SMALL_SET_D_WIDTH, SMALL_SET_IMAGES = 64, 32, 500


@dataclass(frozen=True)
class Architecture:
    """An unconditional generator (latent_dim, channels, image_size) and discriminator (channels, image_size).

    The discriminator has `features` (images -> (B, feature_dim)) and `classify` ((B, feature_dim)
    -> one logit), which a projection discriminator reuses.
    """

    generator: Callable[..., nn.Module]
    discriminator: Callable[..., nn.Module]


# The names are config.ARCHITECTURES (the --arch choices); each entry makes the pair for a config.
ARCHITECTURES: dict[str, Callable[[TrainConfig], Architecture]] = {
    "tutorial": lambda config: Architecture(TutorialGenerator, TutorialDiscriminator),
    "dcgan": lambda config: Architecture(partial(DCGANGenerator, width=config.g_width),
                                         partial(DCGANDiscriminator, width=config.d_width or DEFAULT_D_WIDTH,
                                                 minibatch_std=config.minibatch_std)),
}


def build_generator(config: TrainConfig) -> nn.Module:
    """The generator that a config describes: unconditional, class-conditional or cluster-conditional."""
    arch = ARCHITECTURES[config.arch](config)
    shape = dict(channels=channels_of(config), image_size=config.image_size)
    if config.clusters:
        return ClusterGenerator(arch.generator, latent_dim=config.latent_dim, num_clusters=config.clusters, **shape)
    if config.conditional:
        return ConditionalGenerator(arch.generator, latent_dim=config.latent_dim, num_classes=config.num_classes,
                                    **shape)
    return arch.generator(latent_dim=config.latent_dim, **shape)


def build_discriminator(config: TrainConfig) -> nn.Module:
    """The discriminator that a config describes (a projection one for labels; spectrally normalised when asked),
    its first `freeze_d` blocks frozen."""
    discriminator = ARCHITECTURES[config.arch](config).discriminator(channels=channels_of(config),
                                                                     image_size=config.image_size)
    if config.conditional or config.clusters:
        discriminator = ProjectionDiscriminator(discriminator, num_classes=config.num_classes or config.clusters)
    if config.spectral_norm:
        with_spectral_norm(discriminator)
    freeze_blocks(discriminator_blocks(discriminator)[:config.freeze_d])
    return discriminator


def discriminator_blocks(discriminator: nn.Module) -> list[list[nn.Module]]:
    """D's blocks, input first: each convolution of its `features` with the layers after it (norm, activation,
    dropout) up to the next; `config.discriminator_block_count` counts them without building D."""
    blocks: list[list[nn.Module]] = []
    for layer in discriminator.features:
        if isinstance(layer, nn.Conv2d):
            blocks.append([])
        if blocks and not isinstance(layer, nn.Flatten):
            blocks[-1].append(layer)
    return blocks


def freeze_blocks(blocks: list[list[nn.Module]]) -> None:
    """Keep the blocks' weights as they start: each parameter becomes a buffer of the same name.

    The state dict is unchanged (the same names and tensors), but neither the optimiser, which is
    given `parameters()`, nor a backward pass sees them, whatever later sets `requires_grad` on
    the whole network (the G step does, to skip D's gradients).
    """
    for layer in (layer for block in blocks for layer in block):
        for module in layer.modules():  # with spectral norm the weight's parametrisation holds the parameter
            for name, parameter in list(module.named_parameters(recurse=False)):
                delattr(module, name)
                module.register_buffer(name, parameter.detach())


def channels_of(config: TrainConfig) -> int:
    """The image channels: the config's, or 1 when it leaves them to data that is not there (0)."""
    return config.channels or 1


def d_width_for(config: TrainConfig, num_images: int) -> int:
    """D's width for a config that leaves it to the data (0): narrower on a small set; otherwise the config's."""
    if config.d_width:
        return config.d_width
    return SMALL_SET_D_WIDTH if config.arch == "dcgan" and num_images <= SMALL_SET_IMAGES else DEFAULT_D_WIDTH


def with_spectral_norm(module: nn.Module) -> nn.Module:
    """Wrap every convolution, linear layer and embedding of `module` in spectral normalisation.

    Each weight is divided by its largest singular value (one power iteration per training
    forward pass), which bounds the network's Lipschitz constant (Miyato et al., 2018).
    """
    from torch.nn.utils.parametrizations import spectral_norm

    layers = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    for layer in layers:
        spectral_norm(layer)
    return module
