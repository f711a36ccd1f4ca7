"""Tiny networks the export tests package (few channels: the suite must stay fast).

Kept in their own self-contained file (imports only torch) so export can ship
it as the ``pytorch_state_dict`` architecture source.
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn


def _block(conv, cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv(cin, cout, 3, padding=1), nn.ReLU())


class UNet2d(nn.Module):
    """2D U-Net with "same" padding: height and width must be multiples of ``2 ** depth``."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, depth: int = 2, base: int = 4):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depth = depth
        self.base = base
        chans = [base * 2 ** i for i in range(depth + 1)]
        self.enc = nn.ModuleList([_block(nn.Conv2d, in_channels if i == 0 else chans[i - 1], chans[i])
                                  for i in range(depth)])
        self.bottom = _block(nn.Conv2d, chans[depth - 1], chans[depth])
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2)
                                 for i in reversed(range(depth))])
        self.dec = nn.ModuleList([_block(nn.Conv2d, 2 * chans[i], chans[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: List[torch.Tensor] = []
        for enc in self.enc:
            x = enc(x)
            skips.append(x)
            x = nn.functional.max_pool2d(x, 2)
        x = self.bottom(x)
        for i, (up, dec) in enumerate(zip(self.up, self.dec)):
            x = dec(torch.cat([up(x), skips[len(skips) - 1 - i]], dim=1))
        return self.head(x)


class UNet3d(nn.Module):
    """3D U-Net (z, y, x) of depth 1: every spatial size must be even."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base: int = 2):
        super().__init__()
        self.in_channels, self.out_channels, self.base = in_channels, out_channels, base
        self.enc = _block(nn.Conv3d, in_channels, base)
        self.bottom = _block(nn.Conv3d, base, 2 * base)
        self.up = nn.ConvTranspose3d(2 * base, base, 2, stride=2)
        self.dec = _block(nn.Conv3d, 2 * base, base)
        self.head = nn.Conv3d(base, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.enc(x)
        x = self.bottom(nn.functional.max_pool3d(skip, 2))
        return self.head(self.dec(torch.cat([self.up(x), skip], dim=1)))


class SameConv(nn.Module):
    """Three 3x3 convolutions with padding: any size works, output size = input size."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 4):
        super().__init__()
        # constructor arguments kept as attributes: export reads them back for the architecture
        self.in_channels, self.out_channels, self.width = in_channels, out_channels, width
        self.net = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(width, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Upsampler2x(nn.Module):
    """Super-resolution by 2: output height and width are twice the input's."""

    def __init__(self, channels: int = 1, width: int = 4):
        super().__init__()
        self.channels, self.width = channels, width
        self.body = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(width, channels, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.body(x))


class Classifier(nn.Module):
    """Image -> class scores (global average pooling, so any size from 4 works)."""

    def __init__(self, in_channels: int = 1, n_classes: int = 3, width: int = 4):
        super().__init__()
        self.in_channels, self.n_classes, self.width = in_channels, n_classes, width
        self.features = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


class TwoInputs(nn.Module):
    """Two images of the same size (e.g. raw + mask) -> one output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, raw: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([raw, mask], dim=1))


def make_unet2d(depth: int = 2, base: int = 4) -> UNet2d:
    """A factory, for the ``module:callable`` + kwargs style of naming an architecture."""
    return UNet2d(1, 1, depth=depth, base=base)


class ValidConv(nn.Module):
    """Two unpadded 3x3 convolutions: the output is 4 pixels smaller per axis (offset -4, no halo needed)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 1, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AnisotropicUNet3d(nn.Module):
    """Pools only in y and x: z may have any size, y and x must be even."""

    def __init__(self):
        super().__init__()
        self.enc = _block(nn.Conv3d, 1, 2)
        self.up = nn.ConvTranspose3d(2, 2, (1, 2, 2), stride=(1, 2, 2))
        self.head = nn.Conv3d(4, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.enc(x)
        x = self.up(nn.functional.max_pool3d(skip, (1, 2, 2)))
        return self.head(torch.cat([x, skip], dim=1))


class FixedSize(nn.Module):
    """Flatten + Linear: only the trained input size (16 x 16) works."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16 * 16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class TwoOutputs(nn.Module):
    """One input, two outputs: foreground (1 channel) and a 2x down-sampled map (1 channel)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor):
        y = self.conv(x)
        return y[:, :1], nn.functional.avg_pool2d(y[:, 1:], 2)
