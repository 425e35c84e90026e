"""Plain ``nn.Module`` networks, free of any training logic."""

from lightning_app.nets.sequence import MultiplicativeBlock, TutorialCovidNet
from lightning_app.nets.tabular import ResidualMLP, TutorialMLP
from lightning_app.nets.vision import ResidualBlock, SmallResNet, TutorialCifarNet

__all__ = [
    "MultiplicativeBlock",
    "ResidualBlock",
    "ResidualMLP",
    "SmallResNet",
    "TutorialCifarNet",
    "TutorialCovidNet",
    "TutorialMLP",
]
