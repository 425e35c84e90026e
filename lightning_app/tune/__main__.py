"""``python -m lightning_app.tune``: runs :func:`lightning_app.tune.cli.main` under the shared CLI error handling."""

import sys

from lightning_app.cli import run_cli
from lightning_app.tune.cli import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
