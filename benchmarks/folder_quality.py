"""Quality on folders of your own colour pictures: recipes trained for the same minutes, scored in a
feature network trained on each folder.

    python benchmarks/folder_quality.py --data /tmp/colour_sets/emoji-flat --data /tmp/colour_sets/clipart-flat \\
        --minutes 5 --seeds 0,1,2 --jobs 2 --subset 250,500,1000 --eval-every 50 \\
        --recipe "dcgan=--preset dcgan" --recipe "dcgan+ada=--preset dcgan --ada-target 0.6" \\
        --json benchmarks/results/colour_quality.json --markdown docs/results/colour_quality.md \\
        --plot docs/img/colour-quality-fid.png --grids docs/img

Each `--data` folder may be flat or in class subfolders. Its feature network is trained first, once
per image size the recipes use (`dcgan classifier train --features contrastive` by default: features
learnt without labels, so a flat folder and one in class subfolders are scored in the same kind of
features; `--features classes` needs class subfolders). The network is trained on the folder's real
pictures, never on generated ones, and one network serves every subset, recipe and seed of its size,
so their scores can be compared. `--keep-features DIR` keeps them in DIR, and a later study with the
same folders, sizes and feature options reuses them instead of training them again (minutes each):
its scores can then be compared with the first study's.

`--subset N[,N...]` trains on N pictures of the folder, a seeded random choice (`--subset-seed`) that
is the same for every recipe and seed, written as a temporary flat folder. Every run, on a subset or
not, is scored against the WHOLE folder: a model trained on 250 pictures is judged on how well it
covers the whole set. Beside the runs, each subset's own pictures are scored the same way: what a
generator that had learnt its training pictures exactly would reach.

Every run trains for `--minutes` of training time (`dcgan train --time-limit`), then `dcgan evaluate`
scores `--num` samples of its last checkpoint. `--jobs N` trains N runs at once, each on
cores / N threads: the recipes of one seed side by side, sharing the machine's load.

`--score-at STEPS[,STEPS...]` also keeps each run's checkpoints at those steps and scores them as its
last one (a row each, its `steps` the checkpoint's): one run of 2,000 steps gives the scores of one of
1,000 steps too, since nothing in training depends on the run's length.

`--eval-every STEPS` also scores 500 samples during training (`dcgan train --eval-every`). Those
scores are against the whole folder too (`--eval-reference`), in the same feature network; they give each run's FID against training minutes (`--plot`) and its "second half rise":
the FID at its end minus the lowest FID over the second half of its training time (above 0: the run
got worse before it ended).

Output: every run's row (JSON), a markdown table of mean ± sd over the seeds per set, subset and
recipe (`--markdown`), and the last sample grid of each run of the first seed, copied to `--grids`
as `<set>-<subset>-<recipe>-grid.png` (the subset `all` for the whole folder).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from machine import cpu_name, dcgan

from dcgan.data import IMAGE_EXTENSIONS, load_data
from dcgan.plots import pyplot, read_metrics

SCORES = ("fid", "kid", "precision", "recall")
EVAL_SAMPLES = 500  # samples scored at each evaluation during training


@dataclass(frozen=True)
class Run:
    """One training run of the study."""

    set_name: str
    subset: int | None  # pictures trained on; None: the whole folder
    recipe: str
    seed: int

    @property
    def subset_name(self) -> str:
        """The subset as file names and tables write it."""
        return "all" if self.subset is None else str(self.subset)


def flag_value(flags: list[str], name: str) -> str | None:
    """The value a recipe's flags give option NAME (the last one wins, as in argparse), or None."""
    value = None
    for i, flag in enumerate(flags):
        if flag == name and i + 1 < len(flags):
            value = flags[i + 1]
        elif flag.startswith(name + "="):
            value = flag.split("=", 1)[1]
    return value


