"""Scoring samples: loading them, the cached reference features, the metrics and the report.

Samples and references are uint8 (N, C, H, W) tensors, 0 = background (MNIST's polarity).
"""

from __future__ import annotations

import hashlib
import json
import math
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..checkpoint import atomic_save
from ..data import IMAGE_EXTENSIONS, ImageData, cache_dir, load_data
from ..errors import UserError, file_kind, path_mode, reason
from ..networks import channels_of
from ..sampling import class_labels, generate, load_generator, require_images_fit
from .classifier import ClassifierInfo, LoadedClassifier, embed
from .metrics import (ClassStats, GaussianFit, KernelDistance, PrecisionRecall, class_stats, frechet_distance,
                      gaussian_fit, kernel_distance, precision_recall)

MIN_SAMPLES = 50  # below this, k-NN manifolds and covariances say little
CACHE_VERSION = 1


@dataclass(frozen=True)
class EvalSettings:
    """Metric parameters: k of the k-NN manifolds, KID's subsets, and the seed of every random choice."""

    k: int = 3
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class Reference:
    """The reference set's features and their Gaussian fit."""

    features: torch.Tensor
    fit: GaussianFit
    description: str


@dataclass(frozen=True)
class Evaluation:
    """Every number `dcgan evaluate` reports, and what was compared.

    `classes` is None when the feature network has no classes (trained by contrast): then the class
    statistics are null in the JSON and empty in metrics.csv.
    """

    fid: float
    kid: KernelDistance
    manifold: PrecisionRecall
    classes: ClassStats | None
    num_samples: int
    samples: str
    reference: str
    num_reference: int
    classifier: str
    classifier_accuracy: float
    classifier_features: str = "classes"
    classifier_retrieval: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """A flat JSON-friendly dict (NaN becomes null)."""
        c = self.classes
        class_values: dict[str, Any] = dict.fromkeys(
            ("confidence", "classes_covered", "num_classes", "class_entropy", "class_histogram", "class_match"))
        if c is not None:
            class_values = {"confidence": c.confidence, "classes_covered": c.classes_covered,
                            "num_classes": len(c.histogram), "class_entropy": c.entropy,
                            "class_histogram": list(c.histogram), "class_match": c.class_match}
        values = {
            "fid": self.fid, "kid": self.kid.mean, "kid_std": self.kid.std, "kid_subsets": self.kid.subsets,
            "kid_subset_size": self.kid.subset_size, "precision": self.manifold.precision,
            "recall": self.manifold.recall, "k": self.manifold.k, **class_values,
            "num_samples": self.num_samples, "samples": self.samples,
            "reference": self.reference, "num_reference": self.num_reference, "classifier": self.classifier,
            "classifier_features": self.classifier_features, "classifier_test_accuracy": self.classifier_accuracy,
            "classifier_test_retrieval": self.classifier_retrieval,
        }
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()}

    def columns(self) -> dict[str, float]:
        """The numbers logged to metrics.csv during training (NaN, an empty cell, for what was not measured)."""
        c = self.classes
        return {"fid": self.fid, "kid": self.kid.mean, "precision": self.manifold.precision,
                "recall": self.manifold.recall,
                "classes_covered": math.nan if c is None else float(c.classes_covered),
                "class_entropy": math.nan if c is None else c.entropy,
                "confidence": math.nan if c is None else c.confidence,
                "class_match": math.nan if c is None or c.class_match is None else c.class_match}


# ---------------------------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------------------------

def load_samples(path: str | Path, info: ClassifierInfo) -> torch.Tensor:
    """Read samples from a folder of images or an N x H x W (x C) uint8 .npy file, as (N, C, H, W)."""
    path = Path(path)
    mode = _file_mode(path, "--samples")
    if stat.S_ISDIR(mode):
        images = _load_image_dir(path, info)
    elif not stat.S_ISREG(mode):
        raise UserError(f"--samples {path}: {file_kind(mode)}; expected a folder of PNG images or a .npy file")
    elif path.suffix.lower() == ".npy":
        images = _load_npy(path)
    else:
        raise UserError(f"--samples {path}: expected a folder of PNG images or a .npy file")
    return check_samples(images, info, f"--samples {path}")


def _file_mode(path: Path, option: str) -> int:
    """What `path` is (its st_mode, following links); a UserError naming `option` when nothing is there."""
    return path_mode(path, f"{option} {path}")


