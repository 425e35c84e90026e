"""Plain ``nn.Module`` networks, free of any training logic."""

from lightning_app.nets.sequence import MultiplicativeBlock, ResidualCovidNet, TutorialCovidNet
from lightning_app.nets.tabular import ResidualMLP, TutorialMLP

__all__ = ["MultiplicativeBlock", "ResidualCovidNet", "ResidualMLP", "TutorialCovidNet", "TutorialMLP"]
