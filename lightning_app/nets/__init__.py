"""Plain ``nn.Module`` networks, free of any training logic."""

from lightning_app.nets.sequence import MultiplicativeBlock, ResidualCovidNet, TutorialCovidNet
from lightning_app.nets.tabular import ResidualMLP, TutorialMLP
from lightning_app.nets.text import BigramBagNet, TutorialTextCNN

__all__ = [
    "BigramBagNet",
    "MultiplicativeBlock",
    "ResidualCovidNet",
    "ResidualMLP",
    "TutorialCovidNet",
    "TutorialMLP",
    "TutorialTextCNN",
]
