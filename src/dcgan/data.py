"""Datasets decoded once into one uint8 tensor in memory, and shuffled batches drawn from it.

Sources (`--data`): `mnist` (bundled IDX files), a directory of IDX files, a folder of pictures (flat,
or one subfolder per class), a zip archive of such a folder, or `torchvision:<Name>` (with `--download`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import io
import mmap
import multiprocessing
import os
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import IO, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from .errors import UserError
from .files import atomic_write

PARALLEL_DECODE_FROM = 2000  # images: smaller folders decode in this process (a pool costs more than it saves)
MAX_PICTURE_BYTES = 64 * 2**20  # a zip member claiming more (uncompressed) is refused unread: no picture needs it
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IDX_PREFIX = {"train": "train", "test": "t10k"}
IDX_TYPES = {0x08: np.uint8}


@dataclass(frozen=True)
class ImageData:
    """A labelled image set: `images` (N, C, H, W) uint8, `labels` (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    source: str
    mapped: bool = False  # `images` is a memory-mapped file: batches are gathered from it, not copied whole
    description: str = ""  # what a folder or zip archive was found to hold, for the log ("" for other sources)
    flat: bool = False  # pictures without class subfolders: one set, under a single class

    def __len__(self) -> int:
        return self.images.shape[0]


# ---------------------------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------------------------

def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (optionally gzip-compressed) into a uint8 array, checking its header."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"IDX file not found: {path}") from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UserError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise UserError(f"{path} is not an IDX file (bad magic number)")
    type_code, ndim = raw[2], raw[3]
    if type_code not in IDX_TYPES:
        raise UserError(f"{path}: unsupported IDX element type 0x{type_code:02x} (only unsigned bytes)")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise UserError(f"{path} is truncated: incomplete IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise UserError(f"{path} is truncated or corrupt: header says {expected} bytes of data, "
                        f"found {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise UserError(f"{directory}: no {stem}[.gz] file")


def load_idx_dir(directory: str | Path, split: str = "train") -> ImageData:
    """Load `<prefix>-images-idx3-ubyte[.gz]` and its labels from a directory."""
    directory = Path(directory)
    prefix = IDX_PREFIX[split]
    image_path = _find_idx(directory, f"{prefix}-images-idx3-ubyte")
    label_path = _find_idx(directory, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3:
        raise UserError(f"{image_path}: expected a 3-d image array (N, H, W), got shape {images.shape}")
    if labels.ndim != 1:
        raise UserError(f"{label_path}: expected a 1-d label array, got shape {labels.shape}")
    if len(images) != len(labels):
        raise UserError(f"{directory}: {len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise UserError(f"{image_path} holds no images")
    n_classes = int(labels.max()) + 1
    return ImageData(images=torch.from_numpy(images.copy()).unsqueeze(1),
                     labels=torch.from_numpy(labels.astype(np.int64)),
                     classes=tuple(str(c) for c in range(n_classes)), source=str(directory))


def bundled_mnist_dir() -> Path:
    """The directory of the MNIST IDX files that ship with the package."""
    return Path(str(resources.files("dcgan") / "assets" / "mnist"))


# ---------------------------------------------------------------------------------------------
# Pictures: folders and zip archives
# ---------------------------------------------------------------------------------------------
#
# The layout rule, the same for a folder and for a zip archive: pictures directly in the root make it a
# flat set (every picture under the root, in any subfolder, one set with a single class); otherwise
# each subfolder holding pictures is a class (its pictures in any subfolder of it). Hidden files and
# folders (names starting with ".") and `__MACOSX` folders are skipped. A zip archive whose pictures
# all sit in one top-level folder (as `zip -r pictures.zip pictures` makes) is read from that folder.

def cache_dir() -> Path:
    """Where decoded datasets are cached: $DCGAN_CACHE_DIR, else ~/.cache/dcgan."""
    root = os.environ.get("DCGAN_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dcgan")
    return Path(root)


@dataclass(frozen=True)
class ArchivePicture:
    """A picture inside a zip archive: its place in the archive's directory, name, CRC and size (read, never
    extracted)."""

    archive: Path
    index: int
    name: str
    crc: int
    size: int

    def __str__(self) -> str:
        return f"{self.archive}:{_printable(self.name)}"


Picture = Path | ArchivePicture


class PictureListing(NamedTuple):
    """The pictures of a folder or zip archive in decoding order, with their labels, and how they were laid out."""

    classes: tuple[str, ...]
    pictures: list[tuple[Picture, int]]
    flat: bool
    loose: int  # pictures directly in the root (what makes a set flat)


def _printable(name: str) -> str:
    """A name from an archive as one printable line (quoted and escaped when it holds line breaks or controls)."""
    return name if name.isprintable() else repr(name)


def _is_picture(parts: tuple[str, ...]) -> bool:
    """Whether a relative path names a picture: an image extension, and no hidden or `__MACOSX` part."""
    return (bool(parts) and parts[-1].lower().endswith(IMAGE_EXTENSIONS)
            and not any(part.startswith(".") or part == "__MACOSX" for part in parts))


def _lay_out(found: list[tuple[tuple[str, ...], Picture]], root_name: str) -> PictureListing:
    """The layout rule applied to pictures found under a root (each with its path relative to the root)."""
    found = sorted(found, key=lambda item: item[0])
    loose = sum(len(parts) == 1 for parts, _ in found)
    if loose:
        return PictureListing((root_name,), [(picture, 0) for _, picture in found], True, loose)
    classes = sorted({parts[0] for parts, _ in found})
    index = {name: label for label, name in enumerate(classes)}
    return PictureListing(tuple(classes), [(picture, index[parts[0]]) for parts, picture in found], False, 0)


def _list_image_folder(root: Path) -> PictureListing:
    """The pictures of a folder, flat or in class subfolders (see the layout rule above)."""
    found = []
    for path in root.rglob("*"):
        parts = path.relative_to(root).parts
        if _is_picture(parts) and path.is_file():
            found.append((parts, path))
    if not found:
        raise UserError(f"{root}: no images found (files ending in {', '.join(IMAGE_EXTENSIONS)}, directly in it "
                        f"or in its subfolders)")
    return _lay_out(found, root.resolve().name)


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise UserError(f"{path}: not a readable zip archive ({exc})") from None


def _list_zip(path: Path) -> PictureListing:
    """The pictures of a zip archive, flat or in class folders, read from its directory; members that could be a
    zip bomb (an uncompressed size no picture needs) or that name a place outside the archive are refused."""
    with _open_zip(path) as archive:
        members = archive.infolist()
    found = []
    for index, member in enumerate(members):
        parts = PurePosixPath(member.filename).parts
        if member.filename.startswith("/") or ".." in parts:
            raise UserError(f"{path}: member {_printable(member.filename)} names a place outside the archive "
                            f"(an absolute path or ..); such an archive is refused")
        if member.is_dir() or not _is_picture(parts):
            continue
        if member.file_size > MAX_PICTURE_BYTES:
            raise UserError(f"{path}: member {_printable(member.filename)} claims {member.file_size:,} bytes "
                            f"uncompressed, more than a picture may have ({MAX_PICTURE_BYTES:,}); refused unread "
                            f"as a possible zip bomb")
        found.append((parts, ArchivePicture(path, index, member.filename, member.CRC, member.file_size)))
    if not found:
        raise UserError(f"{path}: no images found in the archive (members ending in {', '.join(IMAGE_EXTENSIONS)})")
    tops = {parts[0] for parts, _ in found}
    if len(tops) == 1 and all(len(parts) > 1 for parts, _ in found):
        return _lay_out([(parts[1:], picture) for parts, picture in found], tops.pop())
    return _lay_out(found, path.stem)


_open_archives: dict[Path, zipfile.ZipFile] = {}  # per process: an archive's directory is read once, not per picture


@contextlib.contextmanager
def _closing_archives() -> Iterator[None]:
    """Close the archives this process opened to read pictures, on leaving."""
    try:
        yield
    finally:
        for archive in _open_archives.values():
            archive.close()
        _open_archives.clear()


def _read_member(picture: ArchivePicture) -> bytes:
    """A zip member's bytes, from the archive this process keeps open (each decoding process opens its own)."""
    archive = _open_archives.get(picture.archive)
    if archive is None:
        archive = _open_archives[picture.archive] = _open_zip(picture.archive)
    members = archive.infolist()
    member = members[picture.index] if picture.index < len(members) else None
    if member is None or (member.filename, member.CRC, member.file_size) != (picture.name, picture.crc, picture.size):
        raise UserError(f"{picture.archive}: the archive changed while it was read; run again")
    try:
        return archive.read(member)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise UserError(f"cannot read image {picture}: {exc}") from None


class _PictureBytes(io.BytesIO):
    """A zip member's bytes, which messages (PIL's and ours) name as `archive.zip:folder/picture.png`."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.picture_name = name

    def __str__(self) -> str:
        return self.picture_name

    def __repr__(self) -> str:
        return repr(self.picture_name)


def _picture_file(picture: Picture) -> Path | IO[bytes]:
    """What PIL opens for a picture: its path, or the bytes of a zip member."""
    return picture if isinstance(picture, Path) else _PictureBytes(_read_member(picture), str(picture))


def _folder_key(root: Path, files: list[tuple[Path, int]], channels: int, size: int) -> str:
    digest = hashlib.sha256(f"v2 {channels} {size}".encode())  # v2: centre-cropped, memory-mapped
    for path, label in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _zip_key(path: Path, pictures: list[tuple[ArchivePicture, int]], channels: int, size: int) -> str:
    stat = path.stat()
    digest = hashlib.sha256(f"zip v1 {channels} {size} {path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
                            .encode())
    for picture, label in pictures:
        digest.update(f"{picture.name}\0{label}\0{picture.crc}\0{picture.size}\n".encode())
    return digest.hexdigest()[:32]


def decode_picture(path: Path | IO[bytes], channels: int, size: int) -> np.ndarray:
    """One image (a file, or a zip member's bytes) as uint8 (C, size, size): 16-bit grey scaled to 8 bits, laid on
    white if transparent, converted, its shorter side resized to `size`, centre-cropped."""
    with _open_image(path) as image:
        image = _opaque(_eight_bit(image, path)).convert("L" if channels == 1 else "RGB")
        if image.size != (size, size):
            image = ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


@contextlib.contextmanager
def _open_image(path: Path | IO[bytes]) -> Iterator[Image.Image]:
    """`path` opened by PIL; any failure inside (unreadable, truncated, too many pixels) is a one-line UserError.

    A header claiming more than Image.MAX_IMAGE_PIXELS is refused before any decoding, also up to twice
    the limit, where PIL itself only warns; the process's warning filters are restored on leaving.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                yield image
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise UserError(f"cannot read image {path}: its header claims more than {Image.MAX_IMAGE_PIXELS:,} "
                        f"pixels (PIL's Image.MAX_IMAGE_PIXELS, the limit against decompression bombs)") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"cannot read image {path}: {exc}") from None


def _eight_bit(image: Image.Image, path: Path | IO[bytes]) -> Image.Image:
    """A greyscale picture of 16-bit samples (modes I;16*, I) scaled to 8 bits as value / 257, rounded (0 and
    65535 stay black and white; PIL's own conversion would clamp at 255); other modes unchanged, floats refused."""
    if image.mode == "F":
        raise UserError(f"cannot read image {path}: its pixels are 32-bit floats (mode F), which have no fixed "
                        f"range; save it with 8- or 16-bit pixels")
    if not image.mode.startswith("I"):
        return image
    samples = np.clip(np.asarray(image).astype(np.float64), 0, 65535)  # mode I: 16-bit PNGs in older PIL
    return Image.fromarray(np.round(samples / 257).astype(np.uint8))


def _opaque(image: Image.Image) -> Image.Image:
    """A picture with transparency (icons, cut-outs) laid on white, as a viewer shows it; others unchanged."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image



def _decode_task(task: tuple[Picture, int, int]) -> np.ndarray:
    picture, channels, size = task
    return decode_picture(_picture_file(picture), channels, size)


def folder_channels(files: list[tuple[Picture, int]], *, probes: int = 64) -> int:
    """3 when any of up to `probes` images spread over the folder (or archive) has colour, else 1 (RGB files of
    grey pictures count as grey)."""
    for picture, _ in files[:: max(1, len(files) // probes)]:
        file = _picture_file(picture)
        with _open_image(file) as image:
            image = _eight_bit(image, file)
            if image.mode in ("1", "L", "LA"):
                continue
            small = np.asarray(_opaque(image).convert("RGB").resize((32, 32)), dtype=np.int16)
        if np.abs(small - small.mean(axis=2, keepdims=True)).max() > 2:
            return 3
    return 1


def _describe(listing: PictureListing, source: Path) -> str:
    """What was found, for the log: `1,234 pictures in my_pictures (flat: one set, no classes)`."""
    count = f"{len(listing.pictures):,} picture{'' if len(listing.pictures) == 1 else 's'}"
    if not listing.flat:
        folders = f"{len(listing.classes)} class folder{'' if len(listing.classes) == 1 else 's'}"
        return f"{count} in {folders} of {source}"
    if listing.loose == len(listing.pictures):
        return f"{count} in {source} (flat: one set, no classes)"
    return (f"{count} in {source} (flat, as {listing.loose:,} lie directly in it: one set with its subfolders', "
            f"no classes)")


def load_image_folder(root: str | Path, channels: int, image_size: int, use_cache: bool = True,
                      workers: int | None = None) -> ImageData:
    """Decode the pictures of a folder (flat, or in class subfolders) once into a cache file, which is
    memory-mapped rather than read.

    The cache (`cache_dir()/image_folders`) is keyed by the folder's file names, sizes and times,
    the channels and the size; training gathers its batches from the mapped file by index, so a
    folder larger than memory trains with bounded resident memory. Large folders are decoded by
    `workers` processes (default: every core) with a progress bar. `channels` 0 takes the folder's
    (see `folder_channels`).
    """
    root = Path(root)
    listing = _list_image_folder(root)
    return _load_pictures(listing, root, channels, image_size, use_cache, workers,
                          lambda channels: _folder_key(root, listing.pictures, channels, image_size))


def load_zip(path: str | Path, channels: int, image_size: int, use_cache: bool = True,
             workers: int | None = None) -> ImageData:
    """Decode the pictures of a zip archive (of a flat folder or of class folders), as `load_image_folder` does a
    folder's; the cache is keyed by the archive's path, size and time and its members' names, CRCs and sizes."""
    path = Path(path)
    listing = _list_zip(path)
    return _load_pictures(listing, path, channels, image_size, use_cache, workers,
                          lambda channels: _zip_key(path, listing.pictures, channels, image_size))


def _load_pictures(listing: PictureListing, source: Path, channels: int, image_size: int, use_cache: bool,
                   workers: int | None, cache_key: Callable[[int], str]) -> ImageData:
    """The listed pictures decoded (from the cache when it holds them), as an ImageData."""
    labels = torch.tensor([label for _, label in listing.pictures], dtype=torch.int64)
    found = {"classes": listing.classes, "source": str(source), "description": _describe(listing, source),
             "flat": listing.flat}
    with _closing_archives():
        channels = channels or folder_channels(listing.pictures)
        if not use_cache:
            images = np.stack([_decode_task((picture, channels, image_size)) for picture, _ in listing.pictures])
            return ImageData(torch.from_numpy(images), labels, **found)
        cache_file = cache_dir() / "image_folders" / f"{cache_key(channels)}.npy"
        shape = (len(listing.pictures), channels, image_size, image_size)
        images = _read_cache(cache_file, shape)
        if images is None:
            try:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(cache_file, lambda tmp: _decode_into(tmp, listing.pictures, channels, image_size,
                                                                   source.name, workers))
            except OSError as exc:
                raise UserError(f"cannot write the decoded-image cache {cache_file} ({exc.strerror or exc}); "
                                f"set DCGAN_CACHE_DIR to a writable folder with room for it") from None
            images = _read_cache(cache_file, shape)
    return ImageData(images, labels, mapped=True, **found)


def _read_cache(path: Path, shape: tuple[int, ...]) -> torch.Tensor | None:
    """The cached images, memory-mapped (copy-on-write, so nothing is ever written back); None if unusable."""
    try:
        array = np.load(path, mmap_mode="c")
    except (OSError, ValueError, EOFError):
        return None  # missing or damaged: decoded again, never trusted
    if array.shape != shape or array.dtype != np.uint8:
        return None
    if hasattr(mmap, "MADV_RANDOM"):  # batches are random rows: no read-ahead of their neighbours
        array._mmap.madvise(mmap.MADV_RANDOM)
    return torch.from_numpy(array)


def _decode_into(path: Path, files: list[tuple[Picture, int]], channels: int, size: int, name: str,
                 workers: int | None) -> None:
    """Decode every image into a new .npy file at `path`, in order, with several processes for large folders."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(files), channels, size, size))
    tasks = [(file, channels, size) for file, _ in files]
    workers = min(workers or os.cpu_count() or 1, 16) if len(files) >= PARALLEL_DECODE_FROM else 1
    bar = tqdm(total=len(files), desc=f"decoding {name}", unit="img", leave=False, disable=len(files) < 2000)
    with contextlib.ExitStack() as stack:
        decoded = map(_decode_task, tasks)
        if workers > 1:
            # spawned, not forked: a fork copies locks that the parent's other threads may hold
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(workers))
            decoded = pool.imap(_decode_task, tasks, chunksize=64)
        for index, image in enumerate(decoded):
            out[index] = image
            bar.update(1)
    bar.close()
    out.flush()
    del out


# ---------------------------------------------------------------------------------------------
# torchvision datasets
# ---------------------------------------------------------------------------------------------

def load_torchvision(name: str, split: str, download: bool) -> ImageData:
    """Load a torchvision dataset class by name (e.g. FashionMNIST) into memory."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, name, None)
    if not isinstance(cls, type):
        raise UserError(f"--data torchvision:{name}: torchvision has no dataset named {name!r}")
    root = cache_dir() / "torchvision"
    try:
        dataset = cls(root=str(root), train=(split == "train"), download=download)
    except RuntimeError as exc:
        hint = "" if download else " (add --download to fetch it)"
        raise UserError(f"--data torchvision:{name}: {exc}{hint}") from None
    except TypeError:
        raise UserError(f"--data torchvision:{name}: not a train/test image dataset") from None
    images = torch.as_tensor(np.asarray(dataset.data))
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)
    return ImageData(images.contiguous(), labels, tuple(str(c) for c in dataset.classes), f"torchvision:{name}")


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------

def conform(images: torch.Tensor, channels: int, image_size: int) -> torch.Tensor:
    """Convert uint8 (N, C, H, W) images to the model's channel count and square size."""
    if images.shape[1] != channels:
        if channels == 3:
            images = images.expand(-1, 3, -1, -1)
        else:  # ITU-R 601 luma, as PIL's "L" conversion
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)
    if images.shape[-2:] != (image_size, image_size):
        resized = F.interpolate(images.float(), size=(image_size, image_size), mode="bilinear",
                                antialias=True, align_corners=False)
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return images.contiguous()


def is_picture_source(spec: str) -> bool:
    """Whether `--data` names the user's own pictures (a folder not of IDX files, or a .zip), not MNIST-like data."""
    if spec == "mnist" or spec.startswith("torchvision:"):
        return False
    path = Path(spec)
    if path.is_file():
        return path.suffix.lower() == ".zip"
    try:
        idx_images = f"{IDX_PREFIX['train']}-images-idx3-ubyte"
        return path.is_dir() and not any(p.name.startswith(idx_images) for p in path.iterdir())
    except OSError:
        return False


def load_data(spec: str, *, split: str = "train", channels: int = 1, image_size: int = 28,
              download: bool = False) -> ImageData:
    """Load a dataset named by `--data` and conform it to the model's channels (0: the data's own) and size."""
    if spec == "mnist":
        data = load_idx_dir(bundled_mnist_dir(), split)
    elif spec.startswith("torchvision:"):
        data = load_torchvision(spec.split(":", 1)[1], split, download)
    else:
        path = Path(spec)
        if not path.exists():
            raise UserError(f"--data {spec}: no such file or directory")
        if path.is_file() and path.suffix.lower() == ".zip":
            data = load_zip(path, channels, image_size)
        elif not path.is_dir():
            raise UserError(f"--data {spec}: expected a directory (of pictures, of class subfolders of pictures, or "
                            f"of IDX files), a .zip archive of pictures, mnist or torchvision:<Name>")
        elif not any(path.iterdir()):
            raise UserError(f"--data {spec}: the directory is empty")
        elif any(p.name.startswith(f"{IDX_PREFIX[split]}-images-idx3-ubyte") for p in path.iterdir()):
            data = load_idx_dir(path, split)
        else:
            data = load_image_folder(path, channels, image_size)
    images = conform(data.images, channels or data.images.shape[1], image_size)
    return dataclasses.replace(data, images=images)


def batches_per_epoch(images: int, batch_size: int, world_size: int = 1) -> int:
    """The batches of an epoch of `images`: the full ones, and a trailing one when each rank's share of it
    has two images (batch norm cannot train on one)."""
    return images // batch_size + (1 if (images % batch_size) // world_size > 1 else 0)


def require_a_batch(data: ImageData, *, batch_size: int, world_size: int = 1) -> int:
    """The batches per epoch of `data`; a UserError when there are none (training would wait forever for one).

    A set smaller than the batch is one trailing batch of all of it, so with at least 2 images of the
    batch for each of the `world_size` processes, only a set of fewer than 2 per process has none.
    """
    count = batches_per_epoch(len(data), batch_size, world_size)
    if count:
        return count
    images = f"{len(data)} image{'' if len(data) == 1 else 's'}"
    if world_size == 1:
        raise UserError(f"--data {data.source}: {images}, too few for one batch (batch norm needs at least 2 "
                        f"images in a batch); add images")
    most = len(data) // 2
    advice = f"run at most {most} process{'' if most == 1 else 'es'}, or add images" if most else "add images"
    raise UserError(f"--data {data.source}: {images}, too few for one batch over {world_size} processes (each "
                    f"takes its part of every batch, and batch norm needs at least 2 images in it, so at "
                    f"least {2 * world_size} in all); {advice}")


class ShuffledBatches:
    """Batches drawn by indexing an in-memory uint8 tensor, scaled to [-1, 1] on the fly.

    The order of epoch `e` is a permutation seeded by (seed, e), so a run can resume at any
    (epoch, batch) position without replaying the data. With several processes, `batch_size` is
    the global batch: every rank draws the same permutation and takes its own slice of each batch
    (`rank` of `world_size` equal parts), so each image is used once per epoch across the ranks.
    With `mirror`, each image drawn is flipped left to right with probability 1/2, the flips of
    epoch `e` seeded by (seed, e) too.
    """

    MIRROR_SEED_OFFSET = 2**62  # the flips' seeds, apart from the orders' (seed * 1_000_003 + epoch < 2**53)

    def __init__(self, data: ImageData, *, batch_size: int, seed: int, device: torch.device, rank: int = 0,
                 world_size: int = 1, mirror: bool = False) -> None:
        self.batches_per_epoch = require_a_batch(data, batch_size=batch_size, world_size=world_size)
        # A memory-mapped set stays in its file (on the host); each batch is gathered, then moved.
        self.host = data.mapped and device.type != "cpu"
        self.images = data.images if self.host else data.images.to(device)
        self.labels = data.labels.to(device)
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.mirror = mirror

    def order(self, epoch: int) -> torch.Tensor:
        """The permutation of sample indices used in `epoch`."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.images.shape[0], generator=generator).to(self.device)

    def flips(self, epoch: int) -> torch.Tensor:
        """Whether each place of `epoch`'s order is drawn mirrored (`mirror`): (N,) bool, half of them on average."""
        generator = torch.Generator().manual_seed(self.MIRROR_SEED_OFFSET + self.seed * 1_000_003 + epoch)
        return (torch.rand(self.images.shape[0], generator=generator) < 0.5).to(self.device)

    def indices(self, order: torch.Tensor, batch: int) -> torch.Tensor:
        """This rank's indices of global batch `batch` in `order` (a trailing batch is split as evenly as it goes)."""
        index = order[batch * self.batch_size:(batch + 1) * self.batch_size]
        return index if self.world_size == 1 else index.tensor_split(self.world_size)[self.rank]

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (images in [-1, 1] float32, labels) for `epoch`, from batch `start_batch` on."""
        order = self.order(epoch)
        flips = self.flips(epoch) if self.mirror else None
        for b in range(start_batch, self.batches_per_epoch):
            index = self.indices(order, b)
            images = self.images[index.cpu()].to(self.device, non_blocking=True) if self.host else self.images[index]
            images = images.float().div_(127.5).sub_(1.0)
            if flips is not None:
                images = torch.where(self.indices(flips, b).view(-1, 1, 1, 1), images.flip(3), images)
            yield images, self.labels[index]


def export_png(data_dir: Path, out: str | Path) -> int:
    """Write the IDX files of `data_dir` as the tutorial's `training|testing/<digit>/<index>.png`."""
    out = Path(out)
    total = 0
    splits = {folder: load_idx_dir(data_dir, split) for folder, split in (("training", "train"), ("testing", "test"))}
    for folder, data in splits.items():  # both read first: a missing split writes nothing
        for label in range(len(data.classes)):
            (out / folder / str(label)).mkdir(parents=True, exist_ok=True)
        for index in tqdm(range(len(data)), desc=f"writing {folder}", unit="img"):
            label = int(data.labels[index])
            Image.fromarray(data.images[index, 0].numpy()).save(out / folder / str(label) / f"{index}.png")
        total += len(data)
    return total