def _read_npy(path: Path, option: str) -> np.ndarray:
    """The array of a .npy file (no pickled objects); anything that is not a regular file is never opened,
    as reading a pipe or a device may never end."""
    mode = _file_mode(path, option)
    if not stat.S_ISREG(mode):
        raise UserError(f"{option} {path}: {file_kind(mode)}, not a .npy file")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, MemoryError) as exc:  # MemoryError: a header asking for too much
        raise UserError(f"{option} {path}: not a readable .npy array ({reason(exc)})") from None
    if not isinstance(array, np.ndarray):
        array.close()
        raise UserError(f"{option} {path}: a .npz archive, not a .npy array")
    return array


def _load_npy(path: Path) -> torch.Tensor:
    array = _read_npy(path, "--samples")
    if array.dtype != np.uint8:
        raise UserError(f"--samples {path}: expected uint8 pixels (0 = background, 255 = ink), got {array.dtype}")
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    elif not (array.ndim == 4 and array.shape[1] in (1, 3)):
        raise UserError(f"--samples {path}: expected an N x H x W or N x H x W x C array, got shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array))


def _load_image_dir(path: Path, info: ClassifierInfo) -> torch.Tensor:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise UserError(f"--samples {path}: no PNG images in this folder")
    mode = "L" if info.channels == 1 else "RGB"
    images = []
    for file in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked before decoding
                with Image.open(file) as image:
                    if image.size != (info.image_size, info.image_size):
                        raise UserError(f"--samples {path}: {file.name} is {image.width}x{image.height} pixels, but "
                                        f"the feature network {Path(info.source).name} takes "
                                        f"{info.describe_shape()} images")
                    array = np.asarray(image.convert(mode), dtype=np.uint8)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
            raise UserError(f"--samples {path}: cannot read image {file.name} ({exc})") from None
        images.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(images))


def check_samples(images: torch.Tensor, info: ClassifierInfo, origin: str) -> torch.Tensor:
    """Refuse samples whose shape the feature network does not take, or too few of them."""
    shape = tuple(images.shape[1:])
    if shape != info.input_shape:
        got = "x".join(str(d) for d in shape)
        raise UserError(f"{origin}: samples are {got} images, but the feature network {Path(info.source).name} "
                        f"takes {info.describe_shape()} images (train one for this data with "
                        f"`dcgan classifier train` and pass it with --classifier)")
    if images.shape[0] < MIN_SAMPLES:
        raise UserError(f"{origin}: {images.shape[0]} samples are too few; at least {MIN_SAMPLES} are needed "
                        f"(10000 is the usual number)")
    return images


