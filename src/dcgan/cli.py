"""The `dcgan` command line, one subcommand per task:

    dcgan train                train a GAN; every run writes a run directory
    dcgan generate             draw samples from a checkpoint: PNG files, one grid or a .npy array
    dcgan interpolate          a looping walk through latent space, as a GIF or a PNG grid
    dcgan project              the latent (and class) whose image is closest to a real picture
    dcgan export               the generator as ONNX or TorchScript
    dcgan demo                 a local web page of a checkpoint's samples and walks
    dcgan evaluate             FID, KID, precision/recall and class statistics of samples
    dcgan data export-png      the IDX data as PNG files in the tutorial's folder layout
    dcgan classifier train     train the feature network of `dcgan evaluate`
    dcgan classifier test      a feature network's accuracy (top-1 retrieval without classes) on held-out data
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .config import (ARCHITECTURES, CONVOLUTIONS, DCGAN_SIZES, DEVICES, LOSSES, LR_SCALINGS, MEMORY_FORMATS, PRECISIONS,
                     PRESETS, UPPER_BOUNDS, TrainConfig)
from .errors import PeerFailed, UserError
from .files import writing
from .host_memory import keep_freed_host_memory


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one `dcgan: error: ...` line (no usage dump) with exit code 2, as a UserError's."""

    def error(self, message: str) -> NoReturn:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank parses the same flags: one says it
            print(f"dcgan: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _positive_int(text: str) -> int:
    value = _number(text, int)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _number(text, float)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    value = _number(text, float)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text!r}")
    return value


def _unit_interval(text: str) -> float:
    value = _number(text, float)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return value


def _truncation(text: str) -> float:
    value = _number(text, float)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number greater than 0 and at most 1 (1: no truncation), "
                                         f"got {text!r}")
    return value


TRUNCATION_HELP = ("draw the noise closer to the latent's centre, z = PSI * z: less variety, more fidelity; "
                   "0 < PSI <= 1 (default 1: none)")


