"""IDX parsing, every data source, the cache and the batch stream."""

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_idx
from dcgan import data as data_module
from dcgan.data import ShuffledBatches, conform, export_png, load_data, read_idx
from dcgan.errors import UserError


def test_read_idx_plain_and_gzip_give_the_same_array(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    plain = read_idx(write_idx(tmp_path / "a-idx3-ubyte", array))
    packed = read_idx(write_idx(tmp_path / "a-idx3-ubyte.gz", array, compress=True))
    np.testing.assert_array_equal(plain, array)
    np.testing.assert_array_equal(packed, array)


def test_bundled_mnist_has_the_canonical_sizes_and_labels() -> None:
    train, test = load_data("mnist"), load_data("mnist", split="test")
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 1, 28, 28)
    assert train.labels[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first MNIST labels
    assert train.classes == tuple(str(d) for d in range(10))
    assert train.images.max() == 255 and train.images[0, 0, 0, 0] == 0  # white ink on black


@pytest.mark.parametrize(("raw", "message"), [
    (b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00\x02" + b"\x00" * 7, "truncated"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated"),
    (b"PK\x03\x04rest", "not an IDX file"),
    (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00", "element type"),
])
def test_read_idx_rejects_bad_files_with_the_path(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(raw)
    with pytest.raises(UserError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_directory_source(idx_dir: Path, mnist_subset: dict) -> None:
    data = load_data(str(idx_dir))
    assert data.images.shape == (512, 1, 28, 28)
    np.testing.assert_array_equal(data.images[:, 0].numpy(), mnist_subset["train_images"])
    assert load_data(str(idx_dir), split="test").images.shape == (256, 1, 28, 28)


def test_idx_directory_with_mismatched_counts_is_refused(tmp_path: Path, mnist_subset: dict) -> None:
    write_idx(tmp_path / "train-images-idx3-ubyte", mnist_subset["train_images"][:10])
    write_idx(tmp_path / "train-labels-idx1-ubyte", mnist_subset["train_labels"][:9])
    with pytest.raises(UserError, match="10 images but 9 labels"):
        load_data(str(tmp_path))


def test_image_folder_source_converts_mode_and_size(image_folder: Path, mnist_subset: dict) -> None:
    data = load_data(str(image_folder))
    assert data.images.shape == (100, 1, 28, 28) and data.images.dtype == torch.uint8
    assert data.classes == tuple(str(d) for d in range(10))
    assert torch.bincount(data.labels).tolist() == [10] * 10
    # RGB PNGs of grey digits come back as the original grey values
    first_zero = mnist_subset["train_images"][list(mnist_subset["train_labels"]).index(0)]
    np.testing.assert_array_equal(data.images[0, 0].numpy(), first_zero)
    rgb = load_data(str(image_folder), channels=3, image_size=32)
    assert rgb.images.shape == (100, 3, 32, 32)


def test_image_folder_is_decoded_once_then_read_from_the_cache(image_folder: Path, isolated_cache: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_data(str(image_folder))
    assert len(list(isolated_cache.rglob("*.npy"))) == 1
    monkeypatch.setattr("dcgan.data.decode_picture", lambda *a: pytest.fail("decoded again despite the cache"))
    second = load_data(str(image_folder))
    assert torch.equal(first.images, second.images)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.slow
def test_an_interrupted_decode_leaves_no_cache_and_no_partial_file(image_folder: Path, isolated_cache: Path,
                                                                   monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    monkeypatch.setattr(data_module, "PARALLEL_DECODE_FROM", 50)  # decode this 100-image folder in a pool
    real_decode, calls = data_module.decode_picture, []

    def decode_then_stop(path, channels, size):
        calls.append(path)
        if len(calls) == 60:
            raise KeyboardInterrupt  # the user presses Ctrl-C half-way
        return real_decode(path, channels, size)

    monkeypatch.setattr(data_module, "decode_picture", decode_then_stop)
    with pytest.raises(KeyboardInterrupt):
        data_module.load_image_folder(image_folder, 1, 28, workers=1)
    assert [p for p in isolated_cache.rglob("*") if p.is_file()] == []
    monkeypatch.setattr(data_module, "decode_picture", real_decode)
    decoded = data_module.load_image_folder(image_folder, 1, 28, workers=workers)
    assert decoded.mapped and len(decoded) == 100 and len(list(isolated_cache.rglob("*.npy"))) == 1
    assert torch.equal(decoded.images, data_module.load_image_folder(image_folder, 1, 28, use_cache=False).images)


def test_image_folder_cache_follows_the_folder_contents(image_folder: Path, isolated_cache: Path) -> None:
    load_data(str(image_folder))
    (image_folder / "3" / "1.png").unlink()
    assert len(load_data(str(image_folder))) == 99
    assert len(list(isolated_cache.rglob("*.npy"))) == 2


def test_conform_rgb_to_grey_and_resize() -> None:
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    images[:, 0] = 255  # pure red
    grey = conform(images, 1, 4)
    assert grey.shape == (2, 1, 4, 4)
    assert int(grey[0, 0, 0, 0]) == round(0.299 * 255)


def test_batches_cover_an_epoch_once_scaled_to_unit_range(idx_dir: Path) -> None:
    data = load_data(str(idx_dir))
    batches = ShuffledBatches(data, batch_size=100, seed=0, device=torch.device("cpu"))
    assert batches.batches_per_epoch == 6  # 5 full batches and a partial one of 12
    seen = list(batches.epoch(0))
    assert [len(x) for x, _ in seen] == [100] * 5 + [12]
    images = torch.cat([x for x, _ in seen])
    assert images.min() == -1 and images.max() == 1
    restored = ((images + 1) * 127.5).round().to(torch.uint8)
    assert sorted(restored.flatten(1).sum(1).tolist()) == sorted(data.images.flatten(1).sum(1).tolist())


def test_batch_order_depends_only_on_seed_and_epoch(idx_dir: Path) -> None:
    data = load_data(str(idx_dir))
    a = ShuffledBatches(data, batch_size=64, seed=1, device=torch.device("cpu"))
    b = ShuffledBatches(data, batch_size=64, seed=1, device=torch.device("cpu"))
    assert torch.equal(a.order(3), b.order(3))
    assert not torch.equal(a.order(3), a.order(4))
    resumed = next(b.epoch(3, start_batch=2))[0]
    assert torch.equal(resumed, list(a.epoch(3))[2][0])


def test_export_png_writes_the_tutorial_layout(idx_dir: Path, tmp_path: Path, mnist_subset: dict) -> None:
    out = tmp_path / "png"
    assert export_png(idx_dir, out) == 768
    assert sorted(p.name for p in (out / "training").iterdir()) == [str(d) for d in range(10)]
    label = int(mnist_subset["train_labels"][0])
    from PIL import Image
    with Image.open(out / "training" / str(label) / "0.png") as image:
        assert image.mode == "L"
        np.testing.assert_array_equal(np.asarray(image), mnist_subset["train_images"][0])
    assert len(list((out / "testing").rglob("*.png"))) == 256


def test_torchvision_source_reads_an_existing_copy_without_download(idx_dir: Path, isolated_cache: Path) -> None:
    raw = isolated_cache / "torchvision" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in idx_dir.iterdir():
        (raw / path.name).write_bytes(path.read_bytes())
    data = load_data("torchvision:MNIST")
    assert data.images.shape == (512, 1, 28, 28)
    assert data.source == "torchvision:MNIST"


def test_torchvision_source_errors_are_clear() -> None:
    with pytest.raises(UserError, match="--download"):
        load_data("torchvision:FashionMNIST")
    with pytest.raises(UserError, match="no dataset named 'NoSuchSet'"):
        load_data("torchvision:NoSuchSet")
