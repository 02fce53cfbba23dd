"""The leaf core every feature package builds on.

Registry, hooks, layer look-up, targets, errors, progress, atomic writes,
tensor helpers, the batching engine, map reading and scaling, box geometry,
the typed mask result and the torch.fx geometry walker. Nothing in here
imports a feature package (attribution, perturbation, evaluation, featurevis,
analysis, siam, report, cli); ``tests/test_imports.py`` enforces it.
"""
