"""SGD with momentum and weight decay, AdamW, a moving average of the weights, and SSD's
learning-rate schedule (and a cosine one).

SSD (and ssd.pytorch) train with SGD, momentum 0.9, weight decay 5e-4, a short
linear warm-up and a multi-step decay (x0.1 at fixed iterations). The update is
PyTorch's:

    g   = grad + weight_decay * p
    buf = momentum * buf + g
    p   = p - lr * buf

:class:`AdamW` (Loshchilov & Hutter 2019) is the alternative ``--optimizer adamw``
measures: each weight's step divided by a running size of its gradients, and the
weight decay taken out of the gradient (see its docstring).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

from minissd.errors import UserError, UserKeyError
from minissd.nn import backend
from minissd.nn.backend import get_array_module


class SGD:
    """Momentum SGD over a Module's parameters; assigns ``owner.params[key]``."""

    def __init__(self, model, lr=1e-3, momentum=0.9, weight_decay=5e-4, nesterov=False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise UserError(f"SGD: lr, momentum and weight_decay must be >= 0, got "
                            f"lr={lr}, momentum={momentum}, weight_decay={weight_decay}")
        self.model = model
        self.lr, self.momentum, self.weight_decay, self.nesterov = lr, momentum, weight_decay, nesterov
        self.buffers = {}   # name -> momentum buffer, created at the first step
        self.steps = 0

    def step(self):
        # Python floats: a NumPy float64 lr would turn float32 parameters into float64
        lr, momentum, weight_decay = float(self.lr), float(self.momentum), float(self.weight_decay)
        for name, mod, key in self.model.named_parameters():
            p, g = mod.params[key], mod.grads[key]
            if g.shape != p.shape:
                raise ValueError(f"SGD: gradient of {name} has shape {g.shape}, parameter {p.shape}")
            if weight_decay:
                g = g + weight_decay * p
            if momentum:
                buf = self.buffers.get(name)
                buf = g.copy() if buf is None else momentum * buf + g
                self.buffers[name] = buf
                g = g + momentum * buf if self.nesterov else buf
            mod.params[key] = p - lr * g
        self.steps += 1

    def state_dict(self):
        """Momentum buffers (as NumPy, keyed ``momentum.<param name>``) and hyperparameters."""
        state = {f"momentum.{k}": backend.to_numpy(v) for k, v in self.buffers.items()}
        return state, {"type": "sgd", "lr": self.lr, "momentum": self.momentum,
                       "weight_decay": self.weight_decay, "nesterov": self.nesterov,
                       "steps": self.steps}

    def load_state_dict(self, arrays, meta):
        if not isinstance(meta, dict):
            raise ValueError(f"SGD.load_state_dict: no optimiser state (got {meta!r}); an "
                             "exported model has none")
        if meta.get("type", "sgd") != "sgd":              # older checkpoints: no type, SGD's
            raise UserError(f"optimiser state: the checkpoint holds {meta['type']}'s state, "
                            f"not SGD's")
        names = {name: mod.params[key] for name, mod, key in self.model.named_parameters()}
        buffers = {}
        for k, v in arrays.items():
            if not k.startswith("momentum."):
                continue
            name = k[len("momentum."):]
            if name not in names:
                raise UserKeyError(f"optimiser state: momentum buffer for unknown parameter "
                                   f"{name!r}")
            if tuple(v.shape) != tuple(names[name].shape):
                raise UserError(f"optimiser state: momentum buffer {name!r} has shape "
                                f"{tuple(v.shape)}, the parameter {tuple(names[name].shape)}")
            xp = get_array_module(names[name])
            buffers[name] = xp.asarray(v, dtype=names[name].dtype)
        self.buffers = buffers
        self.lr, self.momentum = meta["lr"], meta["momentum"]
        self.weight_decay, self.nesterov = meta["weight_decay"], meta["nesterov"]
        self.steps = int(meta["steps"])

    def named_buffers(self):
        """(kind, parameter name, array) for each array of state, for the NaN check's words."""
        return [("momentum buffer", name, buf) for name, buf in self.buffers.items()]


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019; PyTorch's ``AdamW``).

    For each parameter ``p`` with gradient ``g``, at step ``t`` (1, 2, ...):

        m = beta1 * m + (1 - beta1) * g              # running mean of the gradient
        v = beta2 * v + (1 - beta2) * g**2           # running mean of its square
        p = p - lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)
              - lr * weight_decay * p                # decay on the weights (ndim > 1) only

    Each weight moves by about ``lr`` whatever its gradient's scale, so one learning
    rate suits the stem and the heads alike. The decay shrinks the weights directly
    instead of entering ``g`` (which Adam's division would rescale); biases and
    BatchNorm's scale and shift (1-d parameters) are not decayed, as is usual for
    AdamW. ``m`` and ``v`` start at zero, so the first step moves each weight by
    about ``lr`` in the direction of ``-g``.
    """

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05):
        beta1, beta2 = (float(b) for b in betas)
        if lr < 0 or weight_decay < 0 or eps <= 0 or not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise UserError(f"AdamW: lr and weight_decay must be >= 0, eps > 0 and both betas in "
                            f"[0, 1), got lr={lr}, betas={tuple(betas)}, eps={eps}, "
                            f"weight_decay={weight_decay}")
        self.model = model
        self.lr, self.betas, self.eps, self.weight_decay = lr, (beta1, beta2), eps, weight_decay
        self.exp_avg = {}      # name -> m, created at the first step
        self.exp_avg_sq = {}   # name -> v
        self.steps = 0

    def step(self):
        lr, eps, weight_decay = float(self.lr), float(self.eps), float(self.weight_decay)
        beta1, beta2 = self.betas
        self.steps += 1
        c1, c2 = 1 - beta1 ** self.steps, 1 - beta2 ** self.steps    # bias corrections
        for name, mod, key in self.model.named_parameters():
            p, g = mod.params[key], mod.grads[key]
            if g.shape != p.shape:
                raise ValueError(f"AdamW: gradient of {name} has shape {g.shape}, parameter "
                                 f"{p.shape}")
            xp = get_array_module(p)
            m = self.exp_avg.get(name, 0.0)
            v = self.exp_avg_sq.get(name, 0.0)
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * (g * g)
            self.exp_avg[name], self.exp_avg_sq[name] = m, v
            update = (m / c1) / (xp.sqrt(v / c2) + eps)
            if weight_decay and p.ndim > 1:
                update = update + weight_decay * p
            mod.params[key] = (p - lr * update).astype(p.dtype, copy=False)

    def state_dict(self):
        """m and v (as NumPy, keyed ``exp_avg.<param name>``, ``exp_avg_sq.<param name>``) and
        the hyperparameters, ``type: adamw`` among them."""
        state = {f"exp_avg.{k}": backend.to_numpy(v) for k, v in self.exp_avg.items()}
        state.update({f"exp_avg_sq.{k}": backend.to_numpy(v) for k, v in self.exp_avg_sq.items()})
        return state, {"type": "adamw", "lr": self.lr, "betas": list(self.betas),
                       "eps": self.eps, "weight_decay": self.weight_decay, "steps": self.steps}

    def load_state_dict(self, arrays, meta):
        if not isinstance(meta, dict):
            raise ValueError(f"AdamW.load_state_dict: no optimiser state (got {meta!r}); an "
                             "exported model has none")
        if meta.get("type", "sgd") != "adamw":
            raise UserError(f"optimiser state: the checkpoint holds {meta.get('type', 'sgd')}'s "
                            f"state, not AdamW's")
        names = {name: mod.params[key] for name, mod, key in self.model.named_parameters()}
        moments = {"exp_avg": {}, "exp_avg_sq": {}}
        for k, v in arrays.items():
            kind, _, name = k.partition(".")
            if kind not in moments:
                continue
            if name not in names:
                raise UserKeyError(f"optimiser state: {kind} for unknown parameter {name!r}")
            if tuple(v.shape) != tuple(names[name].shape):
                raise UserError(f"optimiser state: {kind} {name!r} has shape {tuple(v.shape)}, "
                                f"the parameter {tuple(names[name].shape)}")
            moments[kind][name] = get_array_module(names[name]).asarray(
                v, dtype=names[name].dtype)
        if set(moments["exp_avg"]) != set(moments["exp_avg_sq"]):
            odd = sorted(set(moments["exp_avg"]) ^ set(moments["exp_avg_sq"]))
            raise UserKeyError(f"optimiser state: exp_avg and exp_avg_sq differ on "
                               f"{', '.join(odd[:8])}")
        self.exp_avg, self.exp_avg_sq = moments["exp_avg"], moments["exp_avg_sq"]
        self.lr, self.betas = meta["lr"], tuple(float(b) for b in meta["betas"])
        self.eps, self.weight_decay = meta["eps"], meta["weight_decay"]
        self.steps = int(meta["steps"])

    def named_buffers(self):
        """(kind, parameter name, array) for each array of state, for the NaN check's words."""
        return ([("first moment (exp_avg)", k, m) for k, m in self.exp_avg.items()]
                + [("second moment (exp_avg_sq)", k, v) for k, v in self.exp_avg_sq.items()])


class WeightAverage:
    """An exponential moving average of a model's weights (Polyak averaging), for evaluation.

    After each optimiser step, for every parameter and BatchNorm statistic ``p``:

        d      = min(decay, (1 + t) / (10 + t))      # t: the updates so far, this one included
        avg    = d * avg + (1 - d) * p

    The ramp ``(1 + t) / (10 + t)`` (TensorFlow's ``ExponentialMovingAverage`` with
    ``num_updates``) lets the first steps' random weights fade at once. The average never
    feeds back into training; :meth:`applied` swaps it into the model for an evaluation
    or an export. The average spans about the last ``1 / (1 - d)`` steps: a ninth of the
    steps so far while the ramp is below ``decay``, and with ``decay`` 0.999 the last 1000
    once the run passes step 8991.
    """

    def __init__(self, model, decay):
        if not 0 < decay < 1:
            raise UserError(f"WeightAverage: decay must be in (0, 1), got {decay}")
        self.model, self.decay, self.updates = model, float(decay), 0
        self.average = {name: store[key].copy() for name, store, key in model._named_state()}

    def update(self):
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, store, key in self.model._named_state():
            avg = self.average[name]
            self.average[name] = (d * avg + (1 - d) * store[key]).astype(avg.dtype, copy=False)

    @contextlib.contextmanager
    def applied(self):
        """The model holds the average inside the ``with``, its own weights again after it."""
        state = list(self.model._named_state())
        own = {name: store[key] for name, store, key in state}
        try:
            for name, store, key in state:
                store[key] = self.average[name]
            yield self.model
        finally:
            for name, store, key in state:
                store[key] = own[name]

    def state_dict(self):
        """The averages (as NumPy, keyed by the model's names) and ``{decay, updates}``."""
        return ({k: backend.to_numpy(v) for k, v in self.average.items()},
                {"decay": self.decay, "updates": self.updates})

    def load_state_dict(self, arrays, meta, source="weight average"):
        """The averages and the count of updates of :meth:`state_dict`; the decay stays this
        one's (a resumed run may change it with ``--override``)."""
        missing = sorted(set(self.average) - set(arrays))
        if missing:
            raise UserKeyError(f"{source}: no average for {len(missing)} array(s): "
                               f"{', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else ""))
        for name, old in self.average.items():
            if tuple(arrays[name].shape) != tuple(old.shape):
                raise UserError(f"{source}: the average of {name!r} has shape "
                                f"{tuple(arrays[name].shape)}, the model's {tuple(old.shape)}")
            self.average[name] = get_array_module(old).asarray(arrays[name], dtype=old.dtype)
        self.updates = int(meta["updates"])


def warmup_scale(step: int, warmup_steps: int, warmup_factor: float) -> float:
    """The warm-up's multiplier: linear from ``warmup_factor`` to 1 over ``warmup_steps``."""
    if step >= warmup_steps:
        return 1.0
    alpha = step / warmup_steps
    return warmup_factor * (1 - alpha) + alpha


def default_warmup_steps(total_steps: int) -> int:
    """5 % of the run, at least 1 step and at most 500."""
    return min(500, max(1, total_steps // 20))


@dataclass
class WarmupMultiStep:
    """lr(step): linear warm-up from ``warmup_factor * base_lr``, then x``gamma`` at each milestone.

    ssd.pytorch's VOC schedule is base_lr 1e-3, milestones (80k, 100k), 120k
    iterations; :meth:`scaled` keeps its shape for a shorter run.
    """
    base_lr: float
    milestones: tuple = ()
    gamma: float = 0.1
    warmup_steps: int = 0
    warmup_factor: float = 1.0 / 3

    def __post_init__(self):
        self.milestones = tuple(int(m) for m in self.milestones)
        if list(self.milestones) != sorted(self.milestones):
            raise UserError(f"WarmupMultiStep: milestones must increase, got {self.milestones}")

    def __call__(self, step: int) -> float:
        lr = self.base_lr * self.gamma ** sum(step >= m for m in self.milestones)
        return lr * warmup_scale(step, self.warmup_steps, self.warmup_factor)

    @classmethod
    def scaled(cls, base_lr, total_steps, warmup_steps=None, fractions=(2 / 3, 5 / 6), gamma=0.1):
        """The SSD schedule (decay at 80k/120k and 100k/120k) stretched to ``total_steps``."""
        if warmup_steps is None:
            warmup_steps = default_warmup_steps(total_steps)
        return cls(base_lr, tuple(int(f * total_steps) for f in fractions), gamma, warmup_steps)


@dataclass
class WarmupCosine:
    """lr(step): the same linear warm-up, then half a cosine from ``base_lr`` down to 0.

    Not the paper's schedule: the alternative issue 18 asks to measure (SGDR,
    Loshchilov & Hutter 2017, without restarts). After the warm-up, at step t of
    ``total_steps``:

        lr = base_lr * (1 + cos(pi * (t - warmup) / (total - warmup))) / 2
    """
    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    warmup_factor: float = 1.0 / 3

    def __post_init__(self):
        if not 0 <= self.warmup_steps < self.total_steps:
            raise UserError(f"WarmupCosine: warmup_steps must be in [0, total_steps), got "
                            f"{self.warmup_steps} of {self.total_steps}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * warmup_scale(step, self.warmup_steps, self.warmup_factor)
        t = min(step - self.warmup_steps, self.total_steps - self.warmup_steps)
        return self.base_lr * (1 + math.cos(math.pi * t / (self.total_steps - self.warmup_steps))) / 2

    @classmethod
    def scaled(cls, base_lr, total_steps, warmup_steps=None):
        """A cosine over ``total_steps``, with :meth:`WarmupMultiStep.scaled`'s warm-up."""
        if warmup_steps is None:
            warmup_steps = default_warmup_steps(total_steps)
        return cls(base_lr, total_steps, min(warmup_steps, total_steps - 1))
