"""The feature network of the sample-quality metrics: a small CNN classifier, its training and its files.

FID, KID and precision/recall are computed in the penultimate-layer features of this network;
its softmax gives the class statistics. The MNIST one ships as `assets/mnist_classifier.pt`.
Pictures without classes get the same network trained by contrast instead (SimCLR): two random
views of each picture must have features closer to each other than to the other pictures'; such
a network has no class head, so no class statistics.
"""

from __future__ import annotations

import math
import pickle
import re
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import atomic_save
from ..config import DCGAN_SIZES, UPPER_BOUNDS
from ..data import ImageData, load_data
from ..errors import UserError, file_kind, path_mode, reason
from ..limits import require_fits

KIND = "dcgan-classifier"
# Version 2 added feature networks without classes. Files of networks with classes are still
# written as version 1, which older versions of the package read.
FORMAT_VERSION = 2
CLASSES_FORMAT_VERSION = 1
FEATURE_KINDS = ("classes", "contrastive")  # what a network's features were trained on: labels, or views
FEATURE_DIM = 128
BUNDLED_NAME = "mnist_classifier.pt"
# What a classifier may be built for (its file is checked against these before anything is allocated).
CHANNELS = (1, 3)
MIN_IMAGE_SIZE = 8  # three 2x poolings leave one pixel
MAX_IMAGE_SIZE = max(DCGAN_SIZES)  # the largest images the GANs make
MAX_CLASSES = UPPER_BOUNDS["num_classes"]
MAX_FEATURE_DIM = 4096  # 32x the bundled network's 128
MAX_SEED = UPPER_BOUNDS["seed"]
# Memory of a training step per pixel of each image of the batch (activations, their gradients):
# about 800 bytes measured on the CPU, at 28 to 128 pixels.
STEP_BYTES_PER_PIXEL = 1024
# The views of contrastive training: a crop of this share of the picture's area or more, colours
# scaled by up to ±COLOUR_JITTER (three channels), Gaussian noise of this standard deviation.
MIN_CROP_AREA = 0.3
COLOUR_JITTER = 0.4
NOISE_STD = 0.03
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as the data's conversion to grey
MIN_RETRIEVAL_IMAGES = 2  # top-1 retrieval among fewer held-out pictures is 100% by construction


