"""Real colour picture sets that install offline from Debian packages, built as folders to train on.

    apt-get install ruby-gemojione openclipart-png
    python benchmarks/colour_sets.py --set emoji --out /tmp/colour_sets --size 64
    python benchmarks/colour_sets.py --set clipart --out /tmp/colour_sets --size 64

Sets (docs/colour_sets.md has their versions, licences, counts and contact sheets):
  emoji    ruby-gemojione: the EmojiOne emoji (CC-BY-SA-4.0), 64x64 PNGs; classes are the emoji's categories
  clipart  openclipart-png: drawings of things from the Open Clip Art Library 0.18 (public domain); classes are its
           subject folders (animals, food, people, ...); its folders of computer icons, shapes, signs and symbols,
           maps, ornaments, patterns, logos, buttons and unsorted files are not read

Every picture is written twice, in two folders that must not exist yet (or be empty): `OUT/<set>/<class>/<name>.png`
(class subfolders) and `OUT/<set>-flat/<class>-<name>.png` (directly in the folder: one set without classes);
either one is a `--data` for `dcgan train`. Each picture is an RGBA PNG of --size x --size: clip art, whose files
have margins of any width, is first cropped to its drawn part (the pixels neither transparent nor near-white); then
the picture is scaled down keeping its aspect ratio and centred on a transparent square. Sources are read in sorted
order, so a build is the same on every machine.

Filters, in this order, each one counted:
  broken link   a symbolic link whose target is not installed
  skin tone     emoji: the skin-tone variants (the same picture five more times in other skin colours) and the
                bare skin-tone swatches
  playing card  clip art: four decks of the same 54 playing cards, which would be a sixth of the set
  placeholder   clip art: the 10 files (found by looking at every kept picture) that show Inkscape's "Linked Image
                Not Found" box: a picture linked into the drawing was missing when the PNG was rendered
  unreadable    a file PIL cannot decode
  too large     over PIL's limit against decompression bombs (89 million pixels; clip art has a dozen posters
                of 170 million, each gigabytes to decode)
  too small     the (cropped) picture is smaller than --size on its longer side: it would have to be enlarged
  duplicate     the same pixels, once converted, as an earlier picture (copies under two names or folders)
  near-empty    under 10% of the square is drawn: a thin line, a dot, a long strip or an outline
  grey          under 3% of the drawn pixels have colour (channels differing by 48 or more): black-and-white
                line art, silhouettes and grey pictures, which teach a colour model nothing of colour
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

EMOJI_GEM = Path("/usr/share/rubygems-integration/all/gems/gemojione-3.3.0")
OPENCLIPART = Path("/usr/share/openclipart/png")
CLIPART_CLASSES = ("animals", "buildings", "containers", "education", "electronics", "food", "office", "people",
                   "plants", "recreation", "science", "tools", "transportation")
CLIPART_PLACEHOLDERS = ("animals/birds/duck_yellow_ii_kurt_cagl_.png", "animals/birds/penguin/tux_didier_fabert_01.png",
                        *(f"people/stylized_yoga_person_ger_0{number}.png" for number in range(1, 7)),
                        "recreation/religion/creation_day_7_number_ge_01.png",
                        "recreation/religion/creation_day_7_number_ge_04.png")
SKIN_TONES = ("1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff")

INK_ALPHA = 8  # alpha above this is drawn
INK_WHITE = 248  # an opaque pixel whose channels are all at least this is paper, not drawing
NEAR_EMPTY_FRACTION = 0.10
COLOUR_SPREAD = 48
GREY_FRACTION = 0.03


@dataclass(frozen=True)
class Source:
    """One picture of a package: its file, its class and its name in the built folder."""

    path: Path
    label: str
    name: str


@dataclass(frozen=True)
class PictureSet:
    """A set: its package, the files that show it installed, how to list it, and its own filter."""

    package: str
    root: Path
    required: tuple[Path, ...]
    list_sources: Callable[[Path], list[Source]]
    trim: bool
    left_out: Callable[[Source], str | None]
    left_out_reasons: tuple[str, ...]


def _emoji_sources(root: Path) -> list[Source]:
    """Every emoji PNG, its class the category that config/index.json gives its code point."""
    index = json.loads((root / "config" / "index.json").read_text())
    categories = {}
    for entry in index.values():
        category = "flags" if entry["category"] == "extras" else entry["category"]  # extras: the rainbow flag alone
        for code in [entry["unicode"], *entry["unicode_alternates"]]:
            categories[code.lower()] = category
    return [Source(path, categories[path.stem.lower()], path.stem.lower())
            for path in sorted((root / "assets" / "png").glob("*.png"))]


def _emoji_left_out(source: Source) -> str | None:
    """'skin tone' for a skin-tone variant of another emoji or a bare skin-tone swatch."""
    if source.label == "modifier" or any(tone in source.name.split("-") for tone in SKIN_TONES):
        return "skin tone"
    return None


def _clipart_sources(root: Path) -> list[Source]:
    """The PNGs of the subject folders, each of its top folder's class, named by its path below that folder."""
    return [Source(path, label, "_".join(path.relative_to(root / label).with_suffix("").parts))
            for label in CLIPART_CLASSES for path in sorted((root / label).rglob("*.png"))]


