"""External datasets: public corpora, tables and image sets converted into the layouts ``--data-dir`` reads.

:mod:`benchmarks.external.datasets` is the registry (sources pinned to a commit, SHA-256 of every raw file),
:mod:`benchmarks.external.converters` turns raw files into ``train``/``test`` files, and
``python -m benchmarks.external.fetch`` copies, checks and converts them into a cache outside the package.
"""