class DigitClassifier(nn.Module):
    """Images (B, C, S, S) in [0, 1] -> class logits (B, num_classes); `features` stops one layer earlier.

    Shapes are written for MNIST (C = 1, S = 28); other sizes scale the same way (S / 4 after pooling).
    A network trained by contrast has no classes (num_classes 0): no head, only `features`.
    """

    def __init__(self, *, channels: int = 1, image_size: int = 28, num_classes: int = 10,
                 feature_dim: int = FEATURE_DIM) -> None:
        super().__init__()
        self.channels = channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        base = image_size // 4
        self.body = nn.Sequential(
            _conv_block(channels, 32),  # (B, 32, 28, 28)
            nn.MaxPool2d(2),  # (B, 32, 14, 14)
            _conv_block(32, 64),  # (B, 64, 14, 14)
            nn.MaxPool2d(2),  # (B, 64, 7, 7)
            _conv_block(64, 128),  # (B, 128, 7, 7)
            nn.MaxPool2d(2),  # (B, 128, 3, 3)
            nn.Flatten(),  # (B, 128*3*3)
            nn.Linear(128 * (base // 2) ** 2, feature_dim, bias=False),  # (B, 128)
            nn.BatchNorm1d(feature_dim),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes) if num_classes else None  # (B, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations, (B, feature_dim): the space the metrics are computed in."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes)."""
        if self.head is None:
            raise ValueError("a feature network without classes has no class logits; call `features`")
        return self.head(self.dropout(self.features(x)))


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


@dataclass(frozen=True)
class ClassifierInfo:
    """What a classifier file says about itself besides its weights."""

    channels: int
    image_size: int
    classes: tuple[str, ...]
    data: str
    test_accuracy: float
    source: str
    seed: int = 0
    features: str = "classes"  # one of FEATURE_KINDS
    test_retrieval: float = math.nan  # the held-out quality of a network without classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    @property
    def has_classes(self) -> bool:
        """Whether the network predicts classes (so class statistics mean something)."""
        return self.features == "classes"

    def describe_shape(self) -> str:
        """`1x28x28`."""
        return "x".join(str(d) for d in self.input_shape)

    def label(self) -> str:
        """`bundled mnist_classifier.pt`, or the file's path."""
        return f"bundled {BUNDLED_NAME}" if Path(self.source) == bundled_path() else self.source


@dataclass(frozen=True)
class LoadedClassifier:
    """A classifier in inference mode, with its description."""

    model: DigitClassifier
    info: ClassifierInfo


@dataclass(frozen=True)
class Embedding:
    """What the classifier makes of a set of images: features (N, D) and class probabilities (N, K),
    None for a network without classes."""

    features: torch.Tensor
    probabilities: torch.Tensor | None


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of `train_classifier` (the defaults give the bundled MNIST network)."""

    epochs: int = 4
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    augment: bool = True


@dataclass(frozen=True)
class ContrastiveSettings:
    """Hyper-parameters of `train_contrastive`, the feature network of pictures without classes.

    More epochs than with classes: such sets are small, and each picture gives two new views every
    epoch. A low temperature weights the other pictures most like a view the most, so alike pictures
    are told apart: on 1,000 synthetic 32x32 pictures, 20 epochs gave a top-1 retrieval of 63% at
    0.1, 53% at 0.2 and 43% at 0.5 (SimCLR's range), and FID told blurred, noisy and tinted copies
    from the pictures as well at 0.1 as at 0.2. Lower still, the loss rests more and more on the
    single hardest of a batch's 255 other views.
    """

    epochs: int = 20
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    temperature: float = 0.1
    projection_dim: int = 64


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def bundled_path() -> Path:
    """The MNIST classifier that ships with the package."""
    return Path(str(resources.files("dcgan") / "assets" / BUNDLED_NAME))


def save_classifier(model: DigitClassifier, path: str | Path, *, classes: tuple[str, ...], data: str,
                    settings: TrainSettings | ContrastiveSettings, test_accuracy: float = math.nan,
                    test_retrieval: float = math.nan) -> Path:
    """Write the weights and their description as a `weights_only`-loadable file.

    A network without classes (num_classes 0) is written with `features` "contrastive", no classes
    and its top-1 retrieval; one with classes with its accuracy.
    """
    contrastive = model.num_classes == 0
    payload = {"kind": KIND, "format_version": FORMAT_VERSION if contrastive else CLASSES_FORMAT_VERSION,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "channels": model.channels, "image_size": model.image_size, "num_classes": model.num_classes,
               "feature_dim": model.feature_dim, "classes": [] if contrastive else list(classes), "data": data,
               "test_accuracy": float(test_accuracy), "settings": vars(settings).copy(),
               "features": "contrastive" if contrastive else "classes"}
    if contrastive:
        payload["test_retrieval"] = float(test_retrieval)
    atomic_save(payload, path)
    return Path(path)


def load_classifier(path: str | Path | None = None, *, device: torch.device | str = "cpu",
                    option: str = "--classifier") -> LoadedClassifier:
    """Load a classifier file (the bundled MNIST one when `path` is None), in inference mode.

    Anything else is refused with a one-line UserError naming `option` and the path.
    """
    path = bundled_path() if path is None else Path(path)
    payload = _read_payload(path, option)
    try:
        sizes = {name: int(payload[name]) for name in ("channels", "image_size", "num_classes", "feature_dim")}
        seed = int(payload.get("settings", {}).get("seed", 0))
        features = payload.get("features", "classes")
        fewest_classes, most_classes = (0, 0) if features == "contrastive" else (1, MAX_CLASSES)
        if (sizes["channels"] not in CHANNELS or not MIN_IMAGE_SIZE <= sizes["image_size"] <= MAX_IMAGE_SIZE
                or not fewest_classes <= sizes["num_classes"] <= most_classes
                or not 1 <= sizes["feature_dim"] <= MAX_FEATURE_DIM or not 0 <= seed <= MAX_SEED):
            raise ValueError("sizes out of range: " + ", ".join(f"{k} {v}" for k, v in {**sizes, "seed": seed}.items()))
        if features not in FEATURE_KINDS:
            raise ValueError(f"unknown features {features!r}")
        model = DigitClassifier(**sizes)
        model.load_state_dict(payload["state_dict"])
        info = ClassifierInfo(channels=model.channels, image_size=model.image_size,
                              classes=tuple(str(c) for c in payload.get("classes", range(model.num_classes))),
                              data=str(payload.get("data", "?")),
                              test_accuracy=float(payload.get("test_accuracy", math.nan)), source=str(path),
                              seed=seed, features=features,
                              test_retrieval=float(payload.get("test_retrieval", math.nan)))
    except (KeyError, TypeError, ValueError, OverflowError, RuntimeError, AttributeError) as exc:
        raise UserError(f"{option} {path}: damaged classifier file ({reason(exc)})") from None
    return LoadedClassifier(model.to(device).eval(), info)


def _read_payload(path: Path, option: str) -> dict[str, Any]:
    """The dict of a classifier file, read with `weights_only` (no code from the file runs)."""
    mode = path_mode(path, f"{option} {path}", missing="no such file")
    if not stat.S_ISREG(mode):  # a device or a pipe might never stop giving bytes
        raise UserError(f"{option} {path}: {file_kind(mode)}, not a classifier file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols: not the user's concern
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot read ({exc.strerror or exc})") from None
    except pickle.UnpicklingError as exc:
        code = re.search(r"GLOBAL (\S+)", str(exc))
        problem = f"refused: it asks to run code, {code[1]}" if code else "not a PyTorch file"
        raise UserError(f"{option} {path}: not a readable classifier file ({problem})") from None
    except Exception:  # noqa: BLE001 - whatever the unpickler trips on (a KeyError on text), the file is not usable
        raise UserError(f"{option} {path}: not a readable classifier file (not a PyTorch file, or truncated)") from None
    if not isinstance(payload, dict) or payload.get("kind") != KIND:
        raise UserError(f"{option} {path}: not a dcgan classifier file (make one with `dcgan classifier train`)")
    if payload.get("format_version") not in (CLASSES_FORMAT_VERSION, FORMAT_VERSION):
        raise UserError(f"{option} {path}: unsupported classifier format {payload.get('format_version')!r}")
    return payload


# ---------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------

def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> float in [0, 1], the network's input."""
    return images.float().div_(255.0)


@torch.no_grad()
def embed(classifier: LoadedClassifier, images: torch.Tensor, *, batch_size: int = 500) -> Embedding:
    """Features and softmax probabilities (none without classes) of uint8 images (N, C, H, W), in batches."""
    model = classifier.model
    device = next(model.parameters()).device
    features, probabilities = [], []
    for start in range(0, images.shape[0], batch_size):
        x = to_input(images[start:start + batch_size].to(device))
        f = model.features(x)  # (B, D)
        features.append(f.float().cpu())
        if model.head is not None:
            probabilities.append(F.softmax(model.head(f).float(), dim=1).cpu())  # (B, K)
    return Embedding(torch.cat(features), torch.cat(probabilities) if probabilities else None)


@torch.no_grad()
def accuracy(classifier: LoadedClassifier, data: ImageData) -> float:
    """Fraction of `data` whose predicted class is its label."""
    probabilities = embed(classifier, data.images).probabilities
    if probabilities is None:
        raise ValueError("a feature network without classes has no accuracy; measure its top_1_retrieval")
    return float((probabilities.argmax(1) == data.labels).float().mean())


@torch.no_grad()
def top_1_retrieval(classifier: LoadedClassifier, data: ImageData, *, seed: int, batch_size: int = 500,
                    chunk: int = 1024) -> float:
    """The fraction of `data` whose first random view's nearest neighbour (cosine of features), among
    the other views of all of `data` (two each, seeded), is the same picture's second view."""
    model = classifier.model
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    first, second = [], []
    for start in range(0, len(data), batch_size):
        x = to_input(data.images[start:start + batch_size])
        for views in (first, second):
            views.append(F.normalize(model.features(contrastive_view(x, generator).to(device)).float(), dim=1).cpu())
    queries = torch.cat(first)  # (N, D)
    candidates = torch.cat([queries, torch.cat(second)])  # (2N, D): a picture's second view is row N + its index
    n = queries.shape[0]
    found = []
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n))
        similarity = queries[rows] @ candidates.T  # (chunk, 2N)
        similarity[torch.arange(len(rows)), rows] = -math.inf  # a view is not its own neighbour
        found.append(similarity.argmax(1) == rows + n)
    return float(torch.cat(found).double().mean())


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

def train_test_data(spec: str, *, channels: int, image_size: int, download: bool = False, seed: int = 0,
                    holdout: float = 0.1) -> tuple[ImageData, ImageData]:
    """The training set and a test set: the dataset's own test split, or a seeded hold-out of 10%."""
    train = load_data(spec, split="train", channels=channels, image_size=image_size, download=download)
    channels = train.images.shape[1]  # 0 asked for the data's own
    if _has_test_split(spec):
        test = load_data(spec, split="test", channels=channels, image_size=image_size, download=download)
        return train, test
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    n_test = max(1, round(len(train) * holdout))
    if len(train) - n_test < 2:
        raise UserError(f"--data {spec}: {len(train)} images are too few to train and test a classifier")
    pick = lambda index: replace(train, images=train.images[index], labels=train.labels[index],  # noqa: E731
                                 mapped=False)  # a part of a memory-mapped set is in memory
    return pick(order[n_test:]), pick(order[:n_test])


def feature_kind(requested: str, data: ImageData) -> str:
    """What `--features` trains on `data`: `auto` is classes when the data has 2 or more, contrastive
    otherwise; classes are refused for data without them."""
    has_classes = not data.flat and len(data.classes) >= 2
    if requested == "auto":
        return "classes" if has_classes else "contrastive"
    if requested == "classes" and not has_classes:
        kind = "a flat folder of pictures" if data.flat else f"{len(data.classes)} class"
        raise UserError(f"--features classes: --data {data.source} has no classes to learn ({kind}); "
                        f"use --features contrastive")
    return requested


def _has_test_split(spec: str) -> bool:
    if spec == "mnist" or spec.startswith("torchvision:"):
        return True
    path = Path(spec)
    return path.is_dir() and any(p.name.startswith("t10k-images-idx3-ubyte") for p in path.iterdir())


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random small rotations (±8°), scalings (±8%) and shifts (±2 px) of a float batch (B, C, H, W)."""
    b = x.shape[0]
    uniform = lambda scale: (torch.rand(b, generator=generator) * 2 - 1) * scale  # noqa: E731
    angle, zoom = uniform(math.radians(8)), 1 + uniform(0.08)
    shift_x, shift_y = uniform(4 / x.shape[-1]), uniform(4 / x.shape[-2])  # 2 px in [-1, 1] coordinates
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def contrastive_view(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random view of a float batch (B, C, H, W) in [0, 1], as contrastive training sees it.

    A crop of MIN_CROP_AREA to all of the picture's area (aspect ratio 3:4 to 4:3, anywhere in it)
    resized to the full size, flipped left to right half the time; for three channels, brightness,
    contrast and saturation each scaled by a factor within ±COLOUR_JITTER; Gaussian noise.
    """
    b, channels = x.shape[:2]
    uniform = lambda low, high: low + (high - low) * torch.rand(b, generator=generator)  # noqa: E731
    area = uniform(MIN_CROP_AREA, 1.0)
    aspect = uniform(-math.log(4 / 3), math.log(4 / 3)).exp()
    width, height = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)  # shares of the sides
    shift_x, shift_y = uniform(-1, 1) * (1 - width), uniform(-1, 1) * (1 - height)  # the crop stays inside
    flip = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0)
    zero = torch.zeros(b)
    theta = torch.stack([torch.stack([width * flip, zero, shift_x], 1), torch.stack([zero, height, shift_y], 1)], 1)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if channels == 3:
        x = _jitter_colours(x, generator)
    return (x + NOISE_STD * torch.randn(x.shape, generator=generator).to(x.device)).clamp(0, 1)


