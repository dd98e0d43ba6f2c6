"""AlphaZero's networks f(s) = (policy logits, value): an MLP for small boards, a residual conv net for larger
ones (Silver et al. 2017: a conv stem, residual blocks, a policy head and a tanh value head)."""

from __future__ import annotations

import torch
from torch import nn


class GameMLP(nn.Module):
    """Board planes [B, 2, H, W] -> (logits [B, A], value [B] in [-1, 1]) through a ReLU MLP."""

    def __init__(self, planes: tuple[int, int, int], num_actions: int, hidden_sizes: list[int]):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = planes[0] * planes[1] * planes[2]
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.policy = nn.Linear(width, num_actions)
        self.value = nn.Linear(width, 1)

    def forward(self, planes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.trunk(planes)
        return self.policy(x), torch.tanh(self.value(x)).squeeze(-1)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class GameResNet(nn.Module):
    """Board planes [B, 2, H, W] -> (logits [B, A], value [B]): a 3x3 conv stem, ``blocks`` residual blocks of
    ``channels``, then AlphaZero's heads (policy: 1x1 conv to 2 planes, linear; value: 1x1 conv to 1 plane,
    linear ``channels`` wide, ReLU, linear, tanh)."""

    def __init__(self, planes: tuple[int, int, int], num_actions: int, channels: int, blocks: int):
        super().__init__()
        c, h, w = planes
        self.stem = nn.Sequential(nn.Conv2d(c, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU())
        self.blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks)))
        self.policy = nn.Sequential(nn.Conv2d(channels, 2, 1, bias=False), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                                    nn.Linear(2 * h * w, num_actions))
        self.value = nn.Sequential(nn.Conv2d(channels, 1, 1, bias=False), nn.BatchNorm2d(1), nn.ReLU(), nn.Flatten(),
                                   nn.Linear(h * w, channels), nn.ReLU(), nn.Linear(channels, 1))

    def forward(self, planes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.blocks(self.stem(planes))
        return self.policy(x), torch.tanh(self.value(x)).squeeze(-1)
