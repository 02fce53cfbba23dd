"""The leaf core every feature package builds on.

Registry, hooks, layer look-up, targets, errors, progress, atomic writes,
tensor helpers and batching. Nothing in here imports a feature package
(attribution, perturbation, evaluation, featurevis, analysis, siam, report,
cli); ``tests/test_imports.py`` enforces it.
"""
