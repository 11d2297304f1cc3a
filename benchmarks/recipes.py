"""Recipes x seeds x data sets, each trained on the same number of images (or for the same minutes)
and scored by `dcgan evaluate`; JSON plus a markdown table of mean ± sd over the seeds.

    python benchmarks/recipes.py --data mnist --data fashion --seeds 0,1,2 --images 120000 \\
        --recipe "tutorial=--preset tutorial" --recipe "default=--preset default" \\
        --json benchmarks/results/recipes.json --markdown docs/results/recipes.md

Data sets: `mnist` (bundled; scored in the bundled classifier's features) and `fashion`
(Fashion-MNIST from Debian's `dataset-fashion-mnist`, /usr/share/datasets/fashion-mnist; scored in
the features of a network `dcgan classifier train` trains on it first, kept in --out). Any other
`--data NAME=PATH` trains and scores on PATH with a classifier trained on it.

A run's budget is `--images` (steps = images / the recipe's batch size: equal work whatever the
machine's load) or `--minutes` (`--time-limit`: equal wall-clock, one run at a time). Finished runs
(their `eval.json`) are kept in --out and not run again, so an interrupted study resumes.
`--jobs N` (with --images only) trains N runs at once, each on cores / N threads, the recipes of
one seed and data set side by side: more images per second on a small CPU, and the runs compared
share the machine's load.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from machine import cpu_name, dcgan, write_report

KNOWN_DATA = {"mnist": "mnist", "fashion": "/usr/share/datasets/fashion-mnist"}
SCORES = ("fid", "kid", "precision", "recall", "class_match", "classes_covered")


def classifier_for(name: str, path: str, out: Path) -> Path | None:
    """The feature network scoring data set NAME: the bundled one for MNIST, else trained once into OUT."""
    if name == "mnist":
        return None
    classifier = out / f"{name}_classifier.pt"
    if not classifier.exists():
        print(f"training the {name} feature network ...", flush=True)
        print(dcgan("classifier", "train", "--data", path, "--out", classifier, "--quiet").strip(), flush=True)
    return classifier


def batch_size_of(flags: list[str]) -> int:
    """The batch size a recipe's flags set (32, every preset's, when they do not)."""
    for i, flag in enumerate(flags):
        if flag == "--batch-size":
            return int(flags[i + 1])
        if flag.startswith("--batch-size="):
            return int(flag.split("=", 1)[1])
    return 32


def train_and_score(run: Path, data: str, flags: list[str], seed: int, budget: list[str],
                    classifier: Path | None, num: int, threads: int | None = None) -> dict:
    """Train one run (unless its scores exist) and return its scores plus its steps and time."""
    scores_file = run / "eval.json"
    if scores_file.exists():
        return json.loads(scores_file.read_text())
    if run.exists():  # an interrupted run: start it again from nothing
        shutil.rmtree(run)
    run.parent.mkdir(parents=True, exist_ok=True)
    dcgan("train", *flags, "--data", data, "--seed", seed, *budget, "--quiet", "--sample-every", 0,
          "--device", "cpu", "--out", run, threads=threads)
    evaluate = ["evaluate", "--checkpoint", run, "--num", num, "--reference", data, "--json", run / "scores.json"]
    if classifier is not None:
        evaluate += ["--classifier", classifier]
    dcgan(*evaluate, threads=threads)
    scores = json.loads((run / "scores.json").read_text())
    with open(run / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    scores.update(steps=int(last["step"]), train_seconds=float(last["wall_time"]),
                  images_per_s=float(last["images_per_s"]), flags=flags, seed=seed)
    scores_file.write_text(json.dumps(scores))
    return scores


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: list[dict]) -> dict:
    """Mean and sd over the seeds of each score."""
    summary = {}
    for key in (*SCORES, "steps", "train_seconds", "images_per_s"):
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            summary[key] = dict(zip(("mean", "sd"), mean_sd(values)))
    return summary


def markdown(results: list[dict], cpu: str, budget: str) -> str:
    """One table per data set: a row per recipe, mean ± sd over its seeds."""
    lines = [f"Budget: {budget} per run; CPU: {cpu}; mean ± sd over the seeds named.", ""]
    for data in dict.fromkeys(r["data"] for r in results):
        lines += [f"### {data}", "",
                  "| recipe | seeds | FID | KID | precision | recall | requested class | minutes |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in (r for r in results if r["data"] == data):
            s = r["summary"]

            def cell(key: str, digits: int, scale: float = 1.0) -> str:
                if key not in s:
                    return "–"
                return f"{s[key]['mean'] * scale:.{digits}f} ± {s[key]['sd'] * scale:.{digits}f}"
            lines.append(f"| `{r['recipe']}` | {len(r['seeds'])} | {cell('fid', 2)} | {cell('kid', 3)} | "
                         f"{cell('precision', 3)} | {cell('recall', 3)} | {cell('class_match', 3)} | "
                         f"{cell('train_seconds', 1, 1 / 60)} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, metavar="NAME[=PATH]",
                        help=f"data set: {', '.join(KNOWN_DATA)} or NAME=PATH (repeat)")
    parser.add_argument("--recipe", action="append", required=True, metavar="NAME=FLAGS",
                        help="a name and the `dcgan train` flags of a recipe (repeat)")
    parser.add_argument("--seeds", default="0,1,2")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--images", type=int, help="training images per run (steps = images / batch size)")
    budget.add_argument("--minutes", type=float, help="training minutes per run (--time-limit)")
    parser.add_argument("--num", type=int, default=10000, help="samples scored per run")
    parser.add_argument("--out", type=Path, default=Path("runs/recipes"), help="run directories (kept)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (with --images)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    recipes = {name: shlex.split(flags) for name, flags in (r.split("=", 1) for r in args.recipe)}
    data_sets = {}
    for spec in args.data:
        name, _, path = spec.partition("=")
        if not path and name not in KNOWN_DATA:
            parser.error(f"--data {spec}: not one of {', '.join(KNOWN_DATA)}; give NAME=PATH")
        data_sets[name] = path or KNOWN_DATA[name]
    if args.jobs < 1 or (args.jobs > 1 and not args.images):
        parser.error("--jobs: a whole number of runs at once, at least 1; more than 1 needs --images "
                     "(runs sharing the CPU get less of it per minute)")
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
    tag = f"{args.images}img" if args.images else f"{args.minutes:g}min"
    budget_text = f"{args.images:,} training images" if args.images else f"{args.minutes:g} minutes of training"
    if args.jobs > 1:
        budget_text += f" ({args.jobs} runs at once, {threads} thread(s) each)"
    cpu = cpu_name()
    classifiers = {name: classifier_for(name, path, args.out) for name, path in data_sets.items()}

    def one_run(data_name: str, recipe: str, seed: int) -> dict:
        flags = recipes[recipe]
        if args.images:
            run_budget = ["--steps", args.images // batch_size_of(flags)]
        else:
            run_budget = ["--time-limit", args.minutes]
        run = args.out / tag / data_name / recipe / f"seed{seed}"
        scores = train_and_score(run, data_sets[data_name], flags, seed, run_budget, classifiers[data_name],
                                 args.num, threads)
        print(f"{data_name:8s} {recipe:24s} seed {seed}: FID {scores['fid']:6.2f}  "
              f"precision {scores['precision']:.3f}  recall {scores['recall']:.3f}  "
              f"{scores['train_seconds'] / 60:.1f} min", flush=True)
        return scores

    # seed by seed, so that a study stopped early has every recipe at its first seeds
    keys = [(data_name, recipe, seed) for seed in seeds for data_name in data_sets for recipe in recipes]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        scores = dict(zip(keys, pool.map(lambda key: one_run(*key), keys)))
    results = []
    for data_name in data_sets:
        for recipe, flags in recipes.items():
            runs = [scores[data_name, recipe, seed] for seed in seeds]
            results.append({"data": data_name, "recipe": recipe, "flags": shlex.join(flags), "seeds": seeds,
                            "runs": runs, "summary": summarise(runs)})
    report = {"cpu": cpu, "budget": budget_text, "num_samples": args.num, "results": results}
    table = markdown(results, cpu, budget_text)
    print(table)
    write_report(report, table, json_path=args.json, markdown_path=args.markdown)


if __name__ == "__main__":
    main()