def _clipart_left_out(source: Source) -> str | None:
    """'playing card' or 'placeholder' for the files so named above, also when reached through a symbolic link."""
    relative = source.path.resolve().relative_to(OPENCLIPART.resolve())
    if relative.parts[:3] == ("recreation", "games", "cards"):
        return "playing card"
    if relative.as_posix() in CLIPART_PLACEHOLDERS:
        return "placeholder"
    return None


SETS = {
    "emoji": PictureSet("ruby-gemojione", EMOJI_GEM,
                        (EMOJI_GEM / "config" / "index.json", EMOJI_GEM / "assets" / "png"), _emoji_sources,
                        trim=False, left_out=_emoji_left_out, left_out_reasons=("skin tone",)),
    "clipart": PictureSet("openclipart-png", OPENCLIPART, tuple(OPENCLIPART / label for label in CLIPART_CLASSES),
                          _clipart_sources, trim=True, left_out=_clipart_left_out,
                          left_out_reasons=("playing card", "placeholder")),
}


def ink_mask(rgba: np.ndarray) -> np.ndarray:
    """The drawn pixels of an RGBA array: not transparent and not near-white paper."""
    return (rgba[..., 3] > INK_ALPHA) & (rgba[..., :3].min(axis=2) < INK_WHITE)


