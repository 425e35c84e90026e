"""``python -m benchmarks.external``: this project's models and classical peers on the external datasets."""

from benchmarks.external.run import main

main()
