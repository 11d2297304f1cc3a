"""Folders of pictures, flat or in class subfolders, and zip archives of either."""

from __future__ import annotations

import struct
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, snapshot
from dcgan import data as data_module
from dcgan.checkpoint import load_checkpoint
from dcgan.config import FOLDER_MINUTES, FileValues, TrainConfig, resolve_config
from dcgan.data import load_data
from dcgan.errors import UserError
from dcgan.networks import DEFAULT_D_WIDTH, SMALL_SET_D_WIDTH, SMALL_SET_IMAGES, d_width_for
from dcgan.training.prepare import new_config

pytestmark = pytest.mark.usefixtures("one_thread")


def pictures(root: Path, names: list[str], *, seed: int = 0) -> Path:
    """Small colour PNGs and JPEGs of noise (of a few sizes), at `root/name` for each name."""
    rng = np.random.default_rng(seed)
    for index, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (10 + index % 3, 12, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / name)
    return root


def flat_folder(root: Path) -> Path:
    return pictures(root, ["b.png", "a.jpg", "c.png", "d.png", "e.png", "f.png"])


def class_folder(root: Path) -> Path:
    return pictures(root, ["dogs/2.png", "cats/1.png", "cats/sub/3.png", "dogs/1.jpg", "birds/a.png", "cats/0.png"])


def zip_of(folder: Path, archive: Path, *, top: str | None = None, extra: dict[str, bytes] | None = None) -> Path:
    """`folder` as a zip archive (inside a `top` folder, as `zip -r` makes it), with folder entries and `extra`."""
    prefix = f"{top}/" if top else ""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for path in sorted(folder.rglob("*"), reverse=True):  # an order other than the one read
            name = prefix + path.relative_to(folder).as_posix()
            if path.is_dir():
                out.writestr(name + "/", b"")
            else:
                out.write(path, name)
        for name, content in (extra or {}).items():
            out.writestr(name, content)
    return archive


def refused_in_one_line(result: tuple[int, str, str], *expected: str) -> str:
    code, _, err = result
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("dcgan: error: "), err
    assert all(part in lines[0] for part in expected), err
    return lines[0]


# ---------------------------------------------------------------------------------------------
# The layout rule
# ---------------------------------------------------------------------------------------------

def test_a_flat_folder_trains_end_to_end(run_cli, tmp_path: Path) -> None:
    folder = flat_folder(tmp_path / "my_pictures")
    code, out, err = run_cli("train", "--data", folder, *TINY, "--batch-size", "4", "--steps", "2",
                             "--out", tmp_path / "run")
    assert code == 0, err
    assert out.startswith("completed: step=2 ")
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_pictures_directly_in_the_folder_make_one_set_of_everything_under_it(tmp_path: Path) -> None:
    folder = flat_folder(tmp_path / "my_pictures")
    data = load_data(str(folder), channels=3, image_size=8)
    assert len(data) == 6 and data.flat and data.classes == ("my_pictures",)
    assert data.labels.tolist() == [0] * 6
    assert data.description == f"6 pictures in {folder} (flat: one set, no classes)"
    pictures(folder, ["holiday/x.png", "holiday/y.png"], seed=1)  # subfolders of a flat folder are not classes
    data = load_data(str(folder), channels=3, image_size=8)
    assert len(data) == 8 and data.flat and data.labels.tolist() == [0] * 8
    assert data.description == (f"8 pictures in {folder} (flat, as 6 lie directly in it: one set with its "
                                 f"subfolders', no classes)")


def test_without_pictures_directly_in_it_each_subfolder_is_a_class(tmp_path: Path) -> None:
    folder = class_folder(tmp_path / "animals")
    (folder / "notes").mkdir()
    (folder / "notes" / "readme.txt").write_text("not a picture")  # a subfolder without pictures is no class
    (folder / "README.txt").write_text("nor is a file beside the classes")
    pictures(folder, [".thumbnails/cats.png", "cats/._0.png", "__MACOSX/cats/._1.png"], seed=2)  # skipped
    data = load_data(str(folder), channels=3, image_size=8)
    assert not data.flat and data.classes == ("birds", "cats", "dogs")
    assert data.labels.tolist() == [0, 1, 1, 1, 2, 2]
    assert data.description == f"6 pictures in 3 class folders of {folder}"


