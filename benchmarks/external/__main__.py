"""``python -m benchmarks.external``: the classical peers on the converted external datasets (see ``run.py``)."""

from benchmarks.external.run import main

main()