def _number(text: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None


def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train a GAN", description="Train a DCGAN; every run writes a run directory.")
    s = argparse.SUPPRESS  # only flags the user gives override the config file and preset
    p.add_argument("--config", metavar="FILE", help="TOML file of settings (flags override it)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from checkpoints/last.pt")
    p.add_argument("--init-from", metavar="RUN_OR_CHECKPOINT", default=s,
                   help="start a new run from another run's G and D weights (and its moving average when both "
                        "keep one), with fresh optimisers and step count; the networks must match")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/<timestamp>); never overwritten")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("recipe")
    g.add_argument("--preset", choices=sorted(PRESETS), default=s,
                   help="named recipe: tutorial (the tutorial's own), default (the best measured on digits), "
                        "conditional, folder (default's recipe with Radford et al.'s networks at 64x64 and adaptive "
                        "augmentation, the best measured on colour pictures), dcgan "
                        "(Radford et al.'s 64x64 network and recipe) (default: folder for a folder or .zip of "
                        "pictures, else default)")
    g.add_argument("--data", default=s, help="mnist (bundled), an IDX directory, a folder of pictures (flat or in "
                                             "class subfolders), a .zip of one, or torchvision:<Name>")
    g.add_argument("--download", action="store_true", default=s, help="let torchvision:<Name> download")
    g.add_argument("--arch", choices=ARCHITECTURES, default=s,
                   help="network family: tutorial (28x28 digits) or dcgan (Radford et al.; 32, 64, 128 or 256 "
                        "pixels); default: tutorial, dcgan in the dcgan preset")
    g.add_argument("--image-size", type=_positive_int, default=s)
    g.add_argument("--channels", type=_non_negative_int, default=s,
                   help="1 or 3; default (0): the data's (3 for a folder of colour images)")
    g.add_argument("--g-width", type=_positive_int, default=s, metavar="N",
                   help="dcgan: G's channels at half the image size, doubling as the maps halve (default 64)")
    g.add_argument("--d-width", type=_non_negative_int, default=s, metavar="N",
                   help="dcgan: D's channels after its first layer, doubling as the maps halve (default 64; "
                        "0, the folder preset's: 32 for a set of at most 500 images, else 64)")
    g.add_argument("--minibatch-std", action=argparse.BooleanOptionalAction, default=s,
                   help="dcgan: D's last maps gain a channel of how much the images of each group of 4 differ, "
                        "so a batch of alike images is easy to tell from a real one (Karras et al. 2018)")
    g.add_argument("--latent-dim", type=_positive_int, default=s)
    g.add_argument("--batch-size", type=_positive_int, default=s)
    g.add_argument("--lr-d", type=_positive_float, default=s, help="discriminator learning rate")
    g.add_argument("--lr-g", type=_positive_float, default=s, help="generator learning rate")
    g.add_argument("--beta1", type=_non_negative_float, default=s)
    g.add_argument("--beta2", type=_non_negative_float, default=s)
    g.add_argument("--loss", choices=LOSSES, default=s, help="bce (the tutorial's), hinge or lsgan")
    g.add_argument("--spectral-norm", action=argparse.BooleanOptionalAction, default=s,
                   help="spectral normalisation of the discriminator's layers")
    g.add_argument("--ema-decay", type=_unit_interval, default=s, metavar="D",
                   help="keep a moving average of G's weights (decay D, e.g. 0.999) and sample from it; 0: off")
    g.add_argument("--mode-seeking", type=_non_negative_float, default=s, metavar="W",
                   help="weight of a term in G's loss that rewards different images for different noise; 0: off")
    g.add_argument("--mode-seeking-pairs", action=argparse.BooleanOptionalAction, default=s,
                   help="the mode-seeking term per pair of samples, pushing hardest on the most alike pairs "
                        "(default: one ratio for the whole batch, as Mao et al.)")
    g.add_argument("--mismatched-labels", action=argparse.BooleanOptionalAction, default=s,
                   help="with --conditional or --clusters: D is also shown real images with a wrong label as fakes, "
                        "so it judges whether an image matches its label (Reed et al. 2016)")
    g.add_argument("--d-steps", type=_positive_int, default=s, help="discriminator steps per generator step")
    g.add_argument("--r1", type=_non_negative_float, default=s, metavar="GAMMA",
                   help="R1 penalty on D: GAMMA/2 times the mean squared gradient of D's logit at real images; "
                        "0: off")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=s,
                   help="differentiable translation + cutout of real and generated images before D")
    g.add_argument("--ada-target", type=_unit_interval, default=s, metavar="T",
                   help="adaptive augmentation of D's inputs (flips, shifts, colour), applied more often while "
                        "D's mean sign on real images is above T (Karras et al. 2020: 0.6; the folder preset: "
                        "0.45); 0: off")
    g.add_argument("--ada-speed", type=_positive_int, default=s, metavar="IMAGES",
                   help="with --ada-target: real images for the augmentation probability to go from 0 to 1 "
                        "(default 100000)")
    g.add_argument("--ada-geometric", action=argparse.BooleanOptionalAction, default=s,
                   help="with --ada-target: the augmentation also zooms, rotates and stretches the images "
                        "(Karras et al.'s geometric operations)")
    g.add_argument("--ada-cutout", action=argparse.BooleanOptionalAction, default=s,
                   help="with --ada-target: the augmentation also greys out a square of half the image's size "
                        "(Karras et al.'s cutout)")
    g.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=s,
                   help="flip each real image left to right with probability 1/2 each time it is drawn")
    g.add_argument("--lecam", type=_non_negative_float, default=s, metavar="W",
                   help="LeCam regularisation of D with weight W: D's logits are pulled towards moving averages "
                        "of its logits on the other kind of image (Tseng et al. 2021); 0: off")
    g.add_argument("--conditional", action=argparse.BooleanOptionalAction, default=s,
                   help="class-conditional GAN (labels from the data)")
    g.add_argument("--clusters", type=_non_negative_int, default=s, metavar="K",
                   help="train on K k-means clusters of the images as pseudo-classes (no labels needed); "
                        "samples draw clusters by their sizes; 0: off")
    g.add_argument("--freeze-d", type=_non_negative_int, default=s, metavar="K",
                   help="keep D's first K blocks (a convolution with its norm and activation) as they start, "
                        "e.g. from --init-from; 0: off")
    g.add_argument("--seed", type=_non_negative_int, default=s)
    g = p.add_argument_group("length")
    g.add_argument("--epochs", type=_non_negative_int, default=s)
    g.add_argument("--steps", type=_non_negative_int, default=s, help="total steps (wins over --epochs)")
    g.add_argument("--time-limit", type=_non_negative_float, metavar="MINUTES", default=s,
                   help="stop cleanly, with a checkpoint, after this many minutes of training "
                        "(evaluations during training not counted); alone, without --epochs or --steps, "
                        "train until it runs out")
    g = p.add_argument_group("execution and outputs")
    g.add_argument("--device", choices=DEVICES, default=s)
    g.add_argument("--precision", choices=PRECISIONS, default=s,
                   help="auto (default): bf16 autocast where the CPU or GPU runs bf16 natively, else fp32")
    g.add_argument("--memory-format", choices=MEMORY_FORMATS, default=s,
                   help="auto (default): channels-last for bf16 on a CPU with AMX, where it was 4-20%% faster; "
                        "else contiguous")
    g.add_argument("--channels-last", dest="memory_format", action="store_const", const="channels-last", default=s,
                   help="the same as --memory-format channels-last")
    g.add_argument("--convolutions", choices=CONVOLUTIONS, default=s,
                   help="how the dcgan networks' layers next to the 4x4 maps run: native (PyTorch's kernels) or "
                        "matmul (their passes with one sum per output as matrix products: 11-20%% more images/s "
                        "in bf16 on a CPU with AMX, 3-13%% in fp32 on an AVX2 CPU); auto (default): matmul for fp32 "
                        "on a CPU without bf16 kernels, unless --r1, else native")
    g.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=s,
                   help="under torchrun on GPUs: G's batch norm uses the statistics of the global batch "
                        "(default: each process's own)")
    g.add_argument("--reuse-fake", action=argparse.BooleanOptionalAction, default=s,
                   help="the G step reuses the D step's generated batch: one generator forward per step")
    g.add_argument("--lr-scaling", choices=LR_SCALINGS, default=s,
                   help="for large batches: scale both learning rates by batch/32 (linear) or its root (sqrt)")
    g.add_argument("--log-every", type=_positive_int, default=s, metavar="STEPS")
    g.add_argument("--sample-every", type=_non_negative_int, default=s, metavar="STEPS")
    g.add_argument("--checkpoint-every", type=_non_negative_int, default=s, metavar="STEPS")
    g.add_argument("--keep-checkpoints", type=_positive_int, default=s, metavar="K")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=s,
                   help="also write metrics.csv's rows and the sample grids as TensorBoard events in "
                        "RUN/tensorboard/ (pip install 'dcgan[tensorboard]')")
    g = p.add_argument_group("evaluation during training")
    g.add_argument("--eval-every", type=_non_negative_int, default=s, metavar="STEPS",
                   help="score the generator (FID, KID, ...) every STEPS steps: metrics.csv, fid.png, "
                        "checkpoints/best.pt (default 0: never)")
    g.add_argument("--eval-samples", type=_positive_int, default=s, metavar="N", help="samples scored (default 2000)")
    g.add_argument("--eval-classifier", default=s, metavar="FILE.pt",
                   help="feature network (default: the bundled MNIST one)")
    g.add_argument("--eval-reference", default=s, metavar="DATA",
                   help="the real images scored against, any --data value (default: the training data; e.g. a "
                        "whole set while training on a part of it)")
    p.set_defaults(handler=cmd_train)