def pictures_in(folder: Path) -> list[Path]:
    """The pictures of a folder, flat or in class subfolders, in sorted order (hidden files skipped)."""
    return sorted(path for path in folder.rglob("*")
                  if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
                  and not any(part.startswith(".") for part in path.relative_to(folder).parts))


def write_subset(folder: Path, size: int, seed: int, out: Path) -> Path:
    """Copy a seeded random choice of SIZE pictures of FOLDER into the new flat folder OUT."""
    pictures = pictures_in(folder)
    chosen = sorted(random.Random(seed).sample(pictures, size))
    out.mkdir(parents=True)
    for index, picture in enumerate(chosen):  # the index keeps names unique once the class folders are gone
        shutil.copy(picture, out / f"{index:05d}-{'-'.join(picture.relative_to(folder).parts)}")
    return out


def train_features(folder: Path, image_size: int, features: str, epochs: int | None, out: Path) -> tuple[Path, str]:
    """Train the feature network of FOLDER at IMAGE_SIZE into OUT; returns it and its report line.

    Where OUT and its report (OUT with `.txt`) exist already (`--keep-features`), they are reused.
    """
    kept_report = out.with_suffix(".txt")
    if out.is_file() and kept_report.is_file():
        report = kept_report.read_text().strip()
        print(f"feature network of {folder.name} at {image_size}x{image_size}, kept in {out}: {report}", flush=True)
        return out, report
    command = ["classifier", "train", "--data", folder, "--image-size", image_size, "--channels", 3,
               "--out", out, "--quiet", *(["--epochs", epochs] if epochs else [])]
    if "--features" in dcgan("classifier", "train", "--help"):
        command += ["--features", features]
    elif features != "classes":
        sys.exit(f"folder_quality.py: error: --features {features}: this dcgan's `classifier train` has no "
                 f"--features option (it trains on classes only); use --features classes")
    report = dcgan(*command).strip().splitlines()[-1]
    kept_report.write_text(report + "\n")
    print(f"feature network of {folder.name} at {image_size}x{image_size}: {report}", flush=True)
    return out, report


def score_real(pictures: Path, reference: Path, image_size: int, classifier: Path, tmp: Path) -> dict:
    """Score a folder's real pictures against REFERENCE, as a run's samples are scored."""
    data = load_data(str(pictures), channels=3, image_size=image_size)
    samples = tmp / f"real-{pictures.name}-{image_size}.npy"
    np.save(samples, data.images.permute(0, 2, 3, 1).numpy())
    scores = json.loads(dcgan("evaluate", "--samples", samples, "--classifier", classifier, "--reference",
                              reference).strip().splitlines()[-1])
    return {key: scores[key] for key in SCORES}


