"""Convolutional networks for small images (CIFAR-2 and other ImageFolder trees)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn


def _squeeze_binary(logits: torch.Tensor) -> torch.Tensor:
    """One output unit means binary: return ``[B]`` logits rather than ``[B, 1]``."""
    return logits.squeeze(-1) if logits.shape[-1] == 1 else logits


class TutorialCifarNet(nn.Module):
    """The tutorial's CIFAR-2 network, layer for layer.

    Conv 3-32 (3x3) -> MaxPool 2 -> Conv 32-64 (5x5) -> MaxPool 2 -> Dropout2d 0.1
    -> AdaptiveMaxPool 1 -> Flatten -> Linear 64-32 -> ReLU -> Linear 32-``num_outputs``.
    As in the tutorial there is no activation after the convolutions. The
    tutorial's final Sigmoid is left to the loss: ``float32[B, 3, H, W]`` ->
    logits ``float32[B]`` (``num_outputs == 1``) or ``float32[B, num_outputs]``.
    """

    def __init__(self, num_outputs: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.dropout = nn.Dropout2d(p=0.1)
        self.adaptive_pool = nn.AdaptiveMaxPool2d((1, 1))
        self.flatten = nn.Flatten()
        self.linear1 = nn.Linear(64, 32)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(32, num_outputs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(images))
        x = self.pool2(self.conv2(x))
        x = self.flatten(self.adaptive_pool(self.dropout(x)))
        return _squeeze_binary(self.linear2(self.relu(self.linear1(x))))


_relu_in_place: Callable[[], nn.Module] = partial(nn.ReLU, inplace=True)


def conv_bn(
    in_channels: int,
    out_channels: int,
    stride: int = 1,
    activation: Callable[[], nn.Module] = _relu_in_place,
) -> nn.Sequential:
    """3x3 convolution (no bias) -> BatchNorm -> ``activation()`` (ReLU in place by default)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        activation(),
    )


class ResidualBlock(nn.Module):
    """``x + conv_bn(conv_bn(x))`` at constant width and resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SmallResNet(nn.Module):
    """A slim ResNet with batch norm for 32x32 images, cheap at full resolution.

    The stem is one 3x3 convolution with stride ``stem_stride`` (2: the rest of
    the network runs at 16x16 and below, which is where the time goes on a CPU).
    Then three stages, each a stride-2 ``conv_bn`` into ``width * 2**i`` channels
    (the first stage keeps the stem's resolution) followed by a residual block;
    global average pooling, dropout and a linear head.

    ``float32[B, 3, H, W]`` -> logits ``float32[B]`` (``num_outputs == 1``) or ``float32[B, num_outputs]``.
    """

    def __init__(self, num_outputs: int = 1, width: int = 32, stem_stride: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        widths = [width, width * 2, width * 4]
        self.stem = conv_bn(3, widths[0], stride=stem_stride)
        stages = []
        in_channels = widths[0]
        for index, channels in enumerate(widths):
            stages.append(conv_bn(in_channels, channels, stride=1 if index == 0 else 2))
            stages.append(ResidualBlock(channels))
            in_channels = channels
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(widths[-1], num_outputs))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return _squeeze_binary(self.head(self.pool(self.stages(self.stem(images)))))


class ConvPoolBlock(nn.Module):
    """3x3 convolution -> 2x2 max-pool -> BatchNorm -> activation, then :func:`conv_bn` with the same activation.

    ``[B, in_channels, H, W] -> [B, out_channels, H / 2, W / 2]``; pooling before the normalisation keeps
    the normalisation and activation at the halved resolution.
    """

    def __init__(self, in_channels: int, out_channels: int, activation: Callable[[], nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm = nn.BatchNorm2d(out_channels)
        self.activation = activation()
        self.refine = conv_bn(out_channels, out_channels, activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.refine(self.activation(self.norm(self.pool(self.conv(x)))))


class ConvPoolNet(nn.Module):
    """A plain (residual-free) VGG-style network for 32x32 images, after the CIFAR-10 speed-run networks.

    A 3x3 stem convolution into ``3 * width // 4`` channels at full resolution, then three
    :class:`ConvPoolBlock` stages into ``width * 2**i`` channels, each halving the resolution
    (32 -> 16 -> 8 -> 4); global max-pooling, dropout and a linear head without bias. Against
    :class:`SmallResNet` (stride-2 stem) it sees the full-resolution image in its first two
    convolutions, for about 1.5x the training time on a CPU at the same ``width``.

    The layout (max-pool before batch norm, GELU, global max-pool, bias-free head) follows
    Keller Jordan's airbench networks (https://github.com/KellerJordan/cifar10-airbench),
    without their data-dependent whitening stem.

    ``float32[B, 3, H, W]`` -> logits ``float32[B]`` (``num_outputs == 1``) or ``float32[B, num_outputs]``.
    """

    def __init__(self, num_outputs: int = 1, width: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        stem_channels = 3 * width // 4
        self.stem = conv_bn(3, stem_channels, activation=nn.GELU)
        widths = [width, width * 2, width * 4]
        in_widths = [stem_channels, *widths[:-1]]
        self.stages = nn.Sequential(*(ConvPoolBlock(cin, cout) for cin, cout in zip(in_widths, widths, strict=True)))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(widths[-1], num_outputs, bias=False))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return _squeeze_binary(self.head(self.pool(self.stages(self.stem(images)))))


class HorizontalFlipAverage(nn.Module):
    """Test-time augmentation: the mean of ``net``'s logits over the images and their mirror images.

    Wraps the network without copying it (the same parameters); ``float32[B, 3, H, W]`` in, ``net``'s logits out.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (self.net(images) + self.net(images.flip(-1))) / 2
