"""The reference PyTorch DCGAN example's training procedure, re-implemented as the speed baseline.

    python benchmarks/reference_dcgan.py --data FOLDER [--steps 200] [--image-size 64]

What it does, as the example does: torchvision's ImageFolder with Resize + CenterCrop + ToTensor +
Normalize, a shuffling DataLoader with 2 worker processes, batch 128, fp32; Radford et al.'s G
and D (D ending in a Sigmoid) with N(0, 0.02) weights; BCELoss; Adam 2e-4, betas (0.5, 0.999);
per batch one D step on the real batch and on G's batch (detached), then one G step on that same
generated batch. It prints `images_per_s=X` over the steps after the first 20.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torchvision import datasets, transforms


def generator(latent: int, width: int, channels: int) -> nn.Module:
    """1x1 noise -> 64x64 images: transposed convolutions 4x4, batch norm, ReLU, Tanh."""
    def up(c_in: int, c_out: int, stride: int, padding: int) -> list[nn.Module]:
        return [nn.ConvTranspose2d(c_in, c_out, 4, stride, padding, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]

    return nn.Sequential(*up(latent, width * 8, 1, 0), *up(width * 8, width * 4, 2, 1), *up(width * 4, width * 2, 2, 1),
                         *up(width * 2, width, 2, 1), nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False),
                         nn.Tanh())


def discriminator(width: int, channels: int) -> nn.Module:
    """64x64 images -> probability: convolutions 4x4, LeakyReLU 0.2, batch norm after the first, Sigmoid."""
    def down(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True)]

    return nn.Sequential(nn.Conv2d(channels, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
                         *down(width, width * 2), *down(width * 2, width * 4), *down(width * 4, width * 8),
                         nn.Conv2d(width * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())


def init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    dataset = datasets.ImageFolder(args.data, transform=transforms.Compose([
        transforms.Resize(args.image_size), transforms.CenterCrop(args.image_size), transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                         num_workers=args.workers, drop_last=True)
    latent = 100
    net_g, net_d = generator(latent, 64, 3), discriminator(64, 3)
    net_g.apply(init_weights)
    net_d.apply(init_weights)
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    step, timed_from, warmup = 0, 0.0, 20
    while step < args.steps:
        for real, _ in loader:
            if step == warmup:
                timed_from = time.perf_counter()
            batch = real.shape[0]
            ones, zeros = torch.ones(batch), torch.zeros(batch)
            # D: maximise log D(x) + log(1 - D(G(z)))
            net_d.zero_grad()
            loss_d_real = criterion(net_d(real).view(-1), ones)
            loss_d_real.backward()
            fake = net_g(torch.randn(batch, latent, 1, 1))
            loss_d_fake = criterion(net_d(fake.detach()).view(-1), zeros)
            loss_d_fake.backward()
            opt_d.step()
            # G: maximise log D(G(z)) on the same generated batch
            net_g.zero_grad()
            loss_g = criterion(net_d(fake).view(-1), ones)
            loss_g.backward()
            opt_g.step()
            step += 1
            if step >= args.steps:
                break
    seconds = time.perf_counter() - timed_from
    print(f"steps={step} loss_d={(loss_d_real + loss_d_fake).item():.3f} loss_g={loss_g.item():.3f} "
          f"images_per_s={(step - warmup) * args.batch_size / seconds:.1f}")


if __name__ == "__main__":
    main()