def test_conditional_training_on_a_flat_folder_is_refused_in_one_line(run_cli, tmp_path: Path) -> None:
    folder = flat_folder(tmp_path / "my_pictures")
    before = snapshot(tmp_path)
    code, _, err = run_cli("train", "--data", folder, *TINY, "--conditional", "--steps", "1", "--out", tmp_path / "run")
    *found, refusal = err.strip().splitlines()  # what the data holds is logged before the refusal
    assert code == 2 and "Traceback" not in err and not any("error" in line for line in found), err
    assert refusal.startswith(f"dcgan: error: --conditional: {folder} ") and "has no class subfolders" in refusal, err
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()


def test_a_data_path_that_is_neither_a_folder_nor_a_zip_names_what_is_accepted(run_cli, tmp_path: Path) -> None:
    archive = tmp_path / "pictures.tar"
    archive.write_bytes(b"not read")
    refused_in_one_line(run_cli("train", "--data", archive, *TINY, "--steps", "1", "--out", tmp_path / "run"),
                        f"--data {archive}: expected a directory", "a .zip archive of pictures", "torchvision:")


# ---------------------------------------------------------------------------------------------
# Zip archives
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["flat", "classes"])
def test_a_zip_loads_the_same_images_as_the_folder_it_was_made_from(tmp_path: Path, layout: str) -> None:
    folder = (flat_folder if layout == "flat" else class_folder)(tmp_path / "pictures")
    junk = {"__MACOSX/pictures/._b.png": b"resource fork", "pictures/.DS_Store": b"\0", "pictures/notes.txt": b"hi"}
    top = "pictures" if layout == "classes" else None  # `zip -r pictures.zip pictures` puts one folder on top
    archive = zip_of(folder, tmp_path / "pictures.zip", top=top, extra=junk if top else None)
    from_folder = load_data(str(folder), channels=3, image_size=8)
    from_zip = load_data(str(archive), channels=3, image_size=8)
    assert from_zip.images.dtype == torch.uint8 and from_zip.mapped
    np.testing.assert_array_equal(from_zip.images.numpy(), from_folder.images.numpy())
    assert torch.equal(from_zip.labels, from_folder.labels)
    assert (from_zip.classes, from_zip.flat) == (from_folder.classes, from_folder.flat)
    assert from_zip.source == str(archive)
    expected = "6 pictures in 3 class folders of" if top else "6 pictures in"
    assert from_zip.description.startswith(f"{expected} {archive}")


def test_a_zip_trains_end_to_end(run_cli, tmp_path: Path) -> None:
    archive = zip_of(flat_folder(tmp_path / "pictures"), tmp_path / "pictures.zip")
    code, out, err = run_cli("train", "--data", archive, *TINY, "--batch-size", "4", "--steps", "2",
                             "--out", tmp_path / "run")
    assert code == 0, err
    assert out.startswith("completed: step=2 ")


