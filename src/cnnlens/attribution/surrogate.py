"""Weighted linear surrogates in torch: the fitting step of LIME and KernelSHAP.

Given ``S`` samples ``X (S, d)``, responses ``Y (S, T)`` (one column per target, fitted
independently) and sample weights ``w (S,)``, each fit returns coefficients ``B (T, d)``
and intercepts ``c (T,)``. The objectives are scikit-learn's, so that LIME here and
Captum's ``Lime`` (which calls scikit-learn) fit the same model to the same data:

* ``"linear"`` (``LinearRegression``):   min  sum_i w_i (y_i - c - x_i B)^2, the
  minimum-norm solution when the samples do not determine ``B``;
* ``"ridge"`` (``Ridge``):                min  sum_i w_i (y_i - c - x_i B)^2 + alpha |B|_2^2;
* ``"lasso"`` (``Lasso``):                min  1/(2 sum w) sum_i w_i (y_i - c - x_i B)^2
  + alpha |B|_1 (scikit-learn rescales the weights to sum to ``S`` and divides by
  ``2 S``, which is the same thing), solved by cyclic coordinate descent on the
  weighted Gram matrix until no coefficient moves by more than ``tol`` times the largest.

The intercept is never penalised: every fit centres ``X`` and ``Y`` on their weighted
means first and recovers ``c = mean(y) - mean(x) B``. :func:`constrained_fit` is the
KernelSHAP fit: weighted least squares with the intercept fixed to the empty coalition's
score and the coefficients summing to the full score minus it (the limit of Captum's
weight of 10^6 on those two samples, solved exactly through the KKT system).

Everything is computed in float64 on the CPU: the systems are ``d x d`` with ``d`` the
number of segments, tiny next to the forward passes that produced ``Y``.
"""

from __future__ import annotations

import torch

SURROGATES = ("lasso", "ridge", "linear")


def _centred(X, Y, w):
    X, Y, w = (t.detach().to("cpu", torch.float64) for t in (X, Y, w))
    v = w / w.sum()
    xm, ym = v @ X, v @ Y
    return X - xm, Y - ym, w, v, xm, ym


def _lstsq(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least-squares solution of ``A X = B`` (SVD based, like numpy's)."""
    return torch.linalg.lstsq(A, B, driver="gelsd").solution


def lasso_descent(
    gram: torch.Tensor, cross: torch.Tensor, alpha: float, tol: float, max_iter: int
) -> tuple[torch.Tensor, int]:
    """Coordinate descent for ``min 1/2 b^T G b - c^T b + alpha |b|_1``, every column at once.

    Args:
        gram: ``(d, d)`` weighted Gram matrix ``X^T V X`` of the centred samples.
        cross: ``(d, T)`` ``X^T V Y``.
        alpha: the L1 penalty.
        tol: stop when no coefficient moved by more than ``tol`` times the largest one.
        max_iter: most sweeps over the coordinates.

    Returns:
        ``B (d, T)`` and the number of sweeps run.
    """
    d, t = cross.shape
    B = torch.zeros(d, t, dtype=gram.dtype)
    diag = gram.diagonal()
    for sweep in range(1, max_iter + 1):
        moved = torch.zeros(t, dtype=gram.dtype)
        for j in range(d):
            if diag[j] <= 0:  # a feature that never varies keeps 0
                continue
            rho = cross[j] - gram[j] @ B + diag[j] * B[j]
            new = torch.sign(rho) * (rho.abs() - alpha).clamp_min(0) / diag[j]
            moved = torch.maximum(moved, (new - B[j]).abs())
            B[j] = new
        if bool((moved <= tol * B.abs().amax(0).clamp_min(1e-300)).all()):
            return B, sweep
    return B, max_iter


def weighted_fit(
    X: torch.Tensor,
    Y: torch.Tensor,
    w: torch.Tensor,
    *,
    model: str = "lasso",
    alpha: float = 0.01,
    tol: float = 1e-8,
    max_iter: int = 10000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit a weighted linear surrogate with an intercept (see the module docstring).

    Args:
        X: ``(S, d)`` samples (here binary coalitions).
        Y: ``(S, T)`` responses.
        w: ``(S,)`` non-negative sample weights, not all zero.
        model: ``"lasso"``, ``"ridge"`` or ``"linear"``.
        alpha: the penalty of ``"lasso"`` and ``"ridge"``.
        tol, max_iter: coordinate descent's stopping rule (lasso).

    Returns:
        ``coef (T, d)`` and ``intercept (T,)``, float64 on the CPU.
    """
    if model not in SURROGATES:
        raise ValueError(f"model must be one of {', '.join(SURROGATES)}, got {model!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
        raise ValueError(f"alpha must be a number >= 0, got {alpha!r}")
    Xc, Yc, w, v, xm, ym = _centred(X, Y, w)
    if model == "linear":
        root = w.sqrt()[:, None]
        B = _lstsq(Xc * root, Yc * root)
    elif model == "ridge":
        gram = Xc.T @ (w[:, None] * Xc)
        eye = torch.eye(gram.shape[0], dtype=gram.dtype)
        B = _lstsq(gram + alpha * eye, Xc.T @ (w[:, None] * Yc))
    else:
        gram = Xc.T @ (v[:, None] * Xc)
        B, _ = lasso_descent(gram, Xc.T @ (v[:, None] * Yc), float(alpha), tol, max_iter)
    return B.T.contiguous(), ym - xm @ B


def constrained_fit(
    X: torch.Tensor, Y: torch.Tensor, w: torch.Tensor, empty: torch.Tensor, full: torch.Tensor
) -> torch.Tensor:
    """Weighted least squares with ``intercept = empty`` and ``sum(coef) = full - empty``.

    Solves, for every column ``t``, ``min_b sum_i w_i (y_it - empty_t - x_i b)^2`` subject
    to ``sum_j b_j = full_t - empty_t`` through its KKT system
    ``[[2 X^T W X, 1], [1^T, 0]] [b; lambda] = [2 X^T W (y - empty); full - empty]``,
    taking the minimum-norm solution when the samples leave ``b`` undetermined.

    Args:
        X: ``(S, d)`` coalitions (neither empty nor full; may be ``S = 0``).
        Y: ``(S, T)`` their scores.
        w: ``(S,)`` sample weights.
        empty: ``(T,)`` score with every segment removed.
        full: ``(T,)`` score with every segment kept.

    Returns:
        ``coef (T, d)`` float64 on the CPU; its rows sum to ``full - empty``.
    """
    X, Y, w, empty, full = (t.detach().to("cpu", torch.float64) for t in (X, Y, w, empty, full))
    d = X.shape[1]
    kkt = torch.zeros(d + 1, d + 1, dtype=torch.float64)
    kkt[:d, :d] = 2 * X.T @ (w[:, None] * X)
    kkt[:d, d] = 1.0
    kkt[d, :d] = 1.0
    rhs = torch.cat([2 * X.T @ (w[:, None] * (Y - empty)), (full - empty)[None]])
    return _lstsq(kkt, rhs)[:d].T.contiguous()
