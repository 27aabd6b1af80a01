"""Adapters of the methods to other trainers, each in its own module that imports its framework only when
imported itself: :mod:`lstsd.integrations.lightning` (PyTorch Lightning: the lightning
extra, ``pip install -e '.[lightning]'``)."""