def test_a_zip_is_decoded_once_then_read_from_the_cache_until_it_changes(tmp_path: Path, isolated_cache: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    folder = flat_folder(tmp_path / "pictures")
    archive = zip_of(folder, tmp_path / "pictures.zip")
    first = load_data(str(archive), channels=3, image_size=8)
    real_decode = data_module.decode_picture
    monkeypatch.setattr(data_module, "decode_picture", lambda *a: pytest.fail("decoded again despite the cache"))
    assert torch.equal(load_data(str(archive), channels=3, image_size=8).images, first.images)
    monkeypatch.setattr(data_module, "decode_picture", real_decode)
    (folder / "f.png").unlink()
    zip_of(folder, archive)
    assert len(load_data(str(archive), channels=3, image_size=8)) == 5
    assert len(list(isolated_cache.rglob("*.npy"))) == 2


@pytest.mark.slow
def test_a_zip_decodes_in_parallel_processes_each_opening_the_archive(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    archive = zip_of(class_folder(tmp_path / "pictures"), tmp_path / "pictures.zip")
    monkeypatch.setattr(data_module, "PARALLEL_DECODE_FROM", 2)
    parallel = data_module.load_zip(archive, 3, 8, workers=2)
    serial = data_module.load_zip(archive, 3, 8, use_cache=False)
    assert parallel.mapped and len(parallel) == 6
    np.testing.assert_array_equal(parallel.images.numpy(), serial.images.numpy())


def zip_claiming_a_huge_member(tmp_path: Path) -> Path:
    """A zip of one small picture whose directory says it unpacks to 2 GiB."""
    archive = zip_of(pictures(tmp_path / "one", ["bomb.png"]), tmp_path / "data.zip")
    raw = bytearray(archive.read_bytes())
    entry = raw.index(b"PK\x01\x02")  # the central directory's entry: uncompressed size at offset 24
    raw[entry + 24:entry + 28] = struct.pack("<I", 2**31)
    archive.write_bytes(bytes(raw))
    return archive


def zip_with(tmp_path: Path, members: dict[str, bytes]) -> Path:
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for name, content in members.items():
            out.writestr(name, content)
    return archive


def corrupt_zip(tmp_path: Path) -> Path:
    """A file named .zip that holds the first bytes of a zip archive and nothing more."""
    (tmp_path / "data.zip").write_bytes(b"PK\x03\x04 cut short")
    return tmp_path / "data.zip"


BAD_ZIPS = {
    "corrupt": (corrupt_zip, "data.zip: not a readable zip archive"),
    "empty": (lambda tmp_path: zip_with(tmp_path, {}), "data.zip: no images found in the archive"),
    "huge-member": (zip_claiming_a_huge_member, "data.zip: member bomb.png claims 2,147,483,648 bytes"),
    "no-pictures": (lambda tmp_path: zip_with(tmp_path, {"a/notes.txt": b"words", "b.csv": b"1,2"}),
                    "data.zip: no images found in the archive"),
    "not-really-pictures": (lambda tmp_path: zip_with(tmp_path, {"a.png": b"\x89PNG not really", "b.png": b"x"}),
                            "cannot read image {tmp_path}/data.zip:a.png"),
    "outside-names": (lambda tmp_path: zip_with(tmp_path, {"../up.png": b"x"}),
                      "data.zip: member ../up.png names a place outside the archive"),
}


@pytest.mark.parametrize("case", BAD_ZIPS)
def test_a_bad_zip_is_refused_in_one_line_changing_nothing(run_cli, tmp_path: Path, case: str) -> None:
    make, expected = BAD_ZIPS[case]
    archive = make(tmp_path)
    before = snapshot(tmp_path)
    refused_in_one_line(run_cli("train", "--data", archive, *TINY, "--steps", "1", "--out", tmp_path / "run"),
                        expected.format(tmp_path=tmp_path))
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()


def test_a_huge_member_is_refused_before_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = zip_claiming_a_huge_member(tmp_path)
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *a, **k: pytest.fail("a member was read"))
    with pytest.raises(UserError, match="refused unread as a possible zip bomb"):
        load_data(str(archive), channels=3, image_size=8)


SMALL = ("--latent-dim", "4", "--quiet", "--sample-every", "0", "--steps", "2")


def preset_of(run: Path) -> tuple[str, int]:
    config = tomllib.loads((run / "config.toml").read_text())
    return config["preset"], config["image_size"]


def test_a_picture_folder_without_a_preset_trains_with_the_folder_preset(run_cli, tmp_path: Path) -> None:
    folder = flat_folder(tmp_path / "my_pictures")
    code, _, err = run_cli("train", "--data", folder, *SMALL, "--out", tmp_path / "run")
    assert code == 0, err
    assert preset_of(tmp_path / "run") == ("folder", 64)  # the preset's own size
    config = tomllib.loads((tmp_path / "run" / "config.toml").read_text())
    assert (config["arch"], config["ada_target"]) == ("dcgan", 0.45)
    assert "preset: folder (" in err and "--preset names another" in err
    assert "execution: cpu, " in err and ", convolutions " in err  # the dcgan networks' layers may run as products
    # a set of six pictures gets the narrower discriminator, recorded for a resume or a later --init-from
    assert config["d_width"] == SMALL_SET_D_WIDTH and f"--d-width {SMALL_SET_D_WIDTH}: " in err
    first_conv = next(v for v in load_checkpoint(tmp_path / "run")["discriminator"].values() if v.dim() == 4)
    assert first_conv.shape[0] == SMALL_SET_D_WIDTH


@pytest.mark.parametrize(("arch", "d_width", "images", "expected"), [
    ("dcgan", 0, 1, SMALL_SET_D_WIDTH), ("dcgan", 0, SMALL_SET_IMAGES, SMALL_SET_D_WIDTH),
    ("dcgan", 0, SMALL_SET_IMAGES + 1, DEFAULT_D_WIDTH), ("tutorial", 0, 10, DEFAULT_D_WIDTH),
    ("dcgan", 48, 10, 48), ("dcgan", 48, 60_000, 48)])
def test_a_discriminator_width_left_to_the_data_is_narrower_on_a_small_set(arch, d_width, images, expected):
    assert d_width_for(TrainConfig(arch=arch, image_size=64, d_width=d_width), images) == expected


def test_a_picture_folder_without_a_length_trains_for_the_folder_minutes(tmp_path: Path) -> None:
    folder = str(flat_folder(tmp_path / "my_pictures"))
    config, notes = new_config({}, {"data": folder})
    assert (config.preset, config.image_size, config.latent_dim, config.mode_seeking) == ("folder", 64, 64, 1.5)
    assert (config.epochs, config.steps, config.time_limit) == (0, 0, FOLDER_MINUTES)  # until the time runs out
    assert any(note.startswith(f"length: {FOLDER_MINUTES:g} minutes") for note in notes)
    named, notes = new_config({}, {"data": folder, "preset": "dcgan", "steps": 5})
    assert (named.preset, named.steps, named.time_limit) == ("dcgan", 5, 0) and notes == ()
    from_file, _ = new_config(FileValues({"epochs": 3}, path=tmp_path / "my.toml"), {"data": folder, "preset": "dcgan"})
    assert (from_file.epochs, from_file.time_limit) == (3, 0)
    assert new_config({}, {"data": "mnist"}) == (resolve_config({}, {}), ())  # MNIST-like data keeps its one epoch


def test_the_log_names_the_chosen_length_only_once_the_data_has_loaded(run_cli, tmp_path: Path) -> None:
    code, _, err = run_cli("train", "--data", flat_folder(tmp_path / "pictures"), *TINY, "--out", tmp_path / "run",
                           "--time-limit", "0.01")
    assert code == 0 and "length:" not in err, err  # named: nothing to say
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("train", "--data", tmp_path / "empty", *TINY, "--out", tmp_path / "refused")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "length:" not in err, err


def test_a_zip_of_pictures_gets_the_folder_preset_too(run_cli, tmp_path: Path) -> None:
    archive = zip_of(class_folder(tmp_path / "animals"), tmp_path / "animals.zip")
    code, _, err = run_cli("train", "--data", archive, *SMALL, "--image-size", "32", "--g-width", "4",
                           "--d-width", "4", "--out", tmp_path / "run")
    assert code == 0, err
    assert preset_of(tmp_path / "run") == ("folder", 32)  # a flag still wins over the preset


def test_a_named_preset_or_mnist_like_data_keeps_its_preset(run_cli, tmp_path: Path, idx_dir: Path) -> None:
    folder = flat_folder(tmp_path / "my_pictures")
    code, _, err = run_cli("train", "--data", folder, "--preset", "tutorial", *SMALL, "--image-size", "8",
                           "--out", tmp_path / "named")
    assert code == 0 and preset_of(tmp_path / "named")[0] == "tutorial" and "preset: folder" not in err, err
    (tmp_path / "my.toml").write_text('preset = "default"\n')
    code, _, err = run_cli("train", "--data", folder, "--config", tmp_path / "my.toml", *SMALL, "--image-size", "8",
                           "--out", tmp_path / "from-file")
    assert code == 0 and preset_of(tmp_path / "from-file")[0] == "default", err
    code, _, err = run_cli("train", "--data", idx_dir, *SMALL, "--image-size", "8", "--out", tmp_path / "idx-run")
    assert code == 0 and preset_of(tmp_path / "idx-run")[0] == "default" and "preset: folder" not in err, err
