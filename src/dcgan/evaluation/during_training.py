"""`--eval-every`: scoring the generator while it trains, with fid.png and checkpoints/best.pt.

The training loop does not import this module: the command line hands `evaluate_during_training`
to `train`, which calls it once the run's final config is known.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import write_checkpoint
from ..config import TrainConfig
from ..errors import UserError
from ..files import replace_file
from ..ops import eval_mode
from ..plots import plot_fid, read_metrics
from ..sampling import class_labels, generate
from ..training.rundir import RunDirectory
from .classifier import LoadedClassifier, load_classifier
from .scoring import MIN_SAMPLES, EvalSettings, Evaluation, Reference, evaluate, reference_data, reference_features


class TrainingEvaluator:
    """`--eval-every N`: scores the generator every N steps, plots fid.png and keeps checkpoints/best.pt."""

    def __init__(self, *, classifier: LoadedClassifier, reference: Reference, every: int, num: int, seed: int,
                 run: RunDirectory) -> None:
        self.classifier = classifier
        self.reference = reference
        self.every = every
        self.num = num
        self.seed = seed
        self.root = run.root
        self.best_path = run.checkpoints / "best.pt"
        self.history = _fid_history(run.metrics_csv)
        self.best_fid = _best_fid(self.best_path)

    def due(self, step: int, final: bool) -> bool:
        """Every `every` steps, and at the run's last step."""
        return step % self.every == 0 or final

    def __call__(self, generator: torch.nn.Module, step: int, final: bool,
                 payload: Callable[[], dict[str, Any]]) -> dict[str, float]:
        """Score the generator when due; returns the metrics.csv columns ({} when not due)."""
        if not self.due(step, final) or not all(torch.isfinite(p).all() for p in generator.parameters()):
            return {}  # a broken generator is the roll-back's business, not a score
        device = next(generator.parameters()).device
        requested = class_labels(generator, self.num, seed=self.seed)
        with eval_mode(generator):
            samples = generate(generator, self.num, seed=self.seed, device=device, labels=requested)
        images = torch.from_numpy(samples).permute(0, 3, 1, 2).contiguous()
        result = evaluate(self.classifier, images, self.reference, samples=f"step {step}",
                          settings=EvalSettings(kid_subsets=20), requested=requested)
        self.history = [(s, f) for s, f in self.history if s < step] + [(step, result.fid)]  # after a roll-back
        replace_file(self.root / "fid.png", lambda tmp: plot_fid(self.history, tmp))
        if math.isfinite(result.fid) and result.fid < self.best_fid:
            self._save_best(payload(), result)
        return result.columns()

    def _save_best(self, payload: dict[str, Any], result: Evaluation) -> None:
        write_checkpoint({**payload, "eval": result.columns()}, self.best_path)
        self.best_fid = result.fid


def feature_network_for(config: TrainConfig, device: torch.device | str = "cpu") -> LoadedClassifier:
    """The `--eval-classifier` of a training config (bundled MNIST by default), checked against its images."""
    classifier = load_classifier(config.eval_classifier or None, device=device, option="--eval-classifier")
    info = classifier.info
    channels = config.channels or info.channels  # 0: the data's, known once it is loaded (checked again then)
    if info.input_shape != (channels, config.image_size, config.image_size):
        raise UserError(f"--eval-every: the feature network {Path(info.source).name} takes {info.describe_shape()} "
                        f"images, but this run makes {channels}x{config.image_size}x{config.image_size}; "
                        f"train one with `dcgan classifier train --data {config.data}` and pass --eval-classifier")
    if config.eval_samples < MIN_SAMPLES:
        raise UserError(f"--eval-samples {config.eval_samples}: at least {MIN_SAMPLES} are needed")
    reference = config.eval_reference
    if reference and reference != "mnist" and not reference.startswith("torchvision:") and not Path(reference).exists():
        raise UserError(f"--eval-reference {reference}: no such file or directory")
    return classifier


def evaluate_during_training(config: TrainConfig, run: RunDirectory, device: torch.device) -> TrainingEvaluator | None:
    """The `--eval-every` evaluator of a run (None when it is off)."""
    if config.eval_every <= 0:
        return None
    classifier = feature_network_for(config, device)
    info = classifier.info
    source = config.eval_reference or config.data
    data = reference_data(source, info, download=config.download)
    reference = reference_features(classifier, data, description=f"{source} (test)")
    return TrainingEvaluator(classifier=classifier, reference=reference, every=config.eval_every,
                             num=config.eval_samples, seed=config.seed, run=run)


def _fid_history(metrics_csv: Path) -> list[tuple[int, float]]:
    if not metrics_csv.is_file():
        return []
    rows = read_metrics(metrics_csv)
    return [(int(row["step"]), row["fid"]) for row in rows if math.isfinite(row.get("fid", math.nan))]


def _best_fid(path: Path) -> float:
    if not path.is_file():
        return math.inf
    try:
        return float(torch.load(path, map_location="cpu", weights_only=True)["eval"]["fid"])
    except Exception:  # noqa: BLE001 - an unreadable best.pt is replaced by the next evaluation
        return math.inf
