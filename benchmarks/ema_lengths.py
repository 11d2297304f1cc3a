"""Score several lengths of the generator's moving average, all from one training run.

Trains `dcgan train FLAGS` once, in this process, while keeping extra moving averages of G's
weights beside the run's own. Each is the run's `EMA` with another warm-up: the decay of update n
(from 0) is min(cap, (1 + n) / (power + 2 + n)), so the average weighs step m of n about as
(m / n)^power (Karras et al., 2024): a smaller power averages over more of the run; the run's own
is power 8 capped at its `--ema-decay`. The extra
averages only read G's weights, so the training is the run it would be without them. At the end
each average is saved as a copy of the final checkpoint and scored with `dcgan evaluate`
(10,000 samples, the same noise for every average: the comparison is paired).

    python benchmarks/ema_lengths.py --out runs/ema-lengths/mnist-default-seed0 \\
        --average 8@0.999 --average 4@0.9999 --average 2@0.9999 \\
        -- --preset default --steps 9375 --seed 0

`--average POWER@CAP` (repeat) names each extra average; the scores go to OUT/ema_lengths.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from dcgan.cli import main as dcgan_main
from dcgan.training import ema as ema_module


class PowerAverage(ema_module.EMA):
    """The run's moving average with decay min(cap, (1 + n) / (power + 2 + n))."""

    def __init__(self, module: torch.nn.Module, *, power: float, cap: float) -> None:
        super().__init__(module, decay=cap)
        self.power = power

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (self.power + 2 + self.updates))


def keep_extra_averages(specs: list[tuple[float, float]]) -> list[PowerAverage]:
    """Make the run's EMA update the averages of `specs` too; returns them (filled as training runs)."""
    averages: list[PowerAverage] = []
    original_update = ema_module.EMA.update

    def update(self: ema_module.EMA, module: torch.nn.Module) -> None:
        if not averages:  # the first update: every average starts, as the run's does, from G's initial weights
            averages.extend(PowerAverage(self.module, power=power, cap=cap) for power, cap in specs)
        for average in (self, *averages):
            original_update(average, module)

    ema_module.EMA.update = update
    return averages


def parse_average(text: str) -> tuple[float, float]:
    """'POWER@CAP' -> (power, cap)."""
    power, _, cap = text.partition("@")
    try:
        return float(power), float(cap or 0.9999)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--average wants POWER@CAP, e.g. 4@0.9999, got {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the run directory (must not exist)")
    parser.add_argument("--average", type=parse_average, action="append", required=True, metavar="POWER@CAP")
    parser.add_argument("--num", type=int, default=10000, help="samples scored per average")
    parser.add_argument("--reference", default="mnist", help="`dcgan evaluate --reference`")
    parser.add_argument("--classifier", default=None, help="`dcgan evaluate --classifier`")
    parser.add_argument("train_flags", nargs=argparse.REMAINDER, help="-- then the `dcgan train` flags")
    args = parser.parse_args()
    flags = [f for f in args.train_flags if f != "--"]
    if args.out.exists():
        parser.error(f"--out {args.out} exists: pick a new directory")
    averages = keep_extra_averages(args.average)
    code = dcgan_main(["train", *flags, "--quiet", "--sample-every", "0", "--device", "cpu", "--out", str(args.out)])
    if code:
        sys.exit(code)
    payload = torch.load(args.out / "checkpoints" / "last.pt", weights_only=True)
    own = payload["ema"]["module"]  # the run's own average: power 8, capped at its --ema-decay
    results = []
    for average in averages:
        gap = max((average.module.state_dict()[k] - v).abs().max().item() for k, v in own.items()
                  if v.is_floating_point() and "running" not in k)
        name = f"power{average.power:g}-cap{average.decay:g}"
        payload["ema"] = average.state_dict()  # its batch-norm statistics are recomputed when it is loaded
        checkpoint = args.out / f"{name}.pt"
        torch.save(payload, checkpoint)
        scores_file = args.out / f"{name}.json"
        evaluate = ["evaluate", "--checkpoint", str(checkpoint), "--num", str(args.num), "--reference", args.reference,
                    "--json", str(scores_file)]
        if args.classifier:
            evaluate += ["--classifier", args.classifier]
        if dcgan_main(evaluate):
            sys.exit(1)
        scores = json.loads(scores_file.read_text())
        results.append({"power": average.power, "cap": average.decay, "updates": average.updates,
                        "max_weight_gap_to_run_average": gap, **scores})
        print(f"power {average.power:g} cap {average.decay:g}: FID {scores['fid']:.2f} precision "
              f"{scores['precision']:.3f} recall {scores['recall']:.3f}"
              + (f" class {scores['class_match']:.3f}" if scores.get("class_match") is not None else "")
              + f" (largest weight gap to the run's own average {gap:.2g})", flush=True)
    (args.out / "ema_lengths.json").write_text(json.dumps({"train_flags": flags, "averages": results}, indent=1))


if __name__ == "__main__":
    main()