def _add_generate(sub: Any) -> None:
    p = sub.add_parser("generate", help="draw samples from a checkpoint")
    p.add_argument("--checkpoint", required=True, metavar="CK", help="a checkpoint file or a run directory")
    p.add_argument("--num", type=_positive_int, default=64,
                   help="number of samples; of a conditional model: samples of each class")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="folder for PNGs; with --grid a .png file; with --format npy a .npy file (written under "
                        "exactly that name, with a <name>.labels.npy beside it for a conditional model); "
                        "never overwritten")
    classes = p.add_mutually_exclusive_group()
    classes.add_argument("--label", metavar="CLASS", help="conditional model: draw this class, e.g. 7")
    classes.add_argument("--labels", metavar="CLASSES", help="conditional model: these classes, e.g. 0-9 or 1,3,5 "
                                                             "(default: all)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="noise seed, 0 to 2**64 - 1 (default 0)")
    p.add_argument("--truncation", type=_truncation, default=1.0, metavar="PSI", help=TRUNCATION_HELP)
    p.add_argument("--grid", action="store_true", help="write one PNG grid instead of separate files")
    p.add_argument("--format", choices=("png", "npy"), default="png")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.set_defaults(handler=cmd_generate)


def _add_interpolate(sub: Any) -> None:
    p = sub.add_parser("interpolate", help="a looping walk through latent space, as a GIF or a PNG grid",
                       description="Spherical interpolation between random anchor points of the noise, back to "
                                   "the first: a looping GIF with --num walks side by side, or (--out X.png) one "
                                   "grid with a walk per row.")
    p.add_argument("--checkpoint", required=True, metavar="CK", help="a checkpoint file or a run directory")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="walk.gif (animation) or walk.png (grid); never overwritten")
    p.add_argument("--frames", type=_positive_int, default=12, help="frames from one anchor to the next (default 12)")
    p.add_argument("--anchors", type=_positive_int, default=4, help="random points the walk passes (default 4)")
    p.add_argument("--num", type=_positive_int, default=4, help="walks side by side (default 4)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="noise seed, 0 to 2**64 - 1 (default 0)")
    p.add_argument("--truncation", type=_truncation, default=1.0, metavar="PSI",
                   help=TRUNCATION_HELP + "; the whole walk is scaled")
    p.add_argument("--fps", type=_positive_float, default=12.0,
                   help="GIF frames per second, 0.00153 to 100 (a frame shows 0.01 s to 655.35 s; default 12)")
    classes = p.add_mutually_exclusive_group()
    classes.add_argument("--label", metavar="CLASS", help="conditional model: walk within this one class")
    classes.add_argument("--labels", metavar="CLASSES",
                         help="conditional model: morph from class to class (e.g. 0-9) at fixed noise")
    p.add_argument("--from-latent", metavar="A.npy",
                   help="one walk from this latent (as `dcgan project` writes it, with the label.txt beside it for "
                        "a labelled model, whose classes it takes) to --to-latent's and back, --frames each way; "
                        "--anchors, --num and --seed, of random walks, do not apply")
    p.add_argument("--to-latent", metavar="B.npy", help="the latent where the walk from --from-latent turns back")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.set_defaults(handler=cmd_interpolate)


def _add_project(sub: Any) -> None:
    from .config import MAX_PROJECTION_STEPS, PROJECTION_STEPS

    p = sub.add_parser("project", help="the latent (and class) whose image is closest to a real picture",
                       description="Project a real picture into a trained generator's latent space: gradient "
                                   "descent on the noise from several random starts (of every class of a labelled "
                                   "model, unless --label names one) towards the picture's pixels and features, "
                                   "the picture read as training pictures are. Writes latent.npy (and label.txt "
                                   "for a labelled model), reconstruction.png, side_by_side.png, progress.gif and "
                                   "projection.json into --out.")
    p.add_argument("--checkpoint", required=True, metavar="CK", help="a checkpoint file or a run directory")
    p.add_argument("--image", required=True, metavar="PIC",
                   help="the picture (PNG, JPEG, ...): resized, centre-cropped and converted to the model's channels")
    p.add_argument("--label", metavar="CLASS",
                   help="class-conditional model: project within this class (default: try every class, keep the best)")
    p.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder (never overwritten)")
    p.add_argument("--steps", type=_int_from(1, MAX_PROJECTION_STEPS), default=PROJECTION_STEPS,
                   help=f"optimisation steps, 1 to {MAX_PROJECTION_STEPS:,} (default {PROJECTION_STEPS})")
    p.add_argument("--seed", type=_non_negative_int, default=0,
                   help="seed of the random starts, 0 to 2**64 - 1 (default 0)")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.set_defaults(handler=cmd_project)


def _add_export(sub: Any) -> None:
    p = sub.add_parser("export", help="write the generator as ONNX or TorchScript",
                       description="The sampling generator (EMA weights, batch norm in inference mode) with a "
                                   "dynamic batch: input z (and labels for labelled models), output images in "
                                   "[-1, 1]; its sizes and pixel mapping in the file's metadata.")
    p.add_argument("--checkpoint", required=True, metavar="CK", help="a checkpoint file or a run directory")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="e.g. generator.onnx or generator.pt (never overwritten)")
    p.add_argument("--truncation", type=_truncation, default=1.0, metavar="PSI",
                   help="the file scales its input z by PSI itself (and says so in its metadata, `truncation`): "
                        "fed z ~ N(0, I), it draws as generate --truncation PSI; 0 < PSI <= 1 (default 1: none)")
    p.set_defaults(handler=cmd_export)