def samples_from_checkpoint(path: str | Path, info: ClassifierInfo, *, num: int, seed: int,
                            device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`num` samples of a checkpoint's generator, as uint8 (N, C, H, W), and the classes asked for.

    A conditional model is asked for every class equally often; the classes are None otherwise.
    """
    if num < MIN_SAMPLES:
        raise UserError(f"--num {num}: too few samples; at least {MIN_SAMPLES} are needed (10000 is the usual number)")
    generator, config = load_generator(path, device)
    require_images_fit(f"--num {num:,}", num, latent_dim=generator.latent_dim, image_size=config.image_size,
                       channels=channels_of(config))
    requested = class_labels(generator, num, seed=seed)
    images = torch.from_numpy(generate(generator, num, seed=seed, device=device, labels=requested))
    return check_samples(images.permute(0, 3, 1, 2).contiguous(), info, f"--checkpoint {path}"), requested


def load_requested(path: str | Path, num: int) -> torch.Tensor:
    """The class each sample was asked to be: a 1-d integer .npy array, one entry per sample."""
    path = Path(path)
    array = _read_npy(path, "--labels")
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer) or len(array) != num:
        raise UserError(f"--labels {path}: expected {num} integer class labels, got a {array.dtype} array "
                        f"of shape {array.shape}")
    return torch.from_numpy(array.astype(np.int64))


# ---------------------------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------------------------

def reference_data(spec: str, info: ClassifierInfo, *, split: str = "test", download: bool = False) -> ImageData:
    """The reference images (MNIST's test set by default), in the feature network's shape."""
    data = load_data(spec, split=split, channels=info.channels, image_size=info.image_size, download=download)
    if len(data) < MIN_SAMPLES:
        raise UserError(f"--reference {spec}: {len(data)} images are too few; at least {MIN_SAMPLES} are needed")
    return data


def reference_features(classifier: LoadedClassifier, data: ImageData, *, description: str,
                       use_cache: bool = True) -> Reference:
    """Features of the reference set, cached on disk by the content of the images and of the network."""
    path = cache_dir() / "reference" / f"{_fingerprint(classifier, data.images)}.pt"
    features = _read_cached(path) if use_cache else None
    if features is None:
        features = embed(classifier, data.images).features
        if use_cache:
            _write_cached(path, features)
    return Reference(features, gaussian_fit(features), description)


def _fingerprint(classifier: LoadedClassifier, images: torch.Tensor) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION} {tuple(images.shape)}".encode())
    for name, tensor in classifier.model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(images.contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def _read_cached(path: Path) -> torch.Tensor | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["features"]
    except Exception:  # noqa: BLE001 - a damaged cache is recomputed, never trusted
        return None


def _write_cached(path: Path, features: torch.Tensor) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save({"features": features}, path)
    except OSError:
        pass  # the cache is an optimisation: an unwritable cache directory is not an error


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------

def evaluate(classifier: LoadedClassifier, images: torch.Tensor, reference: Reference, *,
             settings: EvalSettings = EvalSettings(), samples: str = "samples",
             requested: torch.Tensor | None = None) -> Evaluation:
    """Score uint8 samples (N, C, H, W) against a reference in the classifier's feature space.

    `requested` (the class asked of each sample) is compared with the predicted classes; a network
    without classes has none to compare, so it is not used.
    """
    smallest = min(images.shape[0], reference.features.shape[0])
    if settings.k >= smallest:
        raise UserError(f"--k {settings.k}: must be smaller than the number of samples ({smallest})")
    embedding = embed(classifier, images)
    features = embedding.features
    fid = frechet_distance(gaussian_fit(features), reference.fit) if torch.isfinite(features).all() else math.nan
    kid = kernel_distance(features, reference.features, subsets=settings.kid_subsets,
                          subset_size=settings.kid_subset_size, seed=settings.seed)
    real, fake = _equal_sized(reference.features, features, settings.seed)
    manifold = precision_recall(real, fake, k=settings.k)
    probabilities = embedding.probabilities  # None without classes: no class statistics, nothing requested
    info = classifier.info
    return Evaluation(fid=fid, kid=kid, manifold=manifold,
                      classes=None if probabilities is None else class_stats(probabilities, requested=requested),
                      num_samples=images.shape[0], samples=samples, reference=reference.description,
                      num_reference=reference.features.shape[0], classifier=info.label(),
                      classifier_accuracy=info.test_accuracy, classifier_features=info.features,
                      classifier_retrieval=info.test_retrieval)


def _equal_sized(real: torch.Tensor, fake: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random subsets of the same size: k-NN radii, so precision and recall, depend on the set size."""
    n = min(real.shape[0], fake.shape[0])
    generator = torch.Generator().manual_seed(seed)
    pick = lambda x: x if x.shape[0] == n else x[torch.randperm(x.shape[0], generator=generator)[:n]]  # noqa: E731
    return pick(real), pick(fake)


def format_report(result: Evaluation) -> str:
    """The human-readable table of `dcgan evaluate` (no class rows for a feature network without classes)."""
    if result.classifier_features == "classes":
        quality = f"test accuracy {100 * result.classifier_accuracy:.2f}%"
    else:
        quality = (f"{result.classifier_features}, no classes; top-1 retrieval "
                   f"{100 * result.classifier_retrieval:.2f}%")
    rows = [
        ("samples", f"{result.num_samples} from {result.samples}"),
        ("reference", f"{result.num_reference} from {result.reference}"),
        ("feature network", f"{result.classifier} ({quality})"),
        ("FID", f"{result.fid:.3f}"),
        ("KID", f"{result.kid.mean:.5f} ± {result.kid.std:.5f} ({result.kid.subsets} subsets of "
                f"{result.kid.subset_size})"),
        (f"precision (k={result.manifold.k})", f"{result.manifold.precision:.4f}"),
        (f"recall (k={result.manifold.k})", f"{result.manifold.recall:.4f}"),
    ]
    c = result.classes
    if c is not None:
        total = max(sum(c.histogram), 1)
        rows += [
            ("confidence", f"{c.confidence:.4f}"),
            ("classes covered", f"{c.classes_covered} / {len(c.histogram)}"),
            ("class entropy", f"{c.entropy:.4f} (1 = uniform)"),
            ("class histogram", "  ".join(f"{i}:{100 * n / total:.1f}%" for i, n in enumerate(c.histogram))),
        ]
        if c.class_match is not None:
            rows.append(("requested class", f"{c.class_match:.4f}"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def to_json(result: Evaluation) -> str:
    """The evaluation as one line of JSON."""
    return json.dumps(result.to_dict(), allow_nan=False)
