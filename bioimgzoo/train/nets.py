"""Small networks for the built-in tasks.

A package exported from :class:`UNet2d` ships this file, byte for byte, as
its ``pytorch_state_dict`` architecture (it imports nothing but torch, so
readers lacking bioimgzoo can load it); such a package needs no ``trust_code``
here because the file's sha256 is this file's (``bioimgzoo.trust``).  It is written for ``torch.jit.script`` (no Python
control flow that TorchScript cannot compile) and exports to ONNX opset 17
(only Conv, BatchNorm, ReLU, MaxPool, ConvTranspose, Concat, Sigmoid).
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

__all__ = ["UNet2d"]


def _conv_block(cin: int, cout: int, norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_in in (cin, cout):
        layers.append(nn.Conv2d(c_in, cout, kernel_size=3, padding=1, bias=not norm))
        if norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _Up(nn.Module):
    """One decoder level: upsample, concatenate the skip connection, convolve."""

    def __init__(self, cin: int, cout: int, norm: bool):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)
        self.conv = _conv_block(2 * cout, cout, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class UNet2d(nn.Module):
    """A 2D U-Net (Ronneberger et al. 2015) with "same" padding.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input image and of the output.
    depth : int
        Number of 2x down-samplings; height and width of the input must be
        multiples of ``2 ** depth`` (see :attr:`size_divisor`).
    base : int
        Feature channels at full resolution; doubled at every level.
    final_activation : {None, "sigmoid"}
        Applied to the output.  The built-in tasks leave it ``None`` (the
        network returns logits; the package declares ``sigmoid`` as
        postprocessing instead).
    batch_norm : bool
        Batch normalisation after every convolution.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, depth: int = 3, base: int = 16,
                 final_activation: Optional[str] = None, batch_norm: bool = True):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        # a package may build this network without trust_code (bioimgzoo.trust's allow-list): its
        # arguments come from the package, so they are bounded before any weight is allocated
        for arg, value, most in (("in_channels", in_channels, 4096), ("out_channels", out_channels, 4096),
                                 ("depth", depth, 8), ("base", base, 1024)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
                raise ValueError(f"{arg} must be a whole number from 1 to {most}, got {value!r}")
        if base << (depth - 1) > 8192:
            raise ValueError(f"base * 2**(depth - 1) = {base << (depth - 1)} features at the deepest level: "
                             "at most 8192")
        if final_activation not in (None, "sigmoid"):
            raise ValueError(f"final_activation must be None or 'sigmoid', got {final_activation!r}")
        # constructor arguments kept as attributes: exporters rebuild the network from them
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depth = depth
        self.base = base
        self.final_activation = final_activation
        self.batch_norm = batch_norm
        #: height and width of an input must be multiples of this
        self.size_divisor = 2 ** depth
        chans = [base * 2 ** i for i in range(depth + 1)]
        self.encoders = nn.ModuleList(
            [_conv_block(in_channels if i == 0 else chans[i - 1], chans[i], batch_norm) for i in range(depth)])
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _conv_block(chans[depth - 1], chans[depth], batch_norm)
        self.decoders = nn.ModuleList([_Up(chans[i + 1], chans[i], batch_norm) for i in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], out_channels, kernel_size=1)
        self.activation = nn.Sigmoid() if final_activation == "sigmoid" else nn.Identity()

    def init_kwargs(self) -> dict:
        """The constructor arguments that rebuild this network (for a ``pytorch_state_dict`` architecture)."""
        return {"in_channels": self.in_channels, "out_channels": self.out_channels, "depth": self.depth,
                "base": self.base, "final_activation": self.final_activation, "batch_norm": self.batch_norm}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: List[torch.Tensor] = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for dec in self.decoders:
            x = dec(x, skips.pop())
        return self.activation(self.head(x))
