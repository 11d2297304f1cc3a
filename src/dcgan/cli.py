"""The `dcgan` command line: train, generate, data export-png."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .config import DEVICES, PRECISIONS, PRESETS, TrainConfig, config_from_dict, read_toml, resolve_config
from .errors import UserError

# Options that may change when a run is resumed; everything else is fixed by the checkpoint.
RESUMABLE = {"steps", "epochs", "time_limit", "device", "log_every", "sample_every", "checkpoint_every",
             "keep_checkpoints"}


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump) with exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
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
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/<timestamp>); never overwritten")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("recipe")
    g.add_argument("--preset", choices=sorted(PRESETS), default=s, help="named hyper-parameters (default: tutorial)")
    g.add_argument("--data", default=s, help="mnist (bundled), an IDX directory, an image folder, "
                                             "or torchvision:<Name>")
    g.add_argument("--download", action="store_true", default=s, help="let torchvision:<Name> download")
    g.add_argument("--image-size", type=_positive_int, default=s)
    g.add_argument("--channels", type=_positive_int, default=s)
    g.add_argument("--latent-dim", type=_positive_int, default=s)
    g.add_argument("--batch-size", type=_positive_int, default=s)
    g.add_argument("--lr-d", type=_positive_float, default=s, help="discriminator learning rate")
    g.add_argument("--lr-g", type=_positive_float, default=s, help="generator learning rate")
    g.add_argument("--beta1", type=_non_negative_float, default=s)
    g.add_argument("--beta2", type=_non_negative_float, default=s)
    g.add_argument("--seed", type=_non_negative_int, default=s)
    g = p.add_argument_group("length")
    g.add_argument("--epochs", type=_non_negative_int, default=s)
    g.add_argument("--steps", type=_non_negative_int, default=s, help="total steps (wins over --epochs)")
    g.add_argument("--time-limit", type=_non_negative_float, metavar="MINUTES", default=s,
                   help="stop cleanly, with a checkpoint, after this many minutes")
    g = p.add_argument_group("execution and outputs")
    g.add_argument("--device", choices=DEVICES, default=s)
    g.add_argument("--precision", choices=PRECISIONS, default=s)
    g.add_argument("--channels-last", action="store_true", default=s)
    g.add_argument("--log-every", type=_positive_int, default=s, metavar="STEPS")
    g.add_argument("--sample-every", type=_non_negative_int, default=s, metavar="STEPS")
    g.add_argument("--checkpoint-every", type=_non_negative_int, default=s, metavar="STEPS")
    g.add_argument("--keep-checkpoints", type=_positive_int, default=s, metavar="K")
    p.set_defaults(handler=cmd_train)


def _add_generate(sub: Any) -> None:
    p = sub.add_parser("generate", help="draw samples from a checkpoint")
    p.add_argument("--checkpoint", required=True, metavar="CK", help="a checkpoint file or a run directory")
    p.add_argument("--num", type=_positive_int, default=64)
    p.add_argument("--out", required=True, metavar="PATH", help="folder for PNGs, or the .png/.npy file")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--grid", action="store_true", help="write one grid image instead of separate files")
    p.add_argument("--format", choices=("png", "npy"), default="png")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.set_defaults(handler=cmd_generate)


def _add_data(sub: Any) -> None:
    p = sub.add_parser("data", help="dataset utilities")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    e = data_sub.add_parser("export-png", help="write IDX data as training|testing/<digit>/<index>.png")
    e.add_argument("--out", required=True, metavar="DIR")
    e.add_argument("--data", default="mnist", help="mnist (bundled) or a directory of IDX files")
    e.set_defaults(handler=cmd_export_png)


def build_parser() -> Parser:
    """The argument parser of the `dcgan` command."""
    parser = Parser(prog="dcgan", description="Train deep convolutional GANs on small images.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    _add_train(sub)
    _add_generate(sub)
    _add_data(sub)
    return parser


def _flag_values(args: argparse.Namespace) -> dict[str, Any]:
    fields = TrainConfig.__dataclass_fields__
    return {name: value for name, value in vars(args).items() if name in fields}


def cmd_train(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .rundir import RunDirectory
    from .training import train

    flags = _flag_values(args)
    if args.resume:
        if args.out or args.config:
            raise UserError("--resume takes its settings from the run: drop --out and --config")
        fixed = sorted(set(flags) - RESUMABLE)
        if fixed:
            raise UserError(f"--resume: {', '.join('--' + f.replace('_', '-') for f in fixed)} cannot change "
                            f"in a resumed run")
        run = RunDirectory(args.resume)
        payload = load_checkpoint(run.checkpoints / "last.pt")
        stored = config_from_dict(payload["config"], str(run.checkpoints / "last.pt"))
        if "epochs" in flags and "steps" not in flags:
            flags["steps"] = 0
        config = stored.replace(**flags)
    else:
        file_values = read_toml(args.config) if args.config else {}
        config = resolve_config(file_values, flags)
        payload = None
        run = RunDirectory.create(args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    print(f"run directory: {run.root}", file=sys.stderr)
    result = train(config, run, resume=payload, progress=not args.quiet)
    print(f"{result.status}: step={result.step} images_per_s={result.images_per_s:.1f} run={run.root}")
    if result.status == "interrupted":
        print(f"resume with: dcgan train --resume {run.root}", file=sys.stderr)
        return 128 + (result.signum or signal.SIGINT)
    if result.status == "time_limit":
        print(f"time limit reached; continue with: dcgan train --resume {run.root}", file=sys.stderr)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .sampling import generate, load_generator, write_images
    from .training import select_device

    out = Path(args.out)
    if args.grid or args.format == "npy":
        if out.exists():
            raise UserError(f"--out {out}: already exists; choose another path")
        if not out.parent.is_dir():
            raise UserError(f"--out {out}: folder {out.parent} does not exist")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: already exists and is not an empty folder")
    device = select_device(args.device)
    generator, _ = load_generator(args.checkpoint, device)
    images = generate(generator, args.num, seed=args.seed, device=device)
    write_images(images, out, fmt=args.format, grid=args.grid)
    print(f"wrote {args.num} samples to {out}")
    return 0


def cmd_export_png(args: argparse.Namespace) -> int:
    from .data import bundled_mnist_dir, export_png

    source = bundled_mnist_dir() if args.data == "mnist" else Path(args.data)
    if not source.is_dir():
        raise UserError(f"--data {args.data}: not a directory of IDX files")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out}: already exists and is not empty")
    count = export_png(source, out)
    print(f"wrote {count} PNG files under {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dcgan` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UserError as exc:
        print(f"dcgan: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("dcgan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
