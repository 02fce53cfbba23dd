"""``python -m cnnlens.cli``: the same as the ``cnnlens`` script."""

from . import main

main()
