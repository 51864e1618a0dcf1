"""Gradient checks must pass a right backward and catch a wrong one."""
import numpy as np
import pytest

from minissd.nn.backend import get_array_module, to_numpy
from minissd.nn.gradcheck import GradientCheckError, check_backward, numerical_grad
from minissd.nn.module import Module


class Scale(Module):
    """y = w[c] * x**3 (per channel), with optional deliberate bugs in backward."""

    def __init__(self, channels, bug=None):
        super().__init__()
        self.params["weight"] = np.linspace(0.5, 2.0, channels)
        self.grads["weight"] = np.zeros(channels)
        self.bug = bug

    def forward(self, x):
        self._x = x
        return self.params["weight"][None, :, None] * x ** 3             # (N, C, L)

    def backward(self, dy):
        x, w = self._x, self.params["weight"][None, :, None]
        self.grads["weight"] = (dy * x ** 3).sum(axis=(0, 2))            # (C,)
        dx = dy * 3 * w * x ** 2
        if self.bug == "dx-factor":
            dx = dy * 2 * w * x ** 2                                     # wrong power rule
        elif self.bug == "dweight-missing-batch":
            self.grads["weight"] = (dy[:1] * x[:1] ** 3).sum(axis=(0, 2))  # forgot images 1..N
        elif self.bug == "dx-one-entry":
            dx = dx.copy()
            dx[-1, -1, -1] += 1e-3                                       # one entry slightly off
        return dx


class Center(Module):
    """y = x - mean(x) over the last axis. The right dx is dy - mean(dy); the bug returns 0.

    With an all-ones upstream gradient the right dx IS zero, so the bug hides:
    the reason check_backward draws a random dy.
    """

    def forward(self, x):
        xp = get_array_module(x)
        return x - xp.mean(x, axis=-1, keepdims=True)

    def backward(self, dy):
        return dy * 0


def test_numerical_grad_of_a_known_function(xp):
    x = xp.asarray(np.linspace(-1, 1, 7))
    c = xp.asarray(np.arange(7.0))
    g = numerical_grad(lambda: float((c * x ** 3).sum()), x)
    np.testing.assert_allclose(g, to_numpy(3 * c * x ** 2), rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(to_numpy(x), np.linspace(-1, 1, 7))   # x restored


def test_numerical_grad_checks_only_the_given_indices(xp):
    x = xp.asarray(np.ones(5))
    g = numerical_grad(lambda: float((x * x).sum()), x, indices=[1, 3])
    np.testing.assert_allclose(g, [0, 2, 0, 2, 0], atol=1e-8)


def test_numerical_grad_refuses_a_non_contiguous_array(xp):
    x = xp.ones((4, 4))[:, ::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        numerical_grad(lambda: 0.0, x)


def test_passes_a_right_backward(xp, rng):
    layer = Scale(3)
    layer.params["weight"] = xp.asarray(layer.params["weight"])
    assert check_backward(layer, xp.asarray(rng.standard_normal((2, 3, 4))), rng=rng)


# (bug, the tensor the error must name)
BUGS = [
    ("dx-factor", "input 0"),
    ("dweight-missing-batch", "weight"),
    ("dx-one-entry", "input 0"),
]


@pytest.mark.parametrize("bug, tensor", BUGS)
def test_catches_a_wrong_backward(xp, rng, bug, tensor):
    layer = Scale(3, bug=bug)
    layer.params["weight"] = xp.asarray(layer.params["weight"])
    with pytest.raises(GradientCheckError, match=f"gradient of {tensor}: .* entries off; worst at"):
        check_backward(layer, xp.asarray(rng.standard_normal((2, 3, 4))), rng=rng)


def test_a_random_upstream_gradient_finds_what_ones_hide(xp, rng):
    x = xp.asarray(rng.standard_normal((2, 5)))
    check_backward(Center(), x, dy=xp.ones((2, 5)))                     # the bug slips through
    with pytest.raises(GradientCheckError, match="input 0"):
        check_backward(Center(), x, rng=rng)                             # the default catches it


def test_max_checks_samples_entries(xp, rng):
    layer = Scale(3, bug="dx-one-entry")
    layer.params["weight"] = xp.asarray(layer.params["weight"])
    x = xp.asarray(rng.standard_normal((2, 3, 4)))
    check_backward(layer, x, rng=np.random.default_rng(1), max_checks=1, params=[])  # misses it
    with pytest.raises(GradientCheckError):
        check_backward(layer, x, rng=rng, max_checks=None, params=[])


def test_params_selects_which_parameters_are_checked(xp, rng):
    layer = Scale(3, bug="dweight-missing-batch")
    layer.params["weight"] = xp.asarray(layer.params["weight"])
    x = xp.asarray(rng.standard_normal((2, 3, 4)))
    check_backward(layer, x, rng=rng, params=[])                         # inputs only
    with pytest.raises(GradientCheckError, match="weight"):
        check_backward(layer, x, rng=rng, params=["weight"])
    with pytest.raises(ValueError, match="no parameter.*bias"):
        check_backward(layer, x, rng=rng, params=["bias"])


def test_float32_is_refused(xp, rng):
    layer = Scale(3)
    with pytest.raises(ValueError, match="input 0 is float32"):
        check_backward(layer, xp.ones((1, 3, 2), dtype=xp.float32))
    layer.params["weight"] = layer.params["weight"].astype(np.float32)
    with pytest.raises(ValueError, match="parameter weight is float32"):
        check_backward(layer, xp.ones((1, 3, 2)))
