"""The two training steps, the loss meter and a short CPU training run."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dcgan.plots import read_metrics
from dcgan.config import TrainConfig
from dcgan import device
from dcgan.device import (autocast_for, describe_execution, resolve_convolutions, resolve_memory_format,
                          resolve_precision)
from dcgan.data import ImageData, ShuffledBatches
from dcgan.training import loop as loop_module
from dcgan.training.loop import WARMUP_STEPS, Clock, Logger, TrainingLoop, train
from dcgan.training.rundir import RunDirectory
from dcgan.training.state import Position
from dcgan.training.step import TrainingStep, build_gan, learning_rates

CPU = torch.device("cpu")


def _gan(**changes):
    torch.manual_seed(0)
    return build_gan(TrainConfig(device="cpu", **changes), CPU)


def test_discriminator_step_updates_only_d_and_reports_the_bce_loss() -> None:
    gan = _gan()
    # With D's last layer zeroed, D outputs 0.5 everywhere: L_D = ½(log 2 + log 2) = log 2.
    torch.nn.init.zeros_(gan.discriminator.classify.weight)
    torch.nn.init.zeros_(gan.discriminator.classify.bias)
    g_before = [p.clone() for p in gan.generator.parameters()]
    d_before = gan.discriminator.classify.weight.clone()
    real = torch.rand(8, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        fake = gan.generator(torch.randn(8, 16))
    d_loss, d_real, d_fake = TrainingStep(gan, latent_dim=16).discriminator_step(real, fake)
    assert d_loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert d_real.item() == pytest.approx(0.5) and d_fake.item() == pytest.approx(0.5)
    assert all(torch.equal(a, b) for a, b in zip(g_before, gan.generator.parameters()))
    assert not torch.equal(d_before, gan.discriminator.classify.weight)


def test_generator_step_updates_only_g_and_leaves_d_trainable() -> None:
    gan = _gan()
    torch.nn.init.zeros_(gan.discriminator.classify.weight)
    torch.nn.init.zeros_(gan.discriminator.classify.bias)
    d_before = [p.clone() for p in gan.discriminator.parameters()]
    g_loss = TrainingStep(gan, latent_dim=16).generator_step(gan.generator(torch.randn(8, 16)))
    assert g_loss.item() == pytest.approx(math.log(2), abs=1e-6)  # -log 0.5
    assert all(torch.equal(a, b) for a, b in zip(d_before, gan.discriminator.parameters()))
    assert all(p.requires_grad for p in gan.discriminator.parameters())
    assert all(p.grad is None for p in gan.discriminator.parameters())


def losses_over_steps(precision: str, channels_last: bool, *, steps: int = 4, reuse_fake: bool = False
                      ) -> torch.Tensor:
    """(d_loss, D(x), D(G(z)), g_loss) of each of `steps` steps from the same weights, data and noise."""
    gan = _gan(precision=precision, memory_format="channels-last" if channels_last else "contiguous")
    step = TrainingStep(gan, latent_dim=16, reuse_fake=reuse_fake, autocast=autocast_for(precision, CPU))
    real = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    if channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
    torch.manual_seed(2)  # the steps' noise and dropout
    rows = torch.stack([torch.stack(step(real)) for _ in range(steps)])
    assert all(p.dtype == torch.float32 for p in gan.generator.parameters())  # fp32 master weights
    return rows


# Over the 4 steps G's loss moves from about 1.0 to 2.3; rounding differences grow step by step
# (measured at most 1.2e-3 for fp32 channels-last and 0.013 for bf16).
@pytest.mark.parametrize(("precision", "channels_last", "tolerance"), [("fp32", True, 5e-3), ("bf16", False, 0.04),
                                                                       ("bf16", True, 0.04)])
@pytest.mark.parametrize("reuse_fake", [False, True])
@pytest.mark.slow
def test_each_precision_and_memory_format_trains_like_fp32(precision: str, channels_last: bool, tolerance: float,
                                                           reuse_fake: bool) -> None:
    reference = losses_over_steps("fp32", False, reuse_fake=reuse_fake)
    losses = losses_over_steps(precision, channels_last, reuse_fake=reuse_fake)
    torch.testing.assert_close(losses, reference, rtol=tolerance, atol=tolerance)


def test_reuse_fake_trains_g_on_the_batch_d_was_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    gan = _gan()
    forward = gan.generator.forward
    monkeypatch.setattr(gan.generator, "forward", lambda z, labels=None: calls.append(z) or forward(z, labels))
    real = torch.rand(8, 1, 28, 28) * 2 - 1
    TrainingStep(gan, latent_dim=16, reuse_fake=False)(real)
    assert len(calls) == 2 and not torch.equal(calls[0], calls[1])  # fresh noise for each step
    calls.clear()
    g_before = [p.clone() for p in gan.generator.parameters()]
    TrainingStep(gan, latent_dim=16, reuse_fake=True)(real)
    assert len(calls) == 1
    assert any(not torch.equal(a, b) for a, b in zip(g_before, gan.generator.parameters()))  # G still learns


@pytest.mark.parametrize(("native_bf16", "expected"), [(True, "bf16"), (False, "fp32")])
def test_precision_auto_is_bf16_exactly_where_the_hardware_has_it(monkeypatch: pytest.MonkeyPatch,
                                                                  native_bf16: bool, expected: str) -> None:
    monkeypatch.setattr(device, "bf16_supported", lambda _: native_bf16)
    assert resolve_precision("auto", CPU) == expected
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"


@pytest.mark.parametrize(("amx", "precision", "device_type", "expected"), [
    (True, "bf16", "cpu", torch.channels_last), (True, "fp32", "cpu", torch.contiguous_format),
    (False, "bf16", "cpu", torch.contiguous_format), (True, "bf16", "cuda", torch.contiguous_format)])
def test_memory_format_auto_is_channels_last_for_bf16_on_a_cpu_with_amx(
        monkeypatch: pytest.MonkeyPatch, amx: bool, precision: str, device_type: str,
        expected: torch.memory_format) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": amx, "avx512_bf16": True})
    monkeypatch.setattr(device, "bf16_supported", lambda _: True)
    where = torch.device(device_type)
    assert resolve_memory_format("auto", precision, where) == expected
    assert resolve_memory_format("auto", "auto", where) == (torch.channels_last if amx and device_type == "cpu"
                                                           else torch.contiguous_format)
    assert resolve_memory_format("channels-last", precision, where) == torch.channels_last
    assert resolve_memory_format("contiguous", precision, where) == torch.contiguous_format


@pytest.mark.parametrize(("native_bf16", "precision", "device_type", "r1", "expected"), [
    (False, "auto", "cpu", 0.0, "matmul"), (False, "fp32", "cpu", 0.0, "matmul"), (False, "fp32", "cpu", 1.0, "native"),
    (False, "bf16", "cpu", 0.0, "native"), (True, "auto", "cpu", 0.0, "native"), (True, "fp32", "cpu", 0.0, "native"),
    (False, "fp32", "cuda", 0.0, "native")])
def test_convolutions_auto_is_matmul_for_fp32_on_a_cpu_without_bf16_kernels(
        monkeypatch: pytest.MonkeyPatch, native_bf16: bool, precision: str, device_type: str, r1: float,
        expected: str) -> None:
    monkeypatch.setattr(device, "bf16_supported", lambda _: native_bf16)
    where = torch.device(device_type)
    assert resolve_convolutions("auto", precision, where, r1=r1) == expected
    assert resolve_convolutions("native", precision, where) == "native"
    assert resolve_convolutions("matmul", precision, where) == "matmul"


@pytest.mark.parametrize(("native_bf16", "precision", "convolutions"), [
    (True, "bf16 (auto: fast bf16 on this cpu)", "native"), (False, "fp32 (auto: no fast bf16 on this cpu)", "matmul")])
def test_the_execution_line_says_what_each_auto_setting_became(
        monkeypatch: pytest.MonkeyPatch, native_bf16: bool, precision: str, convolutions: str) -> None:
    monkeypatch.setattr(device, "bf16_supported", lambda _: native_bf16)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": False})
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert describe_execution(CPU, precision="auto", memory_format="auto", convolutions="auto") == (
        f"execution: cpu, 2 threads, precision {precision}, memory contiguous (auto), "
        f"convolutions {convolutions} (auto)")
    # settings the user named are shown as they are; networks without matmul layers have no convolutions part
    assert describe_execution(CPU, precision="fp32", memory_format="channels-last", convolutions="native") == (
        "execution: cpu, 2 threads, precision fp32, memory channels-last, convolutions native")
    assert describe_execution(CPU, precision="bf16", memory_format="contiguous", convolutions=None).endswith(
        "precision bf16, memory contiguous")


@pytest.mark.parametrize(("memory_format", "channels_last"), [("channels-last", True), ("contiguous", False)])
def test_the_networks_are_built_in_the_memory_format(memory_format: str, channels_last: bool) -> None:
    gan = _gan(arch="dcgan", image_size=32, memory_format=memory_format)
    convolutions = [module.weight for network in (gan.generator, gan.discriminator) for module in network.modules()
                    if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(convolutions) >= 6
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert all(weight.is_contiguous(memory_format=layout) for weight in convolutions)
    assert any(weight.is_contiguous() != channels_last for weight in convolutions)


def test_bf16_support_is_read_from_the_device() -> None:
    assert device.bf16_supported(torch.device("mps")) is False
    assert device.bf16_supported(CPU) == (torch.backends.mkldnn.is_available()
                                          and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_large_batch_learning_rates() -> None:
    assert learning_rates(TrainConfig(batch_size=128)) == (2e-4, 1e-3)
    assert learning_rates(TrainConfig(batch_size=128, lr_scaling="linear")) == pytest.approx((8e-4, 4e-3))
    assert learning_rates(TrainConfig(batch_size=128, lr_scaling="sqrt")) == pytest.approx((4e-4, 2e-3))


def test_logger_writes_the_same_means_as_per_step_logging(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path / "run")
    run.start(TrainConfig())

    class Bar:
        def set_postfix(self, **values):
            self.postfix = values

    logger = Logger(run, Bar(), batch_size=32, device=CPU)
    logger.start_window(Position())
    values = torch.rand(7, 4)  # d_loss, D(x), D(G(z)), g_loss per step
    for row in values:
        logger.add(*row)
    assert logger.count == 7
    logger.write(Position(step=7, train_seconds=2.0), {})
    (row,) = read_metrics(run.metrics_csv)
    means = values.double().mean(0)
    assert [row[k] for k in ("d_loss", "d_real", "d_fake", "g_loss")] == pytest.approx(means.tolist(), rel=1e-5)
    assert row["step"] == 7 and row["images_per_s"] == pytest.approx(7 * 32 / 2.0)
    assert logger.count == 0 and logger.sums.abs().sum() == 0


def test_the_clock_counts_images_per_second_after_the_warm_up_or_over_a_run_no_longer(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(loop_module.time, "perf_counter", lambda: now[0])
    position = Position()
    clock = Clock(position, time_limit_minutes=0, device=CPU)

    def steps(count: int, seconds_each: float) -> None:
        for _ in range(count):
            now[0] += seconds_each
            position.step += 1
            clock.tick(position, sync=False)

    steps(WARMUP_STEPS, 1.0)  # slow first steps
    assert clock.images_per_s(position, 32) == pytest.approx(32 / 1.0)  # a run that ends here: all of it
    steps(10, 0.5)
    assert clock.images_per_s(position, 32) == pytest.approx(32 / 0.5)  # later: the steps after the warm-up
    assert position.train_seconds == pytest.approx(WARMUP_STEPS + 5.0)


@pytest.mark.slow
def test_short_training_run_writes_metrics_samples_and_checkpoint(tmp_path: Path, idx_dir: Path) -> None:
    config = TrainConfig(data=str(idx_dir), steps=24, batch_size=16, log_every=8, sample_every=12,
                         checkpoint_every=0, device="cpu")
    run = RunDirectory.create(tmp_path / "run")
    result = train(config, run, progress=False)
    assert result.status == "completed" and result.step == 24
    rows = read_metrics(run.metrics_csv)
    assert [r["step"] for r in rows] == [8, 16, 24]
    assert all(math.isfinite(r[k]) for r in rows for k in ("d_loss", "g_loss", "d_real", "d_fake"))
    assert all(0 < r["d_real"] < 1 and r["images_per_s"] > 0 for r in rows)
    assert rows[-1]["epoch"] == 0  # 24 batches of 16 is less than one epoch of 512 images
    assert sorted(p.name for p in run.samples.iterdir()) == [
        "step_0000000.png", "step_0000012.png", "step_0000024.png"]
    payload = torch.load(run.checkpoints / "last.pt", weights_only=True)
    assert payload["step"] == 24 and payload["config"]["steps"] == 24


@pytest.mark.slow
def test_epochs_count_whole_passes_over_the_data(tmp_path: Path, idx_dir: Path) -> None:
    config = TrainConfig(data=str(idx_dir), epochs=2, batch_size=250, log_every=100, device="cpu")
    result = train(config, RunDirectory.create(tmp_path / "run"), progress=False)
    assert result.step == 2 * 3  # 512 images: 2 full batches and a partial one of 12, twice


@pytest.mark.slow
def test_time_limit_stops_cleanly_with_a_checkpoint(tmp_path: Path, idx_dir: Path) -> None:
    config = TrainConfig(data=str(idx_dir), steps=100_000, batch_size=16, time_limit=1e-4, device="cpu")
    run = RunDirectory.create(tmp_path / "run")
    result = train(config, run, progress=False)
    assert result.status == "time_limit" and 0 < result.step < 100_000
    assert torch.load(run.checkpoints / "last.pt", weights_only=True)["step"] == result.step


def test_the_batches_run_on_across_epochs_moving_the_position() -> None:
    # 10 images in batches of 4: two full batches and a trailing one of 2, so 3 steps an epoch.
    data = ImageData(torch.zeros(10, 1, 1, 1, dtype=torch.uint8), torch.arange(10), ("x",), "numbers")
    batches = ShuffledBatches(data, batch_size=4, seed=5, device=CPU)
    order = [batches.order(epoch).tolist() for epoch in range(3)]

    def draw(position: Position, count: int) -> list[tuple[list[int], tuple[int, int, int]]]:
        loop = SimpleNamespace(position=position, batches=batches)
        stream = TrainingLoop.batches_from_position(loop)
        return [(next(stream)[1].tolist(), (position.step, position.epoch, position.batch)) for _ in range(count)]

    assert draw(Position(step=2, epoch=0, batch=2), 3) == [
        (order[0][8:], (3, 1, 0)),  # the epoch's last batch: the position moves on to the next epoch at once
        (order[1][:4], (4, 1, 1)),
        (order[1][4:8], (5, 1, 2)),
    ]
    # A run resumed at a world size whose epochs had a trailing batch that this one has not: the next epoch
    assert draw(Position(step=9, epoch=1, batch=3), 1) == [(order[2][:4], (10, 2, 1))]
