"""dcgan: deep convolutional GANs for small images, from training to pictures and numbers.

`dcgan.load(path)` gives a trained generator in Python (see `dcgan/api.py`); everything else is
the `dcgan` command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import UserError

if TYPE_CHECKING:
    from .api import TrainedGenerator

__version__ = "0.1.0"
__all__ = ["UserError", "load"]


def load(path: Any, *, device: Any = None) -> TrainedGenerator:
    """The generator of a run directory or checkpoint file: `g.sample(num, seed=, labels=)`, `g(z, labels)`."""
    from .api import load as load_generator  # imported on use: `import dcgan` stays light for the command line

    return load_generator(path, device=device)
