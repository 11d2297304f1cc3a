"""Fine-tuning from another run (`--init-from`, optionally `--freeze-d K`) against training from scratch, on a
few images of a new set, at equal steps; each run scored on the whole new class or set.

    python benchmarks/finetune.py --source digit --digit 7 --images 200 --seeds 0,1,2 \\
        --pretrain-steps 9375 --steps 2000 --freeze-d 1 \\
        --json benchmarks/results/finetune_digit7.json --markdown docs/results/finetune_digit7.md

Sources of the run started from (trained first, or named with --pretrained RUN):

- `digit` (default): MNIST's training images without one digit (--digit); the new set is the
  first --images training images of that digit, scored against every test image of it.
- `fashion`: Fashion-MNIST (Debian's `dataset-fashion-mnist`, in --fashion); the new set is the
  first --images MNIST training images, scored against MNIST's whole test split.

For each seed, the same recipe (--recipe) trains on the new set for --steps steps: from scratch,
from the run started from (`--init-from`), and with --freeze-d K also with D's first K blocks
frozen. `dcgan evaluate` scores every run (and the run started from, as it is) with the bundled
MNIST classifier on --num samples: FID, KID, precision and recall, mean ± sd over the seeds. The
new set is one IDX folder in --out (its train split the few images, its test split the reference);
finished runs (their `eval.json`) are kept and not run again, so an interrupted study resumes.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import shutil
import struct
from pathlib import Path

import numpy as np

from dcgan.data import bundled_mnist_dir, read_idx
from machine import cpu_name, dcgan, write_report
from recipes import KNOWN_DATA, mean_sd

SCORES = ("fid", "kid", "precision", "recall")
MNIST_FILES = {"train": "train-{}-idx{}-ubyte.gz", "test": "t10k-{}-idx{}-ubyte.gz"}


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array (images N x H x W, or labels N) as an uncompressed IDX file."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """One split of an IDX folder in MNIST's naming (train or t10k)."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix = "train" if split == "train" else "t10k"
    write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)


def mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The bundled MNIST's images and labels of a split."""
    pattern = MNIST_FILES[split]
    return (read_idx(bundled_mnist_dir() / pattern.format("images", 3)),
            read_idx(bundled_mnist_dir() / pattern.format("labels", 1)))


def prepare_data(source: str, digit: int, images: int, fashion: Path, out: Path) -> tuple[str, Path, str]:
    """(the data the run started from trains on, the new set's IDX folder, a description), written into `out`."""
    new = out / f"new-{images}img"
    train_images, train_labels = mnist("train")
    test_images, test_labels = mnist("test")
    if source == "digit":
        pretrain = out / "without"
        if not (pretrain / "train-labels-idx1-ubyte").exists():
            others = train_labels != digit
            write_split(pretrain, "train", train_images[others], train_labels[others])
        chosen, reference = np.flatnonzero(train_labels == digit)[:images], test_labels == digit
        described = (f"MNIST without the digit {digit} ({int((train_labels != digit).sum()):,} images), then "
                     f"{images} images of the {digit}, scored against its {int(reference.sum()):,} test images")
        pretrain_data = str(pretrain)
    else:
        if not any(fashion.glob("train-images-idx3-ubyte*")):
            raise SystemExit(f"--fashion {fashion}: no Fashion-MNIST IDX files (sudo apt-get install "
                             f"dataset-fashion-mnist)")
        chosen, reference = np.arange(images), np.ones(len(test_labels), dtype=bool)
        described = (f"Fashion-MNIST, then {images} MNIST training images, scored against MNIST's "
                     f"{len(test_labels):,} test images")
        pretrain_data = str(fashion)
    if not (new / "t10k-labels-idx1-ubyte").exists():
        write_split(new, "train", train_images[chosen], train_labels[chosen])
        write_split(new, "test", test_images[reference], test_labels[reference])
    return pretrain_data, new, described


def evaluate(checkpoint: Path, reference: Path, num: int, scores_file: Path) -> dict:
    """FID, KID, precision and recall of `num` samples of `checkpoint` against `reference`'s test split."""
    scores_file.unlink(missing_ok=True)  # left by an interrupted evaluation
    dcgan("evaluate", "--checkpoint", checkpoint, "--num", num, "--reference", reference, "--device", "cpu",
          "--json", scores_file)
    scores = json.loads(scores_file.read_text())
    return {key: scores[key] for key in SCORES}


def train(run: Path, flags: list[object]) -> None:
    """Train one run with `flags`, unless it finished before; an interrupted one starts again from nothing."""
    finished = run / "finished"
    if finished.exists():
        return
    if run.exists():
        shutil.rmtree(run)
    run.parent.mkdir(parents=True, exist_ok=True)
    dcgan("train", *flags, "--quiet", "--sample-every", 0, "--device", "cpu", "--out", run)
    finished.touch()


