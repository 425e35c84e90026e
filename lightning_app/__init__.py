"""The tutorial tasks of "eat_pytorch_in_20_days" as reusable Lightning modules."""

__version__ = "0.1.0"
