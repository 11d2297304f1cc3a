"""benchmarks/conv_variants.py: its other ways of running a 4x4 stride-2 convolution compute the same thing."""

from __future__ import annotations

import pytest
import torch

from conftest import load_benchmark


@pytest.fixture(scope="module")
def conv_variants():
    """benchmarks/conv_variants.py as a module."""
    return load_benchmark("conv_variants")


def test_the_layer_shapes_are_the_dcgan_discriminators(conv_variants) -> None:
    from dcgan.networks.dcgan import DCGANDiscriminator

    strided = [layer for layer in DCGANDiscriminator(image_size=64).features if isinstance(layer, torch.nn.Conv2d)]
    sides = [64, 32, 16, 8]
    assert conv_variants.layer_shapes(64) == [
        (layer.in_channels, layer.out_channels, side) for layer, side in zip(strided, sides)]
    assert conv_variants.layer_shapes(32) == [(3, 64, 32), (64, 128, 16), (128, 256, 8)]


def test_the_transposed_shapes_are_the_dcgan_generators(conv_variants) -> None:
    from dcgan.networks.dcgan import DCGANGenerator

    strided = [layer for layer in DCGANGenerator(image_size=64).main
               if isinstance(layer, torch.nn.ConvTranspose2d) and layer.stride == (2, 2)]
    sides = [4, 8, 16, 32]
    assert conv_variants.transposed_shapes(64) == [
        (layer.in_channels, layer.out_channels, side) for layer, side in zip(strided, sides)]


@pytest.mark.parametrize("name, transposed", [("space_to_depth", False), ("unfold_matmul", False), ("matmul", False),
                                              ("sub_pixel", True), ("matmul", True), ("fp32", False), ("padded", False),
                                              ("fp32", True), ("padded", True)])
def test_each_variant_matches_the_native_convolution_and_its_gradients(
        conv_variants, name: str, transposed: bool) -> None:
    torch.manual_seed(0)
    if transposed:
        variants = {**conv_variants.TRANSPOSED_VARIANTS, **conv_variants.NARROW_TRANSPOSED_VARIANTS}
    else:
        variants = {**conv_variants.VARIANTS, **conv_variants.NARROW_VARIANTS}
    x = torch.randn(2, 5 if transposed else 3, 8, 8, requires_grad=True)  # the narrow side has 3 channels
    weight = torch.randn(*((5, 3) if transposed else (7, 3)), 4, 4, requires_grad=True)
    out = variants[name](x, weight)
    reference = variants["native"](x, weight)
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)
    grad = torch.randn_like(reference)
    got = torch.autograd.grad(out, (x, weight), grad)
    expected = torch.autograd.grad(reference, (x, weight), grad)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