def _port(text: str) -> int:
    value = _number(text, int)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, got {text!r}")
    return value


def _add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="a page in the browser: samples, their download, walks between seeds",
                       description="Serve a local web page (Gradio; pip install 'dcgan[demo]') for a checkpoint's "
                                   "generator: samples of a seed and class as a grid to download, and a looping "
                                   "walk from one seed to another. Nothing is fetched from the internet.")
    p.add_argument("--checkpoint", required=True, metavar="CK", help="a checkpoint file or a run directory")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every network)")
    p.add_argument("--port", type=_port, default=7860, help="default 7860")
    p.add_argument("--truncation", type=_truncation, default=1.0, metavar="PSI",
                   help="the page's truncation slider at the start: " + TRUNCATION_HELP)
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.set_defaults(handler=cmd_demo)


def _int_from(lowest: int, highest: int) -> Callable[[str], int]:
    """An argparse type: an integer from `lowest` to `highest`, both named in the message of any other value."""

    def parse(text: str) -> int:
        value = _number(text, int)
        if not lowest <= value <= highest:
            raise argparse.ArgumentTypeError(f"must be an integer from {lowest:,} to {highest:,}, got {text!r}")
        return value

    return parse


def _add_data(sub: Any) -> None:
    p = sub.add_parser("data", help="dataset utilities")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    e = data_sub.add_parser("export-png", help="write IDX data as training|testing/<digit>/<index>.png")
    e.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder")
    e.add_argument("--data", default="mnist", help="mnist (bundled) or a directory of IDX files")
    e.set_defaults(handler=cmd_export_png)


def _add_classifier(sub: Any) -> None:
    p = sub.add_parser("classifier", help="the feature network of `dcgan evaluate`")
    clf_sub = p.add_subparsers(dest="classifier_command", required=True, metavar="COMMAND", parser_class=Parser)
    t = clf_sub.add_parser("train", help="train a classifier whose features the metrics use",
                           description="Train a small CNN classifier (fixed seed) and write it as a .pt file; "
                                       "on pictures without classes, the same network by contrast of "
                                       "augmented views.")
    t.add_argument("--data", default="mnist", help="mnist (bundled), an IDX directory, an image folder (flat or in "
                                                   "class subfolders), a .zip of one, or torchvision:<Name>")
    t.add_argument("--download", action="store_true", help="let torchvision:<Name> download")
    t.add_argument("--out", required=True, metavar="FILE.pt", help="where to write the weights (never overwritten)")
    t.add_argument("--channels", type=_non_negative_int, choices=(0, 1, 3), default=0,
                   help="1 or 3; default (0): the data's (3 for a folder of colour images)")
    # 8 pixels: the network pools three times; 256: the largest images the GANs make
    t.add_argument("--image-size", type=_int_from(8, max(DCGAN_SIZES)), default=28, help="8 to 256 (default 28)")
    t.add_argument("--features", choices=("auto", "classes", "contrastive"), default="auto",
                   help="what the features learn: classes (a classifier of the data's labels) or contrastive "
                        "(two random views of each picture told apart from the others, no labels); auto: classes "
                        "when the data has 2 or more (default)")
    t.add_argument("--epochs", type=_int_from(1, 10_000), help="1 to 10,000 (default 4; contrastive: 20)")
    t.add_argument("--batch-size", type=_int_from(2, UPPER_BOUNDS["batch_size"]), default=128,
                   help="2 (batch norm needs two images) to 2**20 (default 128)")
    t.add_argument("--lr", type=_positive_float, default=2e-3, help="peak learning rate (one-cycle schedule)")
    t.add_argument("--seed", type=_int_from(0, UPPER_BOUNDS["seed"]), default=0, help="0 to 2**32 - 1 (default 0)")
    t.add_argument("--no-augment", action="store_true", help="train without random shifts, rotations, scalings "
                                                                "(classes only)")
    t.add_argument("--device", choices=DEVICES, default="auto")
    t.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    t.set_defaults(handler=cmd_classifier_train)
    a = clf_sub.add_parser("test", help="accuracy of a classifier on a dataset's test split (top-1 retrieval "
                                        "for a contrastive one)")
    a.add_argument("--classifier", metavar="FILE.pt", help="default: the bundled MNIST classifier")
    a.add_argument("--data", default="mnist", help="as for `classifier train`")
    a.add_argument("--download", action="store_true", help="let torchvision:<Name> download")
    a.add_argument("--device", choices=DEVICES, default="auto")
    a.set_defaults(handler=cmd_classifier_test)


