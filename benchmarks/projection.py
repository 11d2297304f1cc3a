"""Projection of held-out MNIST digits into a trained generator: how close `dcgan project` comes, against
a random sample of the same generator (the floor a projection must beat).

    python benchmarks/projection.py --checkpoint runs/default-1ep --num 200 \\
        --json benchmarks/results/projection_default_cpu.json --sheet docs/img/projection.png

For each of `--num` digits of the TEST split of `--data` (`mnist`: the bundled IDX files, or an IDX
folder such as ../shared/data/mnist), a seeded random choice, the projection of `dcgan project`
(`--steps`, the same starts and distance) gives a reconstruction, scored by: the pixel mean squared
error (images in [-1, 1]), the perceptual distance (1 - cosine similarity of the projection's
features: the checkpoint's discriminator), and whether the bundled MNIST classifier gives the
reconstruction the digit's class. Each digit's random sample (G of a seeded random z, with the
labels the generator draws itself) is scored in the same way. Mean and standard deviation over the
digits; the time of a projection, the CPU and its threads. A class-conditional generator also
reports how often the class the projection chose is the digit's.

`--sheet PNG` writes the first `--columns` digits over their reconstructions (enlarged).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from dcgan.config import PROJECTION_STEPS
from dcgan.data import load_data
from dcgan.evaluation.classifier import embed, load_classifier
from dcgan.images import grid_image, to_uint8
from dcgan.networks import channels_of
from dcgan.ops import seeded_noise
from dcgan.projection import STARTS, classes_to_try, display_scale, distances, perceptual_network, project
from dcgan.sampling import load_generator
from machine import cpu_name


def spread(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation of `values`."""
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def scores(pixel: list[float], perceptual: list[float], agreement: list[float]) -> dict[str, dict[str, float]]:
    """One set of images' scores against the digits, each as mean and sd."""
    return {"pixel_mse": spread(pixel), "perceptual": spread(perceptual),
            "distance": spread([p + q for p, q in zip(pixel, perceptual)]), "class_agreement": spread(agreement)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a run directory or checkpoint of 28x28 grey digits")
    parser.add_argument("--data", default="mnist", help="mnist (bundled) or an IDX folder; its test split is used")
    parser.add_argument("--num", type=int, default=200, help="test digits projected (default 200)")
    parser.add_argument("--steps", type=int, default=PROJECTION_STEPS, help="steps of each projection")
    parser.add_argument("--seed", type=int, default=0, help="the digits' choice, the starts and the random samples")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="write the results here (a new file)")
    parser.add_argument("--sheet", type=Path, help="a PNG of the first --columns digits over their reconstructions")
    parser.add_argument("--columns", type=int, default=10, help="digits on the sheet (default 10)")
    args = parser.parse_args()
    for path in (args.json, args.sheet):
        if path is not None and path.exists():
            parser.error(f"{path} exists: choose a new file")
    device = torch.device(args.device)
    generator, config = load_generator(args.checkpoint, device)
    classifier = load_classifier(None, device=device)
    shape = (channels_of(config), config.image_size, config.image_size)
    if shape != classifier.info.input_shape:
        sys.exit(f"{args.checkpoint} makes {'x'.join(map(str, shape))} pictures; the bundled classifier reads "
                 f"{classifier.info.describe_shape()} digits")
    network = perceptual_network(args.checkpoint, device)
    data = load_data(args.data, split="test", channels=shape[0], image_size=shape[1])
    chosen = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))[:args.num]
    classes = classes_to_try(generator, None, option="label", source=args.checkpoint)
    noise = seeded_noise(len(chosen), generator.latent_dim, args.seed + 1)
    sample_labels = generator.sample_labels(len(chosen), seed=args.seed + 1)

    reconstructions, samples, projected, random = [], [], ([], []), ([], [])
    chosen_labels, seconds = [], 0.0
    for k, index in enumerate(tqdm(chosen.tolist(), desc="projecting", unit="digit")):
        picture = data.images[index]
        started = time.perf_counter()
        result = project(generator, picture, classes=classes, steps=args.steps, seed=args.seed + k, network=network,
                         device=device)
        seconds += time.perf_counter() - started
        reconstructions.append(result.reconstruction.reshape(shape[1], shape[2], shape[0]))
        projected[0].append(result.pixel_error)
        projected[1].append(result.perceptual_error)
        chosen_labels.append(result.label)
        with torch.no_grad():
            labels = None if sample_labels is None else sample_labels[k:k + 1].to(device)
            sample = generator(noise[k:k + 1].to(device), labels)
            pixel, perceptual = distances(sample, picture.to(device).float()[None] / 127.5 - 1, network)
        samples.append(to_uint8(sample)[0])
        random[0].append(float(pixel[0]))
        random[1].append(float(perceptual[0]))

    digits = data.labels[chosen].numpy()

    def agreement(images: list[np.ndarray]) -> list[float]:
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
        predicted = embed(classifier, batch).probabilities.argmax(1).numpy()
        return (predicted == digits).astype(float).tolist()

    results = {
        "benchmark": "projection", "checkpoint": str(args.checkpoint), "data": args.data, "split": "test",
        "digits": len(chosen), "steps": args.steps, "starts": STARTS, "seed": args.seed,
        "perceptual_network": None if network is None else network.name,
        "projection": scores(*projected, agreement(reconstructions)),
        "random_sample": scores(*random, agreement(samples)),
        "seconds_per_projection": seconds / len(chosen), "cpu": cpu_name(), "threads": torch.get_num_threads(),
        "device": str(device),
    }
    if generator.label_classes is not None:  # the class the projection chose, against the digit's
        results["projection_class_accuracy"] = float(np.mean(np.array(chosen_labels) == digits))
    for name in ("projection", "random_sample"):
        print(f"{name:>13}: " + ", ".join(f"{key} {value['mean']:.4f} ± {value['sd']:.4f}"
                                          for key, value in results[name].items()))
    print(f"{results['seconds_per_projection']:.2f} s a projection ({results['threads']} threads, {results['cpu']})")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.sheet is not None:
        count = min(args.columns, len(chosen))
        originals = data.images[chosen[:count]].permute(0, 2, 3, 1).numpy()
        sheet = grid_image(np.concatenate([originals, np.stack(reconstructions[:count])]), columns=count)
        scale = display_scale(shape[1])
        sheet.resize((sheet.width * scale, sheet.height * scale), Image.Resampling.NEAREST).save(args.sheet)


if __name__ == "__main__":
    main()
