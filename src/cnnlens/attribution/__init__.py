"""Attribution methods, one module per family.

The modules register themselves when imported; :mod:`cnnlens.methods` imports
them all and holds :func:`~cnnlens.methods.attribute`. This package imports
nothing on its own, so a method module can be imported without the rest.
"""