def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="FID, KID, precision/recall and class statistics of samples",
                       description="Score samples against a reference set in a classifier's feature space; "
                                   "prints a table, and the same numbers as JSON on the last line.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="CK", help="a checkpoint file or a run directory to sample from")
    source.add_argument("--samples", metavar="DIR|FILE.npy",
                        help="a folder of PNGs or an N x H x W uint8 .npy array (0 = background)")
    p.add_argument("--num", type=_positive_int, default=10000, metavar="N",
                   help="samples to draw from --checkpoint (default 10000)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="noise seed of --checkpoint samples, "
                                                                     "and of KID's subsets, 0 to 2**64 - 1")
    p.add_argument("--labels", metavar="FILE.npy", help="class each sample was asked to be (conditional samples)")
    p.add_argument("--reference", default="mnist", metavar="DATA", help="reference set, as --data of train "
                                                                        "(default: mnist)")
    p.add_argument("--reference-split", choices=("test", "train"), default="test")
    p.add_argument("--classifier", metavar="FILE.pt", help="feature network (default: the bundled MNIST one)")
    p.add_argument("--k", type=_positive_int, default=3, help="neighbours of the precision/recall manifolds "
                                                              "(default 3)")
    # Each subset's kernel matrices take time and memory with the square of its size.
    p.add_argument("--kid-subsets", type=_int_from(1, 10_000), default=100, metavar="N",
                   help="KID subsets, 1 to 10,000 (default 100)")
    p.add_argument("--kid-subset-size", type=_int_from(2, 5_000), default=1000, metavar="N",
                   help="samples per KID subset, 2 to 5,000, capped by the smaller set (default 1000)")
    p.add_argument("--json", metavar="FILE.json", help="also write the numbers to this new JSON file")
    p.add_argument("--no-cache", action="store_true", help="recompute the reference features")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.set_defaults(handler=cmd_evaluate)