def resized_samples(checkpoint: Path, num: int, seed: int, size: int, threads: int, out: Path) -> Path:
    """NUM samples of CHECKPOINT (noise seed SEED) resized to SIZE x SIZE (bilinear, antialiased), as a uint8 .npy in OUT."""
    tag = checkpoint.stem if checkpoint.is_file() else "last"
    drawn = out / f"samples-{tag}-{num}-{seed}.npy"
    dcgan("generate", "--checkpoint", checkpoint, "--num", num, "--seed", seed, "--format", "npy", "--out", drawn,
          "--device", "cpu", threads=threads)
    array = np.load(drawn)
    images = torch.from_numpy(array[..., None] if array.ndim == 3 else array).permute(0, 3, 1, 2).float()  # (N, C, H, W)
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    out = out / f"samples-{tag}-{num}-{seed}-{size}px.npy"
    np.save(out, images.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return out


def checkpoint_plan(steps: list[int], run_steps: int | None) -> tuple[int, int]:
    """`--checkpoint-every` and `--keep-checkpoints` that keep a checkpoint at each of STEPS in a run of RUN_STEPS."""
    every = math.gcd(*steps)
    return every, max(*steps, run_steps or 0) // every + 1


def fid_curve(metrics: list[dict]) -> list[tuple[float, float]]:
    """(training minutes, FID) of each evaluation during a run, from its metrics.csv rows."""
    return [(row["wall_time"] / 60, row["fid"]) for row in metrics
            if math.isfinite(row.get("fid", math.nan))]


def second_half_rise(curve: list[tuple[float, float]]) -> float | None:
    """The FID at the run's end minus the lowest FID over the second half of its training time."""
    if not curve:
        return None
    half = curve[-1][0] / 2
    return curve[-1][1] - min(fid for minutes, fid in curve if minutes >= half)


def final_ada_p(metrics: list[dict]) -> float | None:
    """The adaptive augmentation's probability p at a run's end; None for a run without it."""
    p = metrics[-1].get("ada_p", math.nan) if metrics else math.nan
    return p if math.isfinite(p) else None


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def cell(values: list[float | None], digits: int) -> str:
    """`mean ± sd` of the values, or a dash when there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    mean, sd = mean_sd(values)
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def row_group(row: dict) -> tuple:
    """The seeds of one table row share this: subset, recipe and (for a `--score-at` checkpoint) its step."""
    return row["subset"], row["recipe"], row.get("kept_step")


def markdown(rows: list[dict], floors: list[dict], header: list[str]) -> str:
    """One table per set: a row per (subset, recipe), mean ± sd over its seeds, and each subset's real pictures."""
    lines = [*header, ""]
    for set_name in dict.fromkeys(row["set"] for row in rows):
        lines += [f"### {set_name}", "",
                  "| subset | recipe | seeds | steps | FID | KID | precision | recall | second-half FID rise |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        in_set = [row for row in rows if row["set"] == set_name]
        for group in dict.fromkeys(row_group(row) for row in in_set):
            runs = [row for row in in_set if row_group(row) == group]
            subset, recipe, kept_step = group
            name = f"`{recipe}`" + (f" at step {kept_step}" if kept_step else "")
            lines.append(f"| {subset or 'all'} | {name} | {len(runs)} | {cell([r['steps'] for r in runs], 0)} | "
                         f"{cell([r['fid'] for r in runs], 3)} | {cell([r['kid'] for r in runs], 4)} | "
                         f"{cell([r['precision'] for r in runs], 3)} | {cell([r['recall'] for r in runs], 3)} | "
                         f"{cell([r['second_half_rise'] for r in runs], 3)} |")
        for floor in (floor for floor in floors if floor["set"] == set_name):
            lines.append(f"| {floor['subset']} | its own real pictures ({floor['image_size']}px) | – | – | "
                         f"{floor['fid']:.3f} | {floor['kid']:.4f} | {floor['precision']:.3f} | "
                         f"{floor['recall']:.3f} | – |")
        lines.append("")
    return "\n".join(lines)


def plot_curves(rows: list[dict], path: Path) -> None:
    """FID against training minutes, a panel per (set, subset): per recipe the mean over seeds, thin lines per seed."""
    plt = pyplot()
    panels = list(dict.fromkeys((row["set"], row["subset"]) for row in rows))
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.5 * len(panels)), squeeze=False)
    for ax, (set_name, subset) in zip(axes[:, 0], panels):
        recipes = dict.fromkeys(row["recipe"] for row in rows if (row["set"], row["subset"]) == (set_name, subset))
        for colour, recipe in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"] * len(recipes), recipes):
            curves = [row["fid_curve"] for row in rows if (row["set"], row["subset"], row["recipe"])
                      == (set_name, subset, recipe) and row["fid_curve"]]
            if not curves:  # no run of the recipe could be scored (its generator was not finite)
                continue
            label = f"{recipe} ({len(curves)} seeds)"
            start, end = max(c[0][0] for c in curves), min(c[-1][0] for c in curves)
            if end > start:  # the mean over the minutes every seed's curve covers
                minutes = np.linspace(start, end, 50)
                mean = np.mean([np.interp(minutes, *zip(*curve)) for curve in curves], axis=0)
                ax.plot(minutes, mean, color=colour, linewidth=2, label=label)
                label = None
            for curve in curves:
                ax.plot(*zip(*curve), color=colour, linewidth=0.6, alpha=0.5, marker=".", markersize=4, label=label)
                label = None
        ax.set_title(f"{set_name}, {subset or 'all'} pictures")
        ax.set_xlabel("training minutes")
        ax.set_ylabel(f"FID ({EVAL_SAMPLES} samples, whole set)")
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args() -> argparse.Namespace:
    """The command line, checked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, type=Path, metavar="FOLDER",
                        help="a folder of pictures, flat or in class subfolders (repeat)")
    parser.add_argument("--recipe", action="append", required=True, metavar="NAME=FLAGS",
                        help="a name and the `dcgan train` flags of a recipe (repeat)")
    parser.add_argument("--minutes", type=float, default=5.0, help="training minutes per run (--time-limit)")
    parser.add_argument("--image-size", type=int, default=64, help="of recipes whose flags set none")
    parser.add_argument("--score-size", type=int,
                        help="score every run at this size: its samples resized (bilinear, antialiased) to it, in "
                             "one feature network per set, so recipes of different image sizes compare "
                             "(default: each run at its own size, in a network of that size)")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--subset", help="N[,N...]: also train on N pictures of each folder (not the whole)")
    parser.add_argument("--subset-seed", type=int, default=0, help="seed of the subsets' choice")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each on cores / jobs threads")
    parser.add_argument("--eval-every", type=int, default=0, help="steps between FID evaluations during training")
    parser.add_argument("--score-at", metavar="STEPS[,STEPS...]",
                        help="also score each run's checkpoints at these steps (a row each)")
    parser.add_argument("--num", type=int, default=2000, help="samples scored per run")
    parser.add_argument("--features", choices=("contrastive", "classes", "auto"), default="contrastive",
                        help="what the feature network learns (`dcgan classifier train --features`)")
    parser.add_argument("--classifier-epochs", type=int,
                        help="epochs of the feature network (default: `dcgan classifier train`'s)")
    parser.add_argument("--keep-features", type=Path, metavar="DIR",
                        help="keep the feature networks in DIR, and reuse those a study with the same folder "
                             "name, size, --features and --classifier-epochs left there")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--plot", type=Path, help="PNG of FID against training minutes (needs --eval-every)")
    parser.add_argument("--grids", type=Path)
    args = parser.parse_args()
    for folder in args.data:
        if not folder.is_dir():
            parser.error(f"--data {folder}: not a folder")
    if len({folder.name for folder in args.data}) < len(args.data):
        parser.error("--data: two folders of the same name (their outputs would share names)")
    if any("=" not in recipe for recipe in args.recipe):
        parser.error("--recipe: NAME=FLAGS, e.g. 'dcgan=--preset dcgan'")
    args.recipes = {name: shlex.split(flags) for name, flags in (r.split("=", 1) for r in args.recipe)}
    try:
        args.seed_list = [int(s) for s in args.seeds.split(",")]
        args.subsets = [int(n) for n in args.subset.split(",")] if args.subset else [None]
    except ValueError:
        parser.error(f"--seeds {args.seeds} / --subset {args.subset}: whole numbers separated by commas")
    for folder in args.data:
        count = len(pictures_in(folder))
        for size in args.subsets:
            if size is not None and not 2 <= size <= count:
                parser.error(f"--subset {size}: from 2 to the {count} pictures of {folder}")
    try:
        args.score_steps = sorted({int(s) for s in args.score_at.split(",")}) if args.score_at else []
    except ValueError:
        parser.error(f"--score-at {args.score_at}: whole numbers separated by commas")
    if any(step < 1 for step in args.score_steps):
        parser.error(f"--score-at {args.score_at}: steps from 1")
    if args.keep_features and args.keep_features.exists() and not args.keep_features.is_dir():
        parser.error(f"--keep-features {args.keep_features}: not a folder")
    if args.jobs < 1:
        parser.error("--jobs: at least 1")
    if args.eval_every < 0:
        parser.error("--eval-every: 0 (never) or more steps")
    if args.plot and not args.eval_every:
        parser.error("--plot: needs --eval-every (the FID during training)")
    if args.score_size and args.eval_every:
        parser.error("--score-size and --eval-every: the FID during training is taken at each run's own size")
    return args


def main() -> None:
    args = parse_args()
    cores = os.cpu_count() or 1
    threads = max(1, cores // args.jobs)
    sizes = {name: int(flag_value(flags, "--image-size") or args.image_size) for name, flags in args.recipes.items()}
    scored_at = {name: args.score_size or size for name, size in sizes.items()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["DCGAN_CACHE_DIR"] = str(tmp / "cache")  # the subsets' caches go with them
        features, reports, folders, floors = {}, {}, {}, []
        if args.keep_features:
            args.keep_features.mkdir(parents=True, exist_ok=True)
        for folder in args.data:
            for size in dict.fromkeys(scored_at.values()):
                name = f"features-{folder.name}-{size}-{args.features}-{args.classifier_epochs or 'default'}.pt"
                features[folder.name, size], reports[f"{folder.name} {size}px"] = train_features(
                    folder, size, args.features, args.classifier_epochs, (args.keep_features or tmp) / name)
            for subset in args.subsets:
                if subset is None:
                    folders[folder.name, None] = folder
                    continue
                folders[folder.name, subset] = write_subset(folder, subset, args.subset_seed,
                                                            tmp / f"{folder.name}-{subset}")
                for size in dict.fromkeys(scored_at.values()):
                    floor = score_real(folders[folder.name, subset], folder, size, features[folder.name, size], tmp)
                    floors.append({"set": folder.name, "subset": subset, "image_size": size, **floor})
                    print(f"{folder.name} {subset} real pictures at {size}px against the whole folder: "
                          f"FID {floor['fid']:.3f} recall {floor['recall']:.3f}", flush=True)
        wholes = {folder.name: folder for folder in args.data}
        # each finished run's row, one JSON line each, so that a study stopped part way keeps what it measured
        partial = args.json.with_suffix(".partial.jsonl") if args.json else None
        if partial:
            partial.parent.mkdir(parents=True, exist_ok=True)
        partial_lock = threading.Lock()

        def one_run(run: Run) -> list[dict]:
            flags, size = args.recipes[run.recipe], sizes[run.recipe]
            out = tmp / "runs" / f"{run.set_name}-{run.subset_name}-{run.recipe}-{run.seed}"
            classifier = features[run.set_name, scored_at[run.recipe]]
            evaluation = (["--eval-every", args.eval_every, "--eval-classifier", classifier,
                           "--eval-samples", EVAL_SAMPLES, "--eval-reference", wholes[run.set_name]]
                          if args.eval_every else [])
            keeping = []
            if args.score_steps:
                every, keep = checkpoint_plan(args.score_steps, int(flag_value(flags, "--steps") or 0))
                keeping = ["--checkpoint-every", every, "--keep-checkpoints", keep]
            dcgan("train", "--data", folders[run.set_name, run.subset], *flags, "--image-size", size,
                  "--time-limit", args.minutes, "--seed", run.seed, *evaluation, *keeping, "--device", "cpu",
                  "--quiet", "--out", out, threads=threads)
            metrics = read_metrics(out / "metrics.csv")
            last_step = int(metrics[-1]["step"])
            checkpoints = {}
            for step in (step for step in args.score_steps if step != last_step):
                path = out / "checkpoints" / f"step_{step:08d}.pt"
                if path.exists():
                    checkpoints[step] = path
                else:  # the time limit stopped the run before it, or between two checkpoints
                    print(f"{run.set_name} {run.subset_name} {run.recipe} seed {run.seed}: no checkpoint at step "
                          f"{step}, not scored", flush=True)
            checkpoints[last_step] = out
            curve = fid_curve(metrics)
            rows = []
            for step, checkpoint in checkpoints.items():
                if args.score_size:
                    samples = resized_samples(checkpoint, args.num, run.seed, args.score_size, threads, out)
                    source = ["--samples", samples]
                else:
                    source = ["--checkpoint", checkpoint, "--num", args.num, "--seed", run.seed]
                scores = json.loads(dcgan("evaluate", *source, "--classifier", classifier, "--reference",
                                          wholes[run.set_name], "--device", "cpu",
                                          threads=threads).strip().splitlines()[-1])
                minutes = next(row["wall_time"] for row in metrics if int(row["step"]) >= step) / 60
                row = {"set": run.set_name, "subset": run.subset, "recipe": run.recipe, "flags": shlex.join(flags),
                       "image_size": size, "seed": run.seed, "steps": step, "train_minutes": minutes,
                       "kept_step": None if step == last_step else step,
                       **{key: scores[key] for key in SCORES},
                       "second_half_rise": second_half_rise(curve) if step == last_step else None,
                       "ada_p": final_ada_p(metrics) if step == last_step else None,
                       "fid_curve": curve if step == last_step else []}
                rise = "" if row["second_half_rise"] is None else f", second-half rise {row['second_half_rise']:.3f}"
                rise += "" if row["ada_p"] is None else f", p {row['ada_p']:.3f}"
                print(f"{run.set_name} {run.subset_name} {run.recipe} seed {run.seed}: {row['steps']} steps, "
                      f"FID {row['fid']:.3f}, precision {row['precision']:.3f}, recall {row['recall']:.3f}{rise}",
                      flush=True)
                if partial:
                    with partial_lock, partial.open("a") as lines:
                        lines.write(json.dumps(row) + "\n")
                rows.append(row)
            if args.grids and run.seed == args.seed_list[0]:
                args.grids.mkdir(parents=True, exist_ok=True)
                grid = sorted((out / "samples").glob("step_*.png"))[-1]
                shutil.copy(grid, args.grids / f"{run.set_name}-{run.subset_name}-{run.recipe}-grid.png")
            return rows

        # the recipes of one seed side by side, so that the runs compared share the machine's load
        runs = [Run(folder.name, subset, recipe, seed) for folder in args.data for subset in args.subsets
                for seed in args.seed_list for recipe in args.recipes]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            rows = [row for run_rows in pool.map(one_run, runs) for row in run_rows]
    command = shlex.join(["python", *sys.argv])
    header = [f"CPU: {cpu_name()} ({cores} cores); {args.minutes:g} minutes of training per run, {args.jobs} run(s) "
              f"at once on {threads} thread(s) each; {args.num} samples scored against the whole folder"
              f"{f' at {args.score_size}x{args.score_size} (resized)' if args.score_size else ''}, in "
              f"{args.features} features trained on it; mean ± sd over seeds {args.seeds}.", "",
              f"    {command}"]
    table = markdown(rows, floors, header)
    print(table)
    result = {"cpu": cpu_name(), "cores": cores, "command": command, "minutes": args.minutes, "jobs": args.jobs,
              "threads_per_run": threads, "num_samples": args.num, "features": args.features,
              "feature_networks": reports, "real_pictures": floors, "rows": rows}
    for path, text in ((args.json, json.dumps(result, indent=1)), (args.markdown, table)):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text + "\n")
    if args.json:
        args.json.with_suffix(".partial.jsonl").unlink(missing_ok=True)
    if args.plot:
        plot_curves(rows, args.plot)


if __name__ == "__main__":
    main()