def train_and_score(run: Path, flags: list[object], reference: Path, num: int) -> dict:
    """Train one run (unless its scores exist) and return its scores, steps and training time."""
    scores_file = run / "eval.json"
    if scores_file.exists():
        return json.loads(scores_file.read_text())
    train(run, flags)
    scores = evaluate(run, reference, num, run / "scores.json")
    with open(run / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    scores.update(steps=int(last["step"]), train_seconds=float(last["wall_time"]))
    scores_file.write_text(json.dumps(scores))
    return scores


def summarise(runs: list[dict]) -> dict:
    """Mean and sd over the seeds of each score and of the training time."""
    return {key: dict(zip(("mean", "sd"), mean_sd([run[key] for run in runs]))) for key in (*SCORES, "train_seconds")}


def markdown(report: dict) -> str:
    """One table: the run started from, as it is, then a row per start, mean ± sd over the seeds."""
    pretrained = report["pretrained"]["scores"]
    lines = [f"{report['data']}; recipe `{report['recipe']}`, {report['steps']:,} steps per run; CPU: "
             f"{report['cpu']}; mean ± sd over seeds {', '.join(map(str, report['seeds']))}.", "",
             "| start | FID | KID | precision | recall | minutes |", "| --- | --- | --- | --- | --- | --- |",
             f"| the run started from, not fine-tuned | {pretrained['fid']:.2f} | {pretrained['kid']:.3f} | "
             f"{pretrained['precision']:.3f} | {pretrained['recall']:.3f} | – |"]
    for variant in report["variants"]:
        s = variant["summary"]

        def cell(key: str, digits: int, scale: float = 1.0) -> str:
            return f"{s[key]['mean'] * scale:.{digits}f} ± {s[key]['sd'] * scale:.{digits}f}"
        name = f"`{variant['name']}`" if variant["name"].startswith("--") else variant["name"]
        lines.append(f"| {name} | {cell('fid', 2)} | {cell('kid', 3)} | {cell('precision', 3)} | "
                     f"{cell('recall', 3)} | {cell('train_seconds', 1, 1 / 60)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("digit", "fashion"), default="digit")
    parser.add_argument("--digit", type=int, choices=range(10), default=7, help="with --source digit: the new class")
    parser.add_argument("--fashion", type=Path, default=Path(KNOWN_DATA["fashion"]),
                        help="with --source fashion: Fashion-MNIST's IDX folder")
    parser.add_argument("--images", type=int, default=200, help="images of the new set trained on")
    parser.add_argument("--pretrained", type=Path, help="the run to start from (default: train one first)")
    parser.add_argument("--pretrain-steps", type=int, default=9375, help="steps of the run trained first")
    parser.add_argument("--steps", type=int, default=2000, help="steps of every run on the new set")
    parser.add_argument("--freeze-d", type=int, default=0, metavar="K", help="also fine-tune with D's first K "
                                                                             "blocks frozen (0: not)")
    parser.add_argument("--recipe", default="--preset default", help="`dcgan train` flags of every run")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--num", type=int, default=10000, help="samples scored per run")
    parser.add_argument("--out", type=Path, default=Path("runs/finetune"), help="data and run directories (kept)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    recipe = shlex.split(args.recipe)
    source = f"digit{args.digit}" if args.source == "digit" else "fashion"
    pretrain_data, new, described = prepare_data(args.source, args.digit, args.images, args.fashion,
                                                 args.out / "data" / source)
    study = args.out / f"{source}-{args.images}img-{args.steps}steps"
    pretrained = args.pretrained
    if pretrained is None:
        pretrained = args.out / f"pretrain-{source}-{args.pretrain_steps}steps"
        print(f"the run to start from: {args.pretrain_steps} steps on {pretrain_data}", flush=True)
        train(pretrained, [*recipe, "--data", pretrain_data, "--steps", args.pretrain_steps, "--seed", 0])
    as_it_is = study / "not-fine-tuned.json"  # in the study, not in a --pretrained run, which is left as it is
    study.mkdir(parents=True, exist_ok=True)
    pretrained_scores = (json.loads(as_it_is.read_text()) if as_it_is.exists()
                         else evaluate(pretrained, new, args.num, as_it_is))
    print(f"{'not fine-tuned':28s}: FID {pretrained_scores['fid']:7.2f}", flush=True)
    variants: dict[str, tuple[str, list[object]]] = {"from scratch": ("scratch", []),
                                                     "--init-from": ("init", ["--init-from", pretrained])}
    if args.freeze_d:
        variants[f"--init-from --freeze-d {args.freeze_d}"] = (
            f"init-freeze{args.freeze_d}", ["--init-from", pretrained, "--freeze-d", args.freeze_d])
    scores: dict[str, list[dict]] = {name: [] for name in variants}
    for seed in seeds:  # seed by seed, so that a study stopped early has every start at its first seeds
        for name, (folder, flags) in variants.items():
            result = train_and_score(study / folder / f"seed{seed}",
                                     [*recipe, *flags, "--data", new, "--steps", args.steps, "--seed", seed],
                                     new, args.num)
            scores[name].append(result)
            print(f"{name:28s} seed {seed}: FID {result['fid']:7.2f}  precision {result['precision']:.3f}  "
                  f"recall {result['recall']:.3f}  {result['train_seconds'] / 60:.1f} min", flush=True)
    report = {"cpu": cpu_name(), "data": described, "recipe": shlex.join(recipe), "images": args.images,
              "steps": args.steps, "seeds": seeds, "num_samples": args.num,
              "pretrained": {"run": str(pretrained), "scores": pretrained_scores},
              "variants": [{"name": name, "flags": shlex.join(map(str, flags)), "runs": scores[name],
                            "summary": summarise(scores[name])} for name, (_, flags) in variants.items()]}
    table = markdown(report)
    print(table)
    write_report(report, table, json_path=args.json, markdown_path=args.markdown)


if __name__ == "__main__":
    main()
