"""The memory one training step needs per image of its batch, so a batch that cannot fit is refused up front."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..config import TrainConfig
from ..limits import require_fits
from ..ops import eval_mode
from .distributed import World

PROBE_BATCH = 2
FLOAT_BYTES = 4  # counted in fp32 whatever the precision: bf16 only makes the estimate more generous
# Backward keeps the activations of the step's passes and makes at most one gradient of each: x2 (an
# upper bound: gradients are freed as backward goes). Workspaces, augmented copies and the allocator's
# rounding are left to `require_fits`, which allows only half the free memory; on the CPU a step's
# measured peak is about a third of this estimate.
STEP_FACTOR = 2.0


def step_bytes_per_image(config: TrainConfig, generator: nn.Module, discriminator: nn.Module,
                         device: torch.device) -> float:
    """A coarse upper bound of the bytes one training step of `config` needs on `device` per image of its batch.

    The activations of one forward pass of G and D are counted with forward hooks at a tiny batch;
    a step keeps those of one G pass (the G step) and of D's passes in the D step (real and
    generated images, and real ones again with mismatched labels), which STEP_FACTOR scales for
    the backward pass. The networks are run in inference mode on fixed inputs, with the random
    states restored, so training is not changed.
    """
    labelled = generator.num_classes > 0
    noise = torch.zeros(PROBE_BATCH, config.latent_dim, device=device)
    labels = torch.zeros(PROBE_BATCH, dtype=torch.int64, device=device) if labelled else None
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad(), eval_mode(generator, discriminator):
        with ActivationCounter(generator) as g_count:
            images = generator(noise, labels)
        with ActivationCounter(discriminator) as d_count:
            discriminator.logits(images, labels)
    image_bytes = images[0].numel() * FLOAT_BYTES  # D's input, which no hook of D counts
    d_passes = 3 if config.mismatched_labels and labelled else 2
    per_image = (g_count.bytes + d_passes * d_count.bytes) / PROBE_BATCH + d_passes * image_bytes
    return STEP_FACTOR * per_image


class ActivationCounter:
    """While inside, counts in `bytes` the fp32 size of every new tensor that a layer of `network` outputs."""

    def __init__(self, network: nn.Module) -> None:
        self.network = network
        self.bytes = 0
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> ActivationCounter:
        self.handles = [layer.register_forward_hook(self.count) for layer in layers(self.network)]
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self.handles:
            handle.remove()

    def count(self, layer: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        """A forward hook: add the output's size unless it lies in an input's memory."""
        if not isinstance(output, torch.Tensor):
            return
        # An in-place activation, a view or dropout at inference returns its input's memory: nothing new.
        storage = output.untyped_storage().data_ptr()
        if any(isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() == storage for t in inputs):
            return
        self.bytes += output.numel() * FLOAT_BYTES


def layers(network: nn.Module) -> Iterator[nn.Module]:
    """The modules that compute activations: those without children, and parametrised layers (whose
    parametrisations compute weights, not activations)."""
    for name, module in network.named_modules():
        if "parametrizations" in name.split("."):
            continue
        if parametrize.is_parametrized(module) or next(module.children(), None) is None:
            yield module


def require_batch_fits(config: TrainConfig, generator: nn.Module, discriminator: nn.Module, device: torch.device,
                       *, data_size: int, world: World = World()) -> None:
    """Refuse a `--batch-size` whose training step would not fit in `device`'s memory, naming how many would.

    A batch larger than the data set is as large as the data set (`data_size` images); each of the
    `world`'s processes takes its part of it.
    """
    per_process = -(-min(config.batch_size, data_size) // world.size)
    what = f"--batch-size {config.batch_size}" + (f" ({per_process} per process)" if world.distributed else "")
    # Processes on the CPU share the host's memory; each GPU has its own.
    share = 1 if device.type == "cuda" else world.size
    require_fits(what, per_process, step_bytes_per_image(config, generator, discriminator, device), device=device,
                 fraction=0.5 / share)
