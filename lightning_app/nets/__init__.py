"""Plain ``nn.Module`` networks, free of any training logic."""

from lightning_app.nets.sequence import MultiplicativeBlock, TutorialCovidNet
from lightning_app.nets.tabular import ResidualMLP, TutorialMLP

__all__ = ["MultiplicativeBlock", "ResidualMLP", "TutorialCovidNet", "TutorialMLP"]
