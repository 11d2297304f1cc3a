"""Truncation's trade of variety for fidelity: precision, recall and FID of checkpoints sampled at
several truncations psi (noise z = psi * z, z ~ N(0, I)), mean ± sd over the checkpoints of each
preset; a markdown table, a plot, JSON, and a sheet of the same noise at each psi.

    # one command: three seeds of two presets at the target's budget, trained two at a time, then scored
    python benchmarks/truncation.py --train default --train conditional --seeds 0,1,2 --images 300000 \\
        --jobs 2 --out runs/truncation --json benchmarks/results/truncation_300k.json \\
        --markdown docs/results/truncation.md --plot docs/img/truncation-scores.png --sheet docs/img/truncation.png

    # or runs that exist (a run directory or a checkpoint file each)
    python benchmarks/truncation.py --checkpoint runs/a --checkpoint runs/b --json truncation.json

Each checkpoint is scored by the project's evaluator (evaluation/scoring.py, what `dcgan evaluate`
runs): --num samples against the MNIST test split, in the bundled feature network's features,
drawn from the same seed, so the same noise, at every psi (the comparison is paired); a
conditional model is asked for every class in turn. A checkpoint counts for the preset its run
was trained with. `--train PRESET` runs `dcgan train --preset PRESET --seed S --steps IMAGES /
batch size` into OUT/PRESET/seedS; a run with a checkpoint is resumed to its goal (a finished one
is left as it is), so an interrupted study picks up where it stopped. `--sheet` draws the first
checkpoint: a row per psi, the same noise in every row.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from dcgan.config import PRESETS
from dcgan.errors import UserError
from dcgan.evaluation.classifier import load_classifier
from dcgan.evaluation.scoring import EvalSettings, check_samples, evaluate, reference_data, reference_features
from dcgan.images import grid_image
from dcgan.sampling import check_truncation, class_labels, generate, load_generator, truncated
from machine import cpu_name, dcgan

TRUNCATIONS = (1.0, 0.8, 0.6, 0.4)
SCORES = ("fid", "kid", "precision", "recall", "class_match")
SHEET_SCALE = 2  # the sheet's pixels per image pixel
LABEL_WIDTH = 44  # pixels left of the sheet's rows for their psi


def parse_truncations(text: str) -> list[float]:
    """'1,0.8,0.6' -> [1.0, 0.8, 0.6], each in (0, 1]."""
    try:
        values = [check_truncation(float(part), option="--psi") for part in text.split(",")]
    except (ValueError, UserError) as exc:
        raise argparse.ArgumentTypeError(f"--psi wants numbers in (0, 1] separated by commas, got {text!r} "
                                         f"({exc})") from None
    return list(dict.fromkeys(values))


def train_runs(presets: list[str], seeds: list[int], images: int, out: Path, jobs: int, data: str) -> list[Path]:
    """Train (or finish) a run of each preset and seed on `images` images; their directories, preset by preset."""
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None

    def one(preset: str, seed: int) -> Path:
        run = out / preset / f"seed{seed}"
        steps = images // PRESETS[preset]["batch_size"]
        if (run / "checkpoints" / "last.pt").is_file():
            dcgan("train", "--resume", run, "--steps", steps, "--quiet", threads=threads)
        else:
            if run.exists():  # stopped before its first checkpoint: start again
                shutil.rmtree(run)
            run.parent.mkdir(parents=True, exist_ok=True)
            dcgan("train", "--preset", preset, "--data", data, "--seed", seed, "--steps", steps, "--quiet",
                  "--sample-every", 0, "--device", "cpu", "--out", run, threads=threads)
        print(f"trained {run} ({steps:,} steps)", flush=True)
        return run

    keys = [(preset, seed) for seed in seeds for preset in presets]  # seed by seed: every preset at its first seeds
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        runs = dict(zip(keys, pool.map(lambda key: one(*key), keys)))
    return [runs[preset, seed] for preset in presets for seed in seeds]


def score_checkpoints(checkpoints: list[Path], truncations: list[float], *, num: int, seed: int, reference: str,
                      classifier: str | None, device: torch.device) -> list[dict]:
    """Every checkpoint's scores at every truncation: one row each, with its preset."""
    network = load_classifier(classifier, device=device)
    data = reference_data(reference, network.info, split="test")
    features = reference_features(network, data, description=f"{reference} (test)")
    rows = []
    for checkpoint in checkpoints:
        generator, config = load_generator(checkpoint, device)
        requested = class_labels(generator, num, seed=seed)
        for psi in truncations:
            images = generate(truncated(generator, psi), num, seed=seed, device=device, labels=requested)
            samples = check_samples(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), network.info,
                                    f"--checkpoint {checkpoint}")
            result = evaluate(network, samples, features, settings=EvalSettings(seed=seed),
                              samples=f"{checkpoint} (seed {seed}, truncation {psi:g})", requested=requested)
            scores = result.to_dict()
            rows.append({"checkpoint": str(checkpoint), "preset": config.preset, "truncation": psi,
                         **{key: scores[key] for key in SCORES}})
            print(f"{checkpoint} psi {psi:g}: FID {scores['fid']:.2f}  precision {scores['precision']:.3f}  "
                  f"recall {scores['recall']:.3f}", flush=True)
    return rows


