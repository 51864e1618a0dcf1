"""Finite-difference gradient checks, and the rounding tolerance of float sums, shared by the
tests and the chapters.

A check compares the analytic gradient from ``backward`` with central
differences of the scalar  L = sum(f(x) * dy)  for a *random* upstream
gradient ``dy`` (an all-ones ``dy`` hides bugs: softmax gradients sum to zero
against it). Use float64: in float32 the differences drown in rounding.
"""
from __future__ import annotations

import math

import numpy as np

from minissd.nn.backend import get_array_module, to_numpy


class GradientCheckError(AssertionError):
    """The analytic and numerical gradients disagree."""


def sum_tolerance(k, abs_sum, dtype=np.float32):
    """How far two computations of one sum of ``k`` terms may lie apart: the ``atol`` to compare with.

    Two ways to compute the same convolution, product or loss (two heads or one stacked
    conv, chunks or bands, tap blocks or im2col, NumPy or CuPy, a BLAS kernel for AVX2 or
    one for AVX-512) add the same terms t_i in another order. Each addition rounds to
    within u = eps/2 of its partial sum, and no partial sum is larger than S = sum_i |t_i|,
    so one order lies at most k*u*S from the exact sum and, its roundings being
    independent and centred, seldom more than sqrt(k)*u*S (Higham & Mary, SIAM J. Sci.
    Comput. 41(5), 2019). Two orders differ by the sum of their two errors; this returns

        2 * sqrt(k) * eps * S            (eps = 1.19e-7 in float32, 2.2e-16 in float64)

    which covers the worst case k*eps*S up to k = 4 and, above, is about eight standard
    deviations of the difference when all the terms have one sign (mixed signs: more).
    It scales with S, not with the result: where the terms cancel, the result is small
    but its rounding error is not, so a constant rtol tuned on one CPU fails on another.

    k: the number of terms: C*kh*kw products (+1 with a bias) for a convolution, the
        inner dimension of a matrix product, the addends of a plain sum.
    abs_sum: S, one per output or a scalar: the same computation on absolute values,
        |A| @ |B|, or the convolution of |x| with |W| plus |b|; its largest value gives
        one tolerance for a whole array.
    dtype: the precision the sums were computed in.
    """
    tol = 2 * math.sqrt(k) * float(np.finfo(dtype).eps) * np.asarray(to_numpy(abs_sum), np.float64)
    return float(tol) if tol.ndim == 0 else tol


def numerical_grad(fn, x, eps=1e-6, indices=None):
    """d fn() / d x by central differences, perturbing ``x`` in place.

    fn: a function of no arguments returning a scalar, that reads ``x``.
    indices: flat indices to check (all if None); other entries come back 0.
    Returns an array shaped like ``x`` (NumPy).
    """
    if not x.flags.c_contiguous:
        raise ValueError("numerical_grad needs a C-contiguous array to perturb in place")
    flat = x.reshape(-1)                                   # a view: writes reach x
    grad = np.zeros(x.size, dtype=np.float64)
    for i in (range(x.size) if indices is None else indices):
        old = flat[i].item()
        flat[i] = old + eps
        f_plus = float(fn())
        flat[i] = old - eps
        f_minus = float(fn())
        flat[i] = old
        grad[i] = (f_plus - f_minus) / (2 * eps)
    return grad.reshape(x.shape)


def _as_tuple(v):
    return v if isinstance(v, tuple) else (v,)


def _compare(name, analytic, numeric, indices, atol, rtol):
    a = to_numpy(analytic).reshape(-1).astype(np.float64)
    n = numeric.reshape(-1)
    idx = np.arange(a.size) if indices is None else np.asarray(indices)
    a, n = a[idx], n[idx]
    err = np.abs(a - n)
    bad = err > atol + rtol * np.abs(n)
    if bad.any():
        k = int(np.argmax(err - rtol * np.abs(n)))
        raise GradientCheckError(
            f"gradient of {name}: {int(bad.sum())}/{a.size} entries off; worst at flat index "
            f"{int(idx[k])}: analytic {a[k]:.6g} vs numerical {n[k]:.6g} (atol={atol}, rtol={rtol})")


def check_backward(module, *inputs, dy=None, params=None, rng=None, eps=1e-6,
                   atol=1e-6, rtol=1e-4, max_checks=None):
    """Check ``module.backward`` against finite differences for inputs and parameters.

    module: a minissd Module whose forward takes ``inputs`` and returns an array
        or a tuple of arrays; backward takes the upstream gradient(s) and returns
        dx (or a tuple, one per input).
    dy: upstream gradient(s); random normal if None.
    params: names (dotted, as in ``module.named_parameters()``) to check;
        all if None, none if ``[]``.
    max_checks: check at most this many random entries per tensor (None: all).
    Raises :class:`GradientCheckError` naming the tensor and the worst entry.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    for i, x in enumerate(inputs):
        if x.dtype != np.float64:
            raise ValueError(f"check_backward: input {i} is {x.dtype}; use float64")
    own = {name: mod.params[key] for name, mod, key in module.named_parameters()}
    unknown = sorted(set(params or ()) - set(own))
    if unknown:
        raise ValueError(f"check_backward: no parameter(s) {', '.join(unknown)}; "
                         f"the module has {', '.join(own) or 'none'}")
    for name, p in own.items():
        if (params is None or name in params) and p.dtype != np.float64:
            raise ValueError(f"check_backward: parameter {name} is {p.dtype}; "
                             "use float64 (module.astype(numpy.float64))")
    xp = get_array_module(*inputs)
    module.train()
    outs = _as_tuple(module.forward(*inputs))
    if dy is None:
        dy = tuple(xp.asarray(rng.standard_normal(o.shape)) for o in outs)
    dys = _as_tuple(dy)
    dxs = _as_tuple(module.backward(*dys))
    analytic = {f"input {i}": dx for i, dx in enumerate(dxs)}
    targets = {f"input {i}": x for i, x in enumerate(inputs)}
    for name, mod, key in module.named_parameters():
        if params is None or name in params:
            analytic[name] = mod.grads[key]
            targets[name] = mod.params[key]

    def loss():
        out = _as_tuple(module.forward(*inputs))
        return float(sum((o * d).sum() for o, d in zip(out, dys)))

    for name, target in targets.items():
        indices = None
        if max_checks is not None and target.size > max_checks:
            indices = rng.choice(target.size, size=max_checks, replace=False)
        numeric = numerical_grad(loss, target, eps=eps, indices=indices)
        _compare(name, analytic[name], numeric, indices, atol, rtol)
    return True