def fit_square(image: Image.Image, size: int, trim: bool) -> Image.Image | None:
    """`image` as an RGBA square of `size` (first cropped to its drawn part if `trim`); None if it needs enlarging."""
    rgba = image.convert("RGBA")
    if trim:
        rows, cols = np.nonzero(ink_mask(np.asarray(rgba)))
        if rows.size:
            rgba = rgba.crop((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
    if max(rgba.size) < size:
        return None
    if rgba.size == (size, size):
        return rgba
    scale = size / max(rgba.size)
    scaled = rgba.resize((max(1, round(rgba.width * scale)), max(1, round(rgba.height * scale))),
                         Image.Resampling.LANCZOS)
    square = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    square.paste(scaled, ((size - scaled.width) // 2, (size - scaled.height) // 2))
    return square


def quality_problem(square: Image.Image) -> str | None:
    """Why a converted picture does not belong ('near-empty', 'grey'), or None."""
    rgba = np.asarray(square).astype(np.int16)
    ink = ink_mask(rgba)
    if ink.mean() < NEAR_EMPTY_FRACTION:
        return "near-empty"
    spread = rgba[..., :3].max(axis=2) - rgba[..., :3].min(axis=2)
    if (spread[ink] >= COLOUR_SPREAD).mean() < GREY_FRACTION:
        return "grey"
    return None


def build(picture_set: PictureSet, classes_dir: Path, flat_dir: Path, size: int) -> tuple[Counter, Counter]:
    """Write the set's kept pictures in both folders; returns the drops by filter and the kept pictures by class."""
    dropped: Counter = Counter()
    kept: Counter = Counter()
    seen: set[bytes] = set()
    for source in picture_set.list_sources(picture_set.root):
        square = None
        if source.path.is_symlink() and not source.path.exists():
            problem = "broken link"
        else:
            problem = picture_set.left_out(source)
        if problem is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    with Image.open(source.path) as image:
                        square = fit_square(image, size, picture_set.trim)
            except (Image.DecompressionBombWarning, Image.DecompressionBombError):
                problem = "too large"
            except (UnidentifiedImageError, OSError, ValueError):
                problem = "unreadable"
            else:
                problem = "too small" if square is None else None
        if problem is None:
            digest = hashlib.sha256(square.tobytes()).digest()
            problem = "duplicate" if digest in seen else quality_problem(square)
            seen.add(digest)
        if problem:
            dropped[problem] += 1
            continue
        kept[source.label] += 1
        for path in (classes_dir / source.label / f"{source.name}.png", flat_dir / f"{source.label}-{source.name}.png"):
            path.parent.mkdir(parents=True, exist_ok=True)
            square.save(path, optimize=False)
    return dropped, kept


def contact_sheet(folder: Path, out: Path, *, count: int = 64, columns: int = 8, seed: int = 0) -> None:
    """A PNG grid of `count` pictures of `folder` drawn with `seed`, laid on white as training reads them."""
    paths = sorted(folder.glob("*.png"))
    chosen = random.Random(seed).sample(paths, min(count, len(paths)))
    with Image.open(chosen[0]) as first:
        side = first.width
    rows = -(-len(chosen) // columns)
    sheet = Image.new("RGB", (columns * (side + 2) + 2, rows * (side + 2) + 2), (160, 160, 160))
    for index, path in enumerate(chosen):
        tile = Image.new("RGBA", (side, side), (255, 255, 255, 255))
        with Image.open(path) as picture:
            tile.alpha_composite(picture.convert("RGBA"))
        sheet.paste(tile.convert("RGB"), (2 + index % columns * (side + 2), 2 + index // columns * (side + 2)))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


def main() -> None:
    """Build one set from its installed package and print what each filter kept and dropped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", required=True, choices=sorted(SETS), dest="set_name")
    parser.add_argument("--out", required=True, type=Path, help="the folder to build OUT/<set> and OUT/<set>-flat in")
    parser.add_argument("--size", type=int, default=64, help="side of the square pictures (default 64)")
    parser.add_argument("--sheet", type=Path, help="also write a contact sheet of 64 random pictures to this PNG")
    args = parser.parse_args()
    picture_set = SETS[args.set_name]
    missing = [path for path in picture_set.required if not path.exists()]
    if missing:
        _refuse(f"--set {args.set_name}: {missing[0]} is missing; install it: apt-get install {picture_set.package}")
    if args.size < 8:
        _refuse(f"--size {args.size}: must be at least 8")
    classes_dir, flat_dir = args.out / args.set_name, args.out / f"{args.set_name}-flat"
    for folder in (classes_dir, flat_dir):
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            _refuse(f"--out {args.out}: {folder} exists and is not an empty folder; remove it or name another --out")
    dropped, kept = build(picture_set, classes_dir, flat_dir, args.size)
    print(f"{args.set_name}: {sum(kept.values())} kept, {sum(dropped.values())} dropped "
          f"({sum(kept.values()) + sum(dropped.values())} read from {picture_set.package})")
    for problem in ("broken link", *picture_set.left_out_reasons, "unreadable", "too large", "too small", "duplicate",
                    "near-empty", "grey"):
        if problem in dropped:
            print(f"  dropped {problem}: {dropped[problem]}")
    print("  kept by class: " + ", ".join(f"{label} {count}" for label, count in sorted(kept.items())))
    print(f"  {classes_dir} (class subfolders), {flat_dir} (flat)")
    if args.sheet and kept:
        contact_sheet(flat_dir, args.sheet)
        print(f"  contact sheet: {args.sheet}")


def _refuse(message: str) -> None:
    print(f"colour_sets.py: error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