def mean_sd(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarise(rows: list[dict]) -> list[dict]:
    """Mean ± sd over the checkpoints of each preset, at each truncation."""
    summary = []
    for preset in dict.fromkeys(row["preset"] for row in rows):
        for psi in dict.fromkeys(row["truncation"] for row in rows):
            group = [row for row in rows if row["preset"] == preset and row["truncation"] == psi]
            entry: dict = {"preset": preset, "truncation": psi, "checkpoints": len(group)}
            for key in SCORES:
                values = [row[key] for row in group if row[key] is not None]
                if values:
                    entry[key] = mean_sd(values)
            summary.append(entry)
    return summary


def markdown(summary: list[dict], cpu: str, num: int) -> str:
    """A table: a row per preset and truncation, mean ± sd over its checkpoints."""
    lines = [f"{num:,} samples per checkpoint and truncation, the same noise at each; CPU: {cpu}; "
             "mean ± sd over the checkpoints of each preset.", "",
             "| preset | truncation | checkpoints | FID | precision | recall | requested class |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for entry in summary:
        def cell(key: str, digits: int) -> str:
            return f"{entry[key]['mean']:.{digits}f} ± {entry[key]['sd']:.{digits}f}" if key in entry else "–"
        lines.append(f"| `{entry['preset']}` | {entry['truncation']:g} | {entry['checkpoints']} | {cell('fid', 2)} | "
                     f"{cell('precision', 3)} | {cell('recall', 3)} | {cell('class_match', 3)} |")
    return "\n".join(lines)


def plot(summary: list[dict], path: Path, cpu: str) -> None:
    """Precision and recall against psi (left), FID against psi (right): a line per preset, ± sd as bars."""
    from dcgan.plots import pyplot

    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for index, preset in enumerate(dict.fromkeys(entry["preset"] for entry in summary)):
        entries = [entry for entry in summary if entry["preset"] == preset]
        psi = [entry["truncation"] for entry in entries]
        colour = f"C{index}"
        for key, style in (("precision", "o-"), ("recall", "s--")):
            left.errorbar(psi, [e[key]["mean"] for e in entries], yerr=[e[key]["sd"] for e in entries],
                          fmt=style, color=colour, capsize=3, label=f"{preset}: {key}")
        right.errorbar(psi, [e["fid"]["mean"] for e in entries], yerr=[e["fid"]["sd"] for e in entries],
                       fmt="o-", color=colour, capsize=3, label=preset)
    for axis, name in ((left, "precision, recall"), (right, "FID (lower is better)")):
        axis.set_xlabel("truncation psi (1: none)")
        axis.set_ylabel(name)
        axis.invert_xaxis()  # from no truncation to the strongest
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"Truncation: variety for fidelity ({cpu})", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def sheet(checkpoint: Path, truncations: list[float], path: Path, *, columns: int, seed: int,
          device: torch.device) -> None:
    """A PNG of `columns` samples of `checkpoint` per row, a row per truncation, the same noise (and labels) in
    every row, each row named by its psi."""
    generator, config = load_generator(checkpoint, device)
    labels = class_labels(generator, columns, seed=seed)  # every class in turn; others draw theirs from the seed
    rows = [generate(truncated(generator, psi), columns, seed=seed, device=device, labels=labels)
            for psi in truncations]
    grid = grid_image(np.concatenate(rows), columns=columns)
    grid = grid.resize((grid.width * SHEET_SCALE, grid.height * SHEET_SCALE), Image.Resampling.NEAREST)
    picture = Image.new(grid.mode, (LABEL_WIDTH + grid.width, grid.height))
    picture.paste(grid, (LABEL_WIDTH, 0))
    draw = ImageDraw.Draw(picture)
    row_height = (config.image_size + 2) * SHEET_SCALE  # grid_image pads each image by 2 pixels
    white = 255 if picture.mode == "L" else (255, 255, 255)
    for index, psi in enumerate(truncations):
        draw.text((4, 2 * SHEET_SCALE + index * row_height + row_height // 2 - 6), f"{psi:g}", fill=white)
    picture.save(path)


def write_new(path: Path, write) -> None:
    """Call `write(path)` after making its folder; an existing file is never overwritten."""
    if path.exists():
        sys.exit(f"{path} exists: name a new file")
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", default=[], type=Path, metavar="RUN",
                        help="a run directory or checkpoint file to score (repeat)")
    parser.add_argument("--train", action="append", default=[], choices=sorted(PRESETS), metavar="PRESET",
                        help="train --seeds runs of this preset into --out first, then score them (repeat)")
    parser.add_argument("--seeds", default="0,1,2", help="with --train (default 0,1,2)")
    parser.add_argument("--images", type=int, help="with --train: training images per run (steps = images / the "
                                                   "preset's batch size)")
    parser.add_argument("--jobs", type=int, default=1, help="with --train: runs trained at once, each on "
                                                           "cores / jobs threads (default 1)")
    parser.add_argument("--out", type=Path, default=Path("runs/truncation"), help="with --train: the runs (kept)")
    parser.add_argument("--data", default="mnist", help="with --train: the training data, as `dcgan train --data` "
                                                        "(default: the bundled MNIST)")
    parser.add_argument("--psi", type=parse_truncations, default=list(TRUNCATIONS),
                        help="truncations, comma-separated (default 1,0.8,0.6,0.4)")
    parser.add_argument("--num", type=int, default=10000, help="samples per checkpoint and truncation")
    parser.add_argument("--seed", type=int, default=0, help="noise seed of the samples and of KID's subsets")
    parser.add_argument("--reference", default="mnist", help="reference set, as `dcgan evaluate --reference`")
    parser.add_argument("--classifier", help="feature network, as `dcgan evaluate --classifier` (default: bundled)")
    parser.add_argument("--device", default="cpu", help="where the samples are drawn and scored (default cpu)")
    parser.add_argument("--json", type=Path, help="the scores and their summary as JSON (a new file)")
    parser.add_argument("--markdown", type=Path, help="the table (a new file; it is printed in any case)")
    parser.add_argument("--plot", type=Path, help="precision, recall and FID against psi as a PNG (a new file)")
    parser.add_argument("--sheet", type=Path, help="a PNG grid of the first checkpoint's samples, a row per psi")
    parser.add_argument("--sheet-columns", type=int, default=10, help="samples per row of --sheet (default 10)")
    args = parser.parse_args()
    if not args.checkpoint and not args.train:
        parser.error("name checkpoints (--checkpoint RUN) or presets to train (--train PRESET)")
    if args.train and not args.images:
        parser.error("--train needs --images, the training images per run")
    if args.jobs < 1:
        parser.error("--jobs: at least 1")
    for path in (args.json, args.markdown, args.plot, args.sheet):
        if path is not None and path.exists():
            parser.error(f"{path} exists: name a new file")
    device = torch.device(args.device)
    checkpoints = list(args.checkpoint)
    if args.train:
        checkpoints += train_runs(args.train, [int(s) for s in args.seeds.split(",")], args.images, args.out,
                                  args.jobs, args.data)
    cpu = cpu_name()
    try:
        if args.sheet:
            write_new(args.sheet, lambda path: sheet(checkpoints[0], args.psi, path, columns=args.sheet_columns,
                                                     seed=args.seed, device=device))
        rows = score_checkpoints(checkpoints, args.psi, num=args.num, seed=args.seed, reference=args.reference,
                                 classifier=args.classifier, device=device)
    except UserError as exc:
        sys.exit(f"truncation.py: {exc}")
    summary = summarise(rows)
    table = markdown(summary, cpu, args.num)
    print(table)
    if args.markdown:
        write_new(args.markdown, lambda path: path.write_text(table + "\n"))
    if args.plot:
        write_new(args.plot, lambda path: plot(summary, path, cpu))
    if args.json:
        report = {"cpu": cpu, "num_samples": args.num, "seed": args.seed, "reference": f"{args.reference} (test)",
                  "classifier": args.classifier or "bundled", "truncations": args.psi,
                  "images_per_run": args.images if args.train else None, "runs": rows, "summary": summary}
        write_new(args.json, lambda path: path.write_text(json.dumps(report, indent=1) + "\n"))


if __name__ == "__main__":
    main()