def _jitter_colours(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Brightness, then contrast (around the mean grey), then saturation (around each pixel's grey) of RGB
    pictures, each scaled by a random factor in [1 - COLOUR_JITTER, 1 + COLOUR_JITTER]."""
    factor = lambda: (1 + COLOUR_JITTER * (2 * torch.rand(x.shape[0], 1, 1, 1, generator=generator) - 1)  # noqa: E731
                      ).to(x.device)
    luma = torch.tensor(LUMA, device=x.device).view(1, 3, 1, 1)
    x = (x * factor()).clamp(0, 1)
    mean_grey = (x * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = (mean_grey + (x - mean_grey) * factor()).clamp(0, 1)
    grey = (x * luma).sum(1, keepdim=True)
    return (grey + (x - grey) * factor()).clamp(0, 1)


def nt_xent(first: torch.Tensor, second: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (SimCLR's loss) of two views' projections (B, P): each of the 2B views must pick out
    its partner among the other 2B - 1 by cosine similarity / temperature (a cross-entropy)."""
    b = first.shape[0]
    z = F.normalize(torch.cat([first, second]), dim=1)  # (2B, P)
    itself = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(itself, -math.inf)  # (2B, 2B)
    partners = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(logits, partners)


def require_batch_fits(batch_size: int, train: ImageData, *, device: torch.device, views: int = 1) -> None:
    """Refuse a `--batch-size` whose training step (on at most all of `train`, `views` images per picture)
    cannot fit in `device`'s memory."""
    _, _, height, width = train.images.shape
    require_fits(f"--batch-size {batch_size:,}", views * min(batch_size, len(train)),
                 STEP_BYTES_PER_PIXEL * height * width, device=device)


def train_classifier(train: ImageData, test: ImageData, settings: TrainSettings, *,
                     device: torch.device | str = "cpu",
                     report: Callable[[int, float, float], None] | None = None) -> tuple[DigitClassifier, float]:
    """Train a classifier with AdamW and a one-cycle schedule; returns it and its accuracy on `test`."""
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    _, channels, height, _ = train.images.shape
    model = DigitClassifier(channels=channels, image_size=height,
                            num_classes=max(len(train.classes), int(train.labels.max()) + 1)).to(device)
    optimizer, schedule = _optimiser(list(model.parameters()), settings, len(train))

    def loss_of(index: torch.Tensor) -> torch.Tensor:
        x = to_input(train.images[index])
        if settings.augment:
            x = augment(x, generator)
        return F.cross_entropy(model(x.to(device)), train.labels[index].to(device))

    loaded = LoadedClassifier(model, _info_of(model, train))
    for epoch in range(settings.epochs):
        model.train()
        loss = _train_epoch(len(train), settings.batch_size, generator, optimizer, schedule, loss_of)
        model.eval()
        test_accuracy = accuracy(loaded, test)
        if report is not None:
            report(epoch + 1, loss, test_accuracy)
    return model.eval(), test_accuracy


def _optimiser(parameters: list[nn.Parameter], settings: TrainSettings | ContrastiveSettings,
               images: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW and its one-cycle schedule over `settings.epochs` epochs of `images` images."""
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(images / settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr,
                                                   total_steps=settings.epochs * steps_per_epoch)
    return optimizer, schedule


def _train_epoch(images: int, batch_size: int, generator: torch.Generator, optimizer: torch.optim.Optimizer,
                 schedule: Any, loss_of: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """One epoch in a seeded order: `loss_of(indices)` of each batch, minimised; returns the mean loss."""
    order = torch.randperm(images, generator=generator)
    total, batches = 0.0, 0
    for start in range(0, images, batch_size):
        index = order[start:start + batch_size]
        if index.numel() < 2:  # batch norm cannot train on one image, nor NT-Xent without another
            continue
        loss = loss_of(index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        total, batches = total + loss.item(), batches + 1
    return total / max(batches, 1)


def train_contrastive(train: ImageData, test: ImageData, settings: ContrastiveSettings, *,
                      device: torch.device | str = "cpu",
                      report: Callable[[int, float, float], None] | None = None) -> tuple[DigitClassifier, float]:
    """Train the classifier's body without labels (SimCLR): NT-Xent on two random views of each picture,
    through a projection head that is dropped afterwards, with AdamW and a one-cycle schedule.

    Returns the network (no classes) and its top-1 retrieval on `test`; `report(epoch, loss, retrieval)`.
    """
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    _, channels, height, _ = train.images.shape
    model = DigitClassifier(channels=channels, image_size=height, num_classes=0).to(device)
    projection = nn.Sequential(nn.Linear(model.feature_dim, model.feature_dim), nn.ReLU(),
                               nn.Linear(model.feature_dim, settings.projection_dim)).to(device)
    optimizer, schedule = _optimiser([*model.parameters(), *projection.parameters()], settings, len(train))

    def loss_of(index: torch.Tensor) -> torch.Tensor:
        x = to_input(train.images[index])
        views = torch.cat([contrastive_view(x, generator), contrastive_view(x, generator)]).to(device)
        return nt_xent(*projection(model.features(views)).chunk(2), settings.temperature)

    loaded = LoadedClassifier(model, _info_of(model, train))
    for epoch in range(settings.epochs):
        model.train()
        loss = _train_epoch(len(train), settings.batch_size, generator, optimizer, schedule, loss_of)
        model.eval()
        test_retrieval = top_1_retrieval(loaded, test, seed=settings.seed)
        if report is not None:
            report(epoch + 1, loss, test_retrieval)
    return model.eval(), test_retrieval


def _info_of(model: DigitClassifier, data: ImageData) -> ClassifierInfo:
    contrastive = model.num_classes == 0
    return ClassifierInfo(channels=model.channels, image_size=model.image_size,
                          classes=() if contrastive else data.classes, data=data.source, test_accuracy=math.nan,
                          source="(training)", features="contrastive" if contrastive else "classes")
