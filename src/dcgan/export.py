"""A trained generator as a file for other programs and runtimes: ONNX or TorchScript.

The exported network is the sampling generator (the moving average when the run has one, batch
norm in inference mode) with a dynamic batch dimension: input `z` (float32, N x latent_dim) and,
for models that take labels (conditional, or k-means clusters), `labels` (int64, N); output
`images` (float32, N x C x H x W, in [-1, 1]). The inputs, latent size, classes, image size, the
pixel mapping and the truncation travel in the file's metadata (ONNX metadata properties;
`dcgan.json` in TorchScript).

Truncation keeps that signature: exported with truncation psi < 1, the file multiplies `z` by psi
before the generator, so z ~ N(0, I) fed to it draws what `dcgan generate --truncation psi` draws;
its metadata `truncation` says psi (1: none, and then the graph has no such step), and z / psi
fed to it gives the untruncated sample of z.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UserError
from .files import atomic_write
from .networks import channels_of
from .sampling import load_generator

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth")}  # the names --out may have in each format
PIXELS = "uint8 = round((images + 1) * 127.5), clamped to 0-255; 0 is the background"


def scaled(z: torch.Tensor, truncation: float) -> torch.Tensor:
    """`z` times `truncation`; `z` itself at 1, so that an untruncated export has no extra step."""
    return z if truncation == 1 else z * truncation


class Unlabelled(nn.Module):
    """z (N, latent_dim) -> images (N, C, H, W), z scaled by `truncation` first."""

    def __init__(self, generator: nn.Module, truncation: float = 1.0) -> None:
        super().__init__()
        self.generator = generator
        self.truncation = truncation

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(scaled(z, self.truncation))


class Labelled(nn.Module):
    """(z (N, latent_dim), labels (N,) int64) -> images, without the label checks (their data-dependent
    branches do not export; an out-of-range label is the caller's error); z scaled by `truncation` first."""

    def __init__(self, generator: nn.Module, truncation: float = 1.0) -> None:
        super().__init__()
        self.generator = generator
        self.truncation = truncation

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embedding = self.generator.embed(labels)  # (N, E)
        return self.generator.from_embedding(scaled(z, self.truncation), embedding)


def metadata(generator: nn.Module, image_size: int, channels: int, truncation: float = 1.0) -> dict[str, str]:
    """What a user of the file needs to feed it and read its output."""
    noise = "z ~ N(0, 1)" if truncation == 1 else f"z ~ N(0, 1), multiplied by truncation {truncation:g} in the file"
    values: dict[str, Any] = {"inputs": ", ".join(input_names(generator)), "latent_dim": generator.latent_dim,
                              "num_classes": generator.num_classes, "conditioning": generator.conditioning,
                              "image_size": image_size, "channels": channels, "pixels": PIXELS,
                              "noise": noise, "truncation": truncation}
    prior = getattr(generator, "cluster_prior", None)  # how often the model draws each of its clusters
    if prior is not None:
        values["cluster_prior"] = json.dumps([round(p, 6) for p in prior.tolist()])
    return {key: str(value) for key, value in values.items()}


def input_names(generator: nn.Module) -> list[str]:
    """The exported file's inputs: `z`, and `labels` for a generator whose forward takes them."""
    return ["z", "labels"] if generator.takes_labels else ["z"]


def export(checkpoint: str | Path, fmt: str, out: str | Path, *, truncation: float = 1.0) -> dict[str, str]:
    """Write the checkpoint's sampling generator to `out` in `fmt`, its input scaled by `truncation` (0 < psi
    <= 1); returns the metadata written."""
    out = Path(out)
    generator, config = load_generator(checkpoint, torch.device("cpu"))
    labelled = generator.takes_labels
    module = (Labelled if labelled else Unlabelled)(generator, truncation).eval()
    inputs = (torch.randn(2, generator.latent_dim),) + ((torch.zeros(2, dtype=torch.int64),) if labelled else ())
    info = metadata(generator, config.image_size, channels_of(config), truncation)
    names = input_names(generator)
    if fmt == "onnx":
        try:
            import onnx
        except ImportError:
            raise UserError("--format onnx needs the export extra: pip install 'dcgan[export]'") from None
        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its successor
            torch.onnx.export(module, inputs, buffer, input_names=names, output_names=["images"],
                              dynamic_axes={**{name: {0: "n"} for name in names}, "images": {0: "n"}},
                              opset_version=17, dynamo=False)
        model = onnx.load_from_string(buffer.getvalue())
        for key, value in info.items():
            model.metadata_props.add(key=key, value=value)
        atomic_write(out, lambda tmp: onnx.save(model, str(tmp)))
    else:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, inputs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript announces its successor, torch.export
            extra = {"dcgan.json": json.dumps(info)}
            atomic_write(out, lambda tmp: torch.jit.save(traced, str(tmp), _extra_files=extra))
    return info
