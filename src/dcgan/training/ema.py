"""An exponential moving average of a network's weights (used for the generator)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """A frozen copy of `module` whose weights follow ema = decay * ema + (1 - decay) * w.

    With `warmup`, the decay of update n (counting from 0) is min(decay, (1 + n) / (10 + n)), so the
    average is not dominated by the random initial weights early in a short run. Buffers (batch
    norm's running statistics) are copied, not averaged; they belong to the current weights, not the
    average, so an update marks them `stale` until their owner recomputes them
    (`ops.recalibrate_batch_norm`).
    """

    def __init__(self, module: nn.Module, *, decay: float, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.stale = False
        self.module = copy.deepcopy(module).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update uses."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Move the average towards `module`'s current weights and copy its buffers."""
        decay = self.current_decay()
        averaged = list(self.module.parameters())
        current = [p.detach() for p in module.parameters()]
        torch._foreach_lerp_(averaged, current, 1.0 - decay)  # ema + (1-d)(w - ema) = d*ema + (1-d)*w
        for mine, theirs in zip(self.module.buffers(), module.buffers()):
            mine.copy_(theirs)
        self.updates += 1
        self.stale = True

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights, the update count, and whether its batch-norm statistics are its own."""
        return {"module": self.module.state_dict(), "updates": self.updates, "own_statistics": not self.stale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Undo `state_dict`."""
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
        self.stale = not state.get("own_statistics", False)  # older checkpoints hold the generator's
