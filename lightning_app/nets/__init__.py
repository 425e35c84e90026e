"""Plain ``nn.Module`` networks, free of any training logic."""

from lightning_app.nets.sequence import (
    LogTrendCovidNet,
    MultiplicativeBlock,
    QuantileCovidNet,
    ResidualCovidNet,
    TutorialCovidNet,
    damped_log_trend,
    log1p_counts,
)
from lightning_app.nets.tabular import ResidualMLP, TutorialMLP
from lightning_app.nets.text import BigramBagNet, NBBagNet, TutorialTextCNN
from lightning_app.nets.vision import (
    ConvPoolBlock,
    ConvPoolNet,
    HorizontalFlipAverage,
    ResidualBlock,
    SmallResNet,
    TutorialCifarNet,
)

__all__ = [
    "BigramBagNet",
    "ConvPoolBlock",
    "ConvPoolNet",
    "HorizontalFlipAverage",
    "LogTrendCovidNet",
    "MultiplicativeBlock",
    "NBBagNet",
    "QuantileCovidNet",
    "ResidualBlock",
    "ResidualCovidNet",
    "ResidualMLP",
    "SmallResNet",
    "TutorialCifarNet",
    "TutorialCovidNet",
    "TutorialMLP",
    "TutorialTextCNN",
    "damped_log_trend",
    "log1p_counts",
]