def build_parser() -> Parser:
    """The argument parser of the `dcgan` command."""
    parser = Parser(prog="dcgan", description="Train deep convolutional GANs on small images.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    _add_train(sub)
    _add_generate(sub)
    _add_interpolate(sub)
    _add_project(sub)
    _add_export(sub)
    _add_demo(sub)
    _add_data(sub)
    _add_classifier(sub)
    _add_evaluate(sub)
    return parser


def _flag_values(args: argparse.Namespace) -> dict[str, Any]:
    fields = TrainConfig.__dataclass_fields__
    return {name: value for name, value in vars(args).items() if name in fields}


def _require_new_file(out: Path, suffixes: tuple[str, ...] = (), naming: str = "") -> None:
    """Refuse an --out file that exists already (never overwritten), whose folder is missing, or, given
    `suffixes`, whose name ends in none of them (`naming` says what to name instead)."""
    if out.exists():
        raise UserError(f"--out {out}: already exists; choose another path")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist")
    if suffixes and out.suffix.lower() not in suffixes:
        raise UserError(f"--out {out}: {naming}")


def cmd_train(args: argparse.Namespace) -> int:
    from .device import select_device
    from .evaluation.during_training import evaluate_during_training, feature_network_for
    from .training import distributed
    from .training.lock import RunLock
    from .training.loop import train
    from .training.prepare import prepare_run
    from .training.rundir import RunDirectory

    flags = _flag_values(args)
    root, finished, lock = None, False, RunLock()
    world = distributed.world_from_env()
    if world.distributed:  # the backend follows the device named on the command line (default auto)
        world = distributed.start(world, world.device(select_device(flags.get("device", "auto"))))
    try:
        prepared = distributed.from_main(world, lambda: prepare_run(
            resume=args.resume, out=args.out, config_file=args.config, flag_values=flags, lock=lock, world=world,
            check_evaluation=feature_network_for))
        root = prepared.root
        run = RunDirectory(root, job=world.run_id)
        if world.distributed and world.is_main:
            print(distributed.describe(world), file=sys.stderr)
        result = train(prepared.config, run, resume=prepared.resume, init_weights=prepared.init_weights,
                       progress=not args.quiet,
                       evaluator=evaluate_during_training, world=world, notes=prepared.notes)
        finished = True
    except KeyboardInterrupt as exc:  # a second signal: leave now; every file on disk is whole
        if world.is_main and root is not None:
            resumable = RunDirectory(root).last_checkpoint.is_file()
            hint = f"; resume with: dcgan train --resume {root}" if resumable else ""
            print(f"dcgan: stopped at once{hint}", file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    except RuntimeError as exc:
        if distributed.lost_contact(world, exc):
            return 1  # another rank failed and said why; torchrun stops (or restarts) the rest
        raise
    finally:
        lock.release()
        distributed.stop(world, together=finished)
    if not world.is_main:
        return 128 + (result.signum or signal.SIGINT) if result.status == "interrupted" else 0
    print(f"{result.status}: step={result.step} images_per_s={result.images_per_s:.1f} run={run.root}")
    if result.status == "interrupted":
        print(f"resume with: dcgan train --resume {run.root}", file=sys.stderr)
        return 128 + (result.signum or signal.SIGINT)
    if result.status == "time_limit":
        print(f"time limit reached; continue with: dcgan train --resume {run.root}", file=sys.stderr)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .device import select_device
    from .networks import channels_of
    from .sampling import (check_seed, generate, labels_path, labels_per_class, load_generator, parse_labels,
                           require_images_fit, require_label_classes, truncated, write_images)

    out = Path(args.out)
    if args.grid:
        if args.format == "npy":
            raise UserError("--grid writes one PNG image; it does not go with --format npy")
        _require_new_file(out, (".png",), "--grid writes a PNG image: name a .png file")
    elif args.format == "npy":
        _require_new_file(out, (".npy",), "--format npy writes a .npy file: name one ending in .npy")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: already exists and is not an empty folder")
    seed = check_seed(args.seed, option="--seed")
    device = select_device(args.device)
    generator, config = load_generator(args.checkpoint, device)
    spec, flag = (args.label, "--label") if args.label is not None else (args.labels, "--labels")
    if spec is not None:
        num_classes = require_label_classes(generator, option=flag, source=args.checkpoint)
        classes = parse_labels(spec, num_classes, flag=flag)
    else:  # a class-conditional model draws every class; others draw their own labels, if any
        classes = None if generator.label_classes is None else list(range(generator.label_classes))
    if classes is not None and args.format == "npy" and not args.grid and labels_path(out).exists():
        raise UserError(f"--out {out}: its labels file {labels_path(out)} already exists; choose another path")
    per_class = 1 if classes is None else len(classes)
    require_images_fit(f"--num {args.num:,}" + (f" x {per_class} classes" if per_class > 1 else ""),
                       args.num * per_class, latent_dim=generator.latent_dim, image_size=config.image_size,
                       channels=channels_of(config))
    labels = None if classes is None else labels_per_class(classes, args.num)
    images = generate(truncated(generator, args.truncation), args.num if labels is None else len(labels), seed=seed,
                      device=device, labels=labels)
    with writing(out, option="--out"):
        write_images(images, out, fmt=args.format, grid=args.grid, labels=None if labels is None else labels.numpy())
    print(f"wrote {len(images)} samples to {out}")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from .device import select_device
    from .interpolation import (check_fps, morph_between_classes, require_walk_fits, save_walk,
                                walk_through_anchors)
    from .networks import channels_of
    from .sampling import check_seed, load_generator, parse_labels, require_label_classes, truncated

    out = Path(args.out)
    _require_new_file(out, (".gif", ".png"), "name a .gif (an animation) or a .png (a grid, a walk per row)")
    check_fps(args.fps)
    if args.anchors < 2:
        raise UserError(f"--anchors {args.anchors}: a walk needs at least 2 anchor points")
    seed = check_seed(args.seed, option="--seed")
    device = select_device(args.device)
    generator, config = load_generator(args.checkpoint, device)
    if args.from_latent is not None or args.to_latent is not None:
        return _interpolate_latents(args, generator, config, device, out)
    spec, flag = (args.label, "--label") if args.label is not None else (args.labels, "--labels")
    classes = []
    if spec is not None:
        classes = parse_labels(spec, require_label_classes(generator, option=flag, source=args.checkpoint), flag=flag)
    if args.labels is not None and len(classes) < 2:
        raise UserError(f"--labels {args.labels}: a morph needs at least 2 classes (use --label to walk in one)")
    if args.label is not None and len(classes) > 1:
        raise UserError(f"--label {args.label}: name one class (use --labels to morph from class to class)")
    stops = f"{len(classes)} classes" if args.labels is not None else f"--anchors {args.anchors:,}"
    frames = (len(classes) if args.labels is not None else args.anchors) * args.frames
    require_walk_fits(f"--frames {args.frames:,} x {stops} x --num {args.num:,}", frames, args.num, out=out,
                      latent_dim=generator.latent_dim, image_size=config.image_size, channels=channels_of(config))
    generator = truncated(generator, args.truncation)
    if args.labels is not None:  # class to class at fixed noise
        pictures = morph_between_classes(generator, classes, walks=args.num, frames_per_segment=args.frames,
                                         seed=seed, device=device)
    else:
        pictures = walk_through_anchors(generator, walks=args.num, anchors=args.anchors,
                                        frames_per_segment=args.frames, seed=seed, device=device,
                                        label=classes[0] if classes else None)
    with writing(out, option="--out"):
        save_walk(pictures, out, fps=args.fps)
    print(f"wrote {len(pictures)} frames of {args.num} walks to {out}")
    return 0


def _interpolate_latents(args: argparse.Namespace, generator: Any, config: TrainConfig, device: Any,
                         out: Path) -> int:
    """`dcgan interpolate --from-latent A.npy --to-latent B.npy`: one walk from A to B and back."""
    from .interpolation import require_walk_fits, save_walk, walk_between_latents
    from .networks import channels_of
    from .projection import read_latent, read_latent_label

    if args.from_latent is None or args.to_latent is None:
        given = "--from-latent" if args.from_latent is not None else "--to-latent"
        raise UserError(f"{given}: a walk between latents needs both --from-latent and --to-latent")
    if args.label is not None or args.labels is not None:
        raise UserError(f"{'--label' if args.label is not None else '--labels'}: a walk between latents takes each "
                        f"one's class from the label.txt beside it")
    if args.truncation != 1:  # a projected latent is drawn as it is: scaled, it is no longer that picture
        raise UserError("--truncation: a walk between latents draws them as they are; leave out --truncation")
    (start, start_label), (end, end_label) = [
        (read_latent(path, generator.latent_dim, option=flag), read_latent_label(path, generator, option=flag))
        for flag, path in (("--from-latent", args.from_latent), ("--to-latent", args.to_latent))]
    require_walk_fits(f"--frames {args.frames:,} x 2", 2 * args.frames, 1, out=out, latent_dim=generator.latent_dim,
                      image_size=config.image_size, channels=channels_of(config))
    pictures = walk_between_latents(generator, start, end, frames_per_segment=args.frames, device=device,
                                    labels=None if start_label is None else (start_label, end_label))
    with writing(out, option="--out"):
        save_walk(pictures, out, fps=args.fps)
    print(f"wrote {len(pictures)} frames of the walk from {args.from_latent} to {args.to_latent} and back to {out}")
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    from .device import select_device
    from .networks import channels_of
    from .projection import classes_to_try, perceptual_network, project, read_picture, record_of, save_projection
    from .sampling import check_seed, load_generator, parse_labels, require_label_classes

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: already exists and is not an empty folder; choose another path")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist")
    seed = check_seed(args.seed, option="--seed")
    device = select_device(args.device)
    generator, config = load_generator(args.checkpoint, device)
    label = None
    if args.label is not None:
        named = parse_labels(args.label, require_label_classes(generator, option="--label", source=args.checkpoint),
                             flag="--label")
        if len(named) > 1:
            raise UserError(f"--label {args.label}: name one class")
        label = named[0]
    classes = classes_to_try(generator, label, option="--label", source=args.checkpoint)
    picture = read_picture(args.image, channels=channels_of(config), image_size=config.image_size, option="--image")
    network = perceptual_network(args.checkpoint, device)
    frames: list[Any] = []
    projection = project(generator, picture, classes=classes, steps=args.steps, seed=seed, network=network,
                         device=device, progress=True, on_frame=frames.append)
    record = record_of(projection, checkpoint=args.checkpoint, image=args.image, steps=args.steps, seed=seed,
                       network=network)
    with writing(out, option="--out"):
        save_projection(out, projection, picture, frames, record)
    found = "" if projection.label is None else f", class {projection.label}"
    print(f"wrote the projection to {out}: distance {projection.distance:.4f} (pixels {projection.pixel_error:.4f}, "
          f"features {projection.perceptual_error:.4f}){found}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import SUFFIXES, export

    out = Path(args.out)
    suffixes = SUFFIXES[args.format]
    _require_new_file(out, suffixes, f"--format {args.format} writes a {suffixes[0]} file: name one ending in "
                                     f"{' or '.join(suffixes)}")
    with writing(out, option="--out"):
        info = export(args.checkpoint, args.format, out, truncation=args.truncation)
    print(f"wrote {args.format} generator to {out}: inputs {info['inputs']}, latent_dim {info['latent_dim']}, "
          f"images {info['channels']}x{info['image_size']}x{info['image_size']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import serve

    serve(args.checkpoint, host=args.host, port=args.port, device=args.device, truncation=args.truncation)
    return 0


def cmd_export_png(args: argparse.Namespace) -> int:
    from .data import bundled_mnist_dir, export_png

    source = bundled_mnist_dir() if args.data == "mnist" else Path(args.data)
    if not source.is_dir():
        raise UserError(f"--data {args.data}: not a directory of IDX files")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: already exists and is not an empty folder; choose another path")
    with writing(out, option="--out"):
        count = export_png(source, out)
    print(f"wrote {count} PNG files under {out}")
    return 0


def cmd_classifier_train(args: argparse.Namespace) -> int:
    from .device import select_device
    from .evaluation.classifier import (MIN_RETRIEVAL_IMAGES, ContrastiveSettings, TrainSettings, feature_kind,
                                        require_batch_fits, save_classifier, train_classifier, train_contrastive,
                                        train_test_data)

    out = Path(args.out)
    _require_new_file(out)
    device = select_device(args.device)
    train, test = train_test_data(args.data, channels=args.channels, image_size=args.image_size,
                                  download=args.download, seed=args.seed)
    contrastive = feature_kind(args.features, train) == "contrastive"
    if contrastive and args.no_augment:
        raise UserError("--no-augment: a contrastive feature network learns from augmented views; it cannot train "
                        "without them")
    if contrastive and len(test) < MIN_RETRIEVAL_IMAGES:
        raise UserError(f"--data {args.data}: {len(train) + len(test)} images are too few to train and test a "
                        f"contrastive feature network (a tenth, at least {MIN_RETRIEVAL_IMAGES}, is held out)")
    epochs = args.epochs or (ContrastiveSettings.epochs if contrastive else TrainSettings.epochs)
    measure = "retrieval" if contrastive else "test_accuracy"
    require_batch_fits(args.batch_size, train, device=device, views=2 if contrastive else 1)
    what = "a contrastive feature network (no classes) on" if contrastive else "on"
    print(f"training {what} {len(train)} images, testing on {len(test)}", file=sys.stderr)

    def report(epoch: int, loss: float, quality: float) -> None:
        if not args.quiet:
            print(f"epoch {epoch}/{epochs}: loss={loss:.4f} {measure}={100 * quality:.2f}%", file=sys.stderr)

    settings: TrainSettings | ContrastiveSettings
    if contrastive:
        settings = ContrastiveSettings(epochs=epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
        model, quality = train_contrastive(train, test, settings, device=device, report=report)
    else:
        settings = TrainSettings(epochs=epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                 augment=not args.no_augment)
        model, quality = train_classifier(train, test, settings, device=device, report=report)
    scores = {"test_retrieval": quality} if contrastive else {"test_accuracy": quality}
    with writing(out, option="--out"):
        save_classifier(model, out, classes=train.classes, data=args.data, settings=settings, **scores)
    print(f"{measure}={100 * quality:.2f}% ({len(test)} images) classifier={out}")
    return 0


def cmd_classifier_test(args: argparse.Namespace) -> int:
    from .device import select_device
    from .evaluation.classifier import accuracy, load_classifier, top_1_retrieval, train_test_data

    classifier = load_classifier(args.classifier, device=select_device(args.device))
    info = classifier.info
    _, test = train_test_data(args.data, channels=info.channels, image_size=info.image_size, download=args.download,
                              seed=info.seed)
    if info.has_classes:
        print(f"test_accuracy={100 * accuracy(classifier, test):.2f}% ({len(test)} images) classifier={info.source}")
    else:
        print(f"retrieval={100 * top_1_retrieval(classifier, test, seed=info.seed):.2f}% ({len(test)} images) "
              f"classifier={info.source}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .device import select_device
    from .evaluation.classifier import load_classifier
    from .evaluation.scoring import (EvalSettings, evaluate, format_report, load_requested, load_samples,
                                     reference_data, reference_features, samples_from_checkpoint, to_json)
    from .files import atomic_write
    from .sampling import check_seed

    json_path = Path(args.json) if args.json else None
    if json_path is not None:  # as _require_new_file, for --json: a new file, never overwritten
        if json_path.exists() or json_path.is_symlink():
            raise UserError(f"--json {json_path}: already exists; choose another path")
        if not json_path.parent.is_dir():
            problem = (f"{json_path.parent} is not a folder" if json_path.parent.exists()
                       else f"folder {json_path.parent} does not exist")
            raise UserError(f"--json {json_path}: {problem}")
        if json_path.suffix.lower() != ".json":
            raise UserError(f"--json {json_path}: name a .json file")
    seed = check_seed(args.seed, option="--seed")
    device = select_device(args.device)
    classifier = load_classifier(args.classifier, device=device)
    if args.labels and not classifier.info.has_classes:
        raise UserError(f"--labels {args.labels}: the feature network {classifier.info.label()} has no classes "
                        f"(trained by contrast, without labels), so there is no class to check; leave out --labels")
    if args.checkpoint:
        if args.labels:
            raise UserError("--labels goes with --samples; a conditional --checkpoint is asked for every class "
                            "in turn")
        images, requested = samples_from_checkpoint(args.checkpoint, classifier.info, num=args.num, seed=seed,
                                                    device=device)
        described = f"{args.checkpoint} (seed {seed})"
    else:
        images, described = load_samples(args.samples, classifier.info), args.samples
        requested = load_requested(args.labels, images.shape[0]) if args.labels else None
    data = reference_data(args.reference, classifier.info, split=args.reference_split)
    reference = reference_features(classifier, data, description=f"{args.reference} ({args.reference_split})",
                                   use_cache=not args.no_cache)
    settings = EvalSettings(k=args.k, kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size,
                            seed=seed)
    result = evaluate(classifier, images, reference, settings=settings, samples=described, requested=requested)
    line = to_json(result)
    if json_path is not None:
        with writing(json_path, option="--json"):
            atomic_write(json_path, lambda tmp: tmp.write_text(line + "\n"))
    print(format_report(result))
    print(line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dcgan` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    keep_freed_host_memory()  # before the command allocates anything
    try:
        return args.handler(args)
    except UserError as exc:
        if os.environ.get("RANK", "0") == "0":  # other ranks' errors reach rank 0 (distributed.agreed)
            print(f"dcgan: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except PeerFailed as exc:  # another rank failed and printed why
        return exc.exit_code
    except KeyboardInterrupt:
        print("dcgan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
