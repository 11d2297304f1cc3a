"""Convolutions on small maps as matrix products: the same numbers as PyTorch's, used where asked."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dcgan import device
from dcgan.config import InvalidSetting, TrainConfig
from dcgan.networks.matmul_conv import (Conv2d, ConvTranspose2d, conv2d_as_matmul, conv_transpose2d_as_matmul,
                                        use_matmul)
from dcgan.training.step import TrainingStep, build_gan

CPU = torch.device("cpu")
# (in channels, out channels, side, kernel, stride, padding): the dcgan layers next to 4x4 maps and a few others
SHAPES = [(6, 5, 8, 4, 2, 1), (5, 1, 4, 4, 1, 0), (3, 4, 7, 3, 1, 1), (4, 3, 9, 5, 2, 2)]
TRANSPOSED_SHAPES = [*SHAPES, (2, 3, 1, 4, 1, 0)]  # G's first layer: noise as a 1x1 map to 4x4


def _inputs(shape: tuple[int, ...], channels_last: bool) -> torch.Tensor:
    x = torch.randn(*shape, dtype=torch.float64)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _value_and_grads(fn, x: torch.Tensor, weight: torch.Tensor) -> list[torch.Tensor]:
    x, weight = x.clone().requires_grad_(), weight.clone().requires_grad_()
    y = fn(x, weight)
    y.backward(torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y))  # a gradient unlike any other
    return [y, x.grad, weight.grad]


CASES = [(False, shape) for shape in SHAPES] + [(True, shape) for shape in TRANSPOSED_SHAPES]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("transposed", "shape"), CASES, ids=str)
def test_the_product_gives_the_convolution_and_its_gradients(transposed: bool, shape: tuple[int, ...],
                                                             channels_last: bool) -> None:
    c_in, c_out, side, kernel, stride, padding = shape
    torch.manual_seed(0)
    x = _inputs((3, c_in, side, side), channels_last)
    weight = torch.randn(*((c_in, c_out) if transposed else (c_out, c_in)), kernel, kernel, dtype=torch.float64)
    theirs_fn, ours_fn = ((F.conv_transpose2d, conv_transpose2d_as_matmul) if transposed
                          else (F.conv2d, conv2d_as_matmul))
    native = _value_and_grads(lambda a, w: theirs_fn(a, w, stride=stride, padding=padding), x, weight)
    product = _value_and_grads(lambda a, w: ours_fn(a, w, stride=stride, padding=padding), x, weight)
    for ours, theirs in zip(product, native):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("transposed", [False, True])
def test_under_bf16_autocast_sums_of_overlapping_patches_are_pytorchs_own(transposed: bool) -> None:
    """In bf16 a product's output is rounded, so the passes that add overlapping patches are left to PyTorch:
    a convolution's input gradient and a transposed convolution's output are its own, bit for bit. The
    products and the weight gradient are within bf16's rounding of the exact values (PyTorch's own weight
    gradient is not, on a CPU without bf16 instructions)."""
    torch.manual_seed(0)
    # channels-last, as training runs them (in another order oneDNN may add in another order)
    x = torch.randn(4, 16, 8, 8).contiguous(memory_format=torch.channels_last)
    weight = (torch.randn(*((16, 32) if transposed else (32, 16)), 4, 4) * 0.1).contiguous(
        memory_format=torch.channels_last)
    theirs_fn, ours_fn = ((F.conv_transpose2d, conv_transpose2d_as_matmul) if transposed
                          else (F.conv2d, conv2d_as_matmul))
    results = []
    for fn in (lambda a, w: theirs_fn(a, w, stride=2, padding=1), lambda a, w: ours_fn(a, w, stride=2, padding=1)):
        a, w = x.clone().requires_grad_(), weight.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = fn(a, w)
        output_grad = torch.linspace(-1, 1, y.numel()).view_as(y).to(y.dtype)
        y.backward(output_grad)
        results.append((y, a.grad, w.grad))
    (y, x_grad, _), (y_ours, x_grad_ours, w_grad_ours) = results
    assert y_ours.dtype == y.dtype == torch.bfloat16
    assert w_grad_ours.dtype == x_grad_ours.dtype == torch.float32  # float32 leaves get float32 gradients
    (sum_ours, sum_theirs), product_ours = ((y_ours, y), x_grad_ours) if transposed else ((x_grad_ours, x_grad), y_ours)
    assert torch.equal(sum_ours, sum_theirs)
    # the exact values of the same bf16 inputs, in float64
    a, w = x.bfloat16().double().requires_grad_(), weight.bfloat16().double().requires_grad_()
    y_exact = theirs_fn(a, w, stride=2, padding=1)
    y_exact.backward(output_grad.double())
    product_exact = a.grad if transposed else y_exact.detach()
    bf16_rounding = dict(rtol=2**-8, atol=1e-6)
    torch.testing.assert_close(product_ours.double(), product_exact, **bf16_rounding)
    torch.testing.assert_close(w_grad_ours.double(), w.grad, **bf16_rounding)


@pytest.mark.parametrize("transposed", [False, True])
def test_a_second_derivative_is_refused_not_silently_zero(transposed: bool) -> None:
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    weight = torch.randn(*((3, 5) if transposed else (5, 3)), 4, 4, requires_grad=True)
    y = (conv_transpose2d_as_matmul if transposed else conv2d_as_matmul)(x, weight, stride=2, padding=1)
    torch.autograd.grad(y.sum(), x, retain_graph=True)  # a first derivative is fine
    with pytest.raises(RuntimeError, match="no second derivative"):
        torch.autograd.grad(y.sum(), x, create_graph=True)  # what R1 asks


def test_the_layers_use_the_product_only_when_asked_and_only_on_small_maps() -> None:
    torch.manual_seed(0)
    small, large = Conv2d(8, 16, 4, 2, 1, bias=False), Conv2d(8, 16, 4, 2, 1, bias=False)
    transposed, biased = ConvTranspose2d(16, 8, 4, 2, 1, bias=False), Conv2d(8, 16, 4, 2, 1)
    network = torch.nn.ModuleList([small, large, transposed, biased])
    x8, x32, x4 = torch.randn(2, 8, 8, 8), torch.randn(2, 8, 32, 32), torch.randn(2, 16, 4, 4)

    def products() -> list[bool]:
        return ["AsMatmul" in type(y.grad_fn).__name__
                for y in (small(x8), large(x32), transposed(x4), biased(x8.requires_grad_()))]

    x8.requires_grad_()
    x32.requires_grad_()
    x4.requires_grad_()
    assert products() == [False, False, False, False]
    assert use_matmul(network) == 3  # the biased layer is left to PyTorch
    assert products() == [True, False, True, False]  # 8x8 -> 4x4 and 4x4 -> 8x8, not 32x32 -> 16x16
    torch.testing.assert_close(small(x8), F.conv2d(x8, small.weight, stride=2, padding=1), rtol=1e-5, atol=1e-5)
    use_matmul(network, enabled=False)
    assert products() == [False, False, False, False]


def _matmul_layers(network: torch.nn.Module) -> int:
    return sum(getattr(module, "as_matmul", False) for module in network.modules())


def test_build_gan_sets_the_layers_of_both_networks_and_the_average() -> None:
    config = TrainConfig(device="cpu", arch="dcgan", image_size=32, g_width=8, d_width=8, latent_dim=8,
                         ema_decay=0.99)
    gan = build_gan(config.replace(convolutions="matmul"), CPU)
    assert _matmul_layers(gan.generator) == _matmul_layers(gan.discriminator) == 4  # 1->4->8->16->32, 32->...->1
    assert gan.ema is not None and _matmul_layers(gan.ema.module) == 4
    gan = build_gan(config.replace(convolutions="native"), CPU)
    assert _matmul_layers(gan.generator) == _matmul_layers(gan.discriminator) == 0
    with pytest.raises(InvalidSetting, match="r1"):  # R1 differentiates D twice
        config.replace(convolutions="matmul", r1=1.0)


@pytest.mark.parametrize(("native_bf16", "r1", "layers"), [(False, 0.0, 4), (False, 1.0, 0), (True, 0.0, 0)])
def test_build_gan_runs_auto_as_matmul_for_fp32_on_a_cpu_without_bf16(
        monkeypatch: pytest.MonkeyPatch, native_bf16: bool, r1: float, layers: int) -> None:
    monkeypatch.setattr(device, "bf16_supported", lambda _: native_bf16)
    config = TrainConfig(device="cpu", arch="dcgan", image_size=32, g_width=8, d_width=8, latent_dim=8, r1=r1)
    assert config.convolutions == "auto"  # the default
    gan = build_gan(config, CPU)
    assert _matmul_layers(gan.generator) == _matmul_layers(gan.discriminator) == layers


def test_a_training_step_with_products_matches_one_with_pytorchs_convolutions() -> None:
    config = TrainConfig(device="cpu", precision="fp32", arch="dcgan", image_size=32, g_width=8, d_width=8,
                         latent_dim=8, batch_size=8)
    real = torch.rand(8, 1, 32, 32) * 2 - 1
    weights = []
    for convolutions in ("native", "matmul"):
        torch.manual_seed(0)
        step = TrainingStep.from_config(build_gan(config.replace(convolutions=convolutions), CPU), config, CPU)
        for _ in range(3):
            step(real)
        weights.append([p.detach().clone() for network in (step.gan.generator, step.gan.discriminator)
                        for p in network.parameters()])
    assert len(weights[0]) == len(weights[1]) > 8
    for native, product in zip(*weights):
        torch.testing.assert_close(product, native, rtol=1e-4, atol=1e-5)
