"""SSD's MultiBox loss with hard negative mining, forward and backward by hand.

    L = (L_conf + alpha * L_loc) / N

N is the number of positive (matched) default boxes in the batch.
L_loc is smooth L1 between predicted and target offsets, over positives only.
L_conf is softmax cross-entropy over the positives and the *mined* negatives:
of the ~8700 default boxes most are easy background, so per image only the
negatives with the highest cross-entropy are kept, at most ``neg_pos_ratio``
(3) per positive of that image and never more than there are negatives.

Mining is vectorised with ssd.pytorch's rank trick: argsort the negatives'
losses (descending), argsort again to get each box's rank, keep rank < quota.
The selection is a constant mask for the gradient (as in every SSD). On NumPy
the fast path (:func:`minissd.ssd.fast.mine`) finds the same boxes with one
partition per image instead of two sorts.

Default boxes whose target is -1 are ignored (``match_batch(..., ignore_threshold=t)``
marks the background boxes that overlap an object by IoU in [t, match threshold)): no
offsets, no cross-entropy, never mined; the quota is then at most the negatives left.

A batch without positives (N = 0) mines nothing and divides by max(N, 1),
so its loss is 0, not NaN, and its gradients are exactly zero (with the focal
loss below its background boxes still count, divided by 1).

``focal_gamma = g > 0`` replaces the mining with RetinaNet's focal loss (Lin et al.
2017), softmax form: every default box counts, its cross-entropy weighted by
(1 - p_t)^g, p_t the probability of its target class, so the easy background
boxes weigh almost nothing; still / N. Its gradient on the logits is
(softmax - one_hot) * ((1 - p_t)^g + g (1 - p_t)^(g-1) p_t CE). It wants the
background bias started high (:meth:`minissd.ssd.model.SSD.set_background_prior`).
"""
from __future__ import annotations

import numpy as np

from minissd.nn import fast
from minissd.nn.backend import get_array_module, stable_argsort
from minissd.ssd import fast as ssd_fast


class MultiBoxLoss:
    """Smooth L1 (positives) + mined softmax cross-entropy (or, with ``focal_gamma``, the focal
    loss over every box), both / N; ``forward`` then ``backward``."""

    def __init__(self, neg_pos_ratio=3, alpha=1.0, focal_gamma=0.0):
        if neg_pos_ratio < 0:
            raise ValueError(f"MultiBoxLoss: neg_pos_ratio must be >= 0, got {neg_pos_ratio}")
        if not focal_gamma >= 0:
            raise ValueError(f"MultiBoxLoss: focal_gamma must be >= 0 (0: hard negative mining), "
                             f"got {focal_gamma}")
        self.neg_pos_ratio = neg_pos_ratio
        self.alpha = alpha
        self.focal_gamma = focal_gamma
        self.loss_loc = self.loss_conf = None
        self._cache = None

    def __call__(self, *args):
        return self.forward(*args)

    @staticmethod
    def _check(loc_pred, conf_pred, loc_targets, conf_targets):
        if loc_pred.ndim != 3 or loc_pred.shape[2] != 4:
            raise ValueError(f"MultiBoxLoss: loc_pred must be (B, P, 4), got {tuple(loc_pred.shape)}")
        B, P, _ = loc_pred.shape
        if conf_pred.ndim != 3 or conf_pred.shape[:2] != (B, P) or conf_pred.shape[2] < 2:
            raise ValueError(f"MultiBoxLoss: conf_pred must be ({B}, {P}, C+1) with C >= 1, "
                             f"got {tuple(conf_pred.shape)}")
        if loc_targets.shape != loc_pred.shape:
            raise ValueError(f"MultiBoxLoss: loc_targets has shape {tuple(loc_targets.shape)}, "
                             f"expected {tuple(loc_pred.shape)} like loc_pred")
        if conf_targets.shape != (B, P):
            raise ValueError(f"MultiBoxLoss: conf_targets has shape {tuple(conf_targets.shape)}, "
                             f"expected ({B}, {P})")
        K = conf_pred.shape[2]
        if bool((conf_targets < -1).any()) or bool((conf_targets >= K).any()):
            raise ValueError(f"MultiBoxLoss: conf_targets must be in -1..{K - 1} (0 = background, "
                             f"-1 = ignored), got {int(conf_targets.min())}..{int(conf_targets.max())}")

    def mine(self, ce, positive, ignored=None):
        """(B, P) cross-entropies, positive mask and (optional) ignored mask -> (B, P) mask of
        the hard negatives kept."""
        xp = get_array_module(ce)
        if xp is np and fast.enabled() and bool(np.isfinite(ce).all()):  # fast path: a partition per photo
            return ssd_fast.mine(ce, positive, self.neg_pos_ratio, ignored)
        P = ce.shape[1]
        out = positive if ignored is None else positive | ignored       # (B, P) never negatives
        num_pos = positive.sum(axis=1, keepdims=True)                   # (B, 1)
        num_out = out.sum(axis=1, keepdims=True)                        # (B, 1)
        quota = xp.minimum(self.neg_pos_ratio * num_pos, P - num_out)    # (B, 1) <= negatives
        hardness = xp.where(out, -xp.inf, ce)                           # (B, P) positives last
        order = stable_argsort(-hardness, axis=1)                       # (B, P) hardest first
        rank = stable_argsort(order, axis=1)                            # (B, P) rank of each box
        return (rank < quota) & ~out

    def forward(self, loc_pred, conf_pred, loc_targets, conf_targets):
        """(B, P, 4) offsets, (B, P, C+1) logits and their targets -> the loss, a Python float."""
        self._check(loc_pred, conf_pred, loc_targets, conf_targets)
        xp = get_array_module(loc_pred, conf_pred)
        conf_targets = conf_targets.astype("int64")
        positive = conf_targets > 0                                              # (B, P)
        ignored = conf_targets < 0                                               # (B, P) the band
        n = max(int(positive.sum()), 1)                                          # N, never 0

        diff = loc_pred - loc_targets                                            # (B, P, 4)
        absd = xp.abs(diff)
        smooth_l1 = xp.where(absd < 1, 0.5 * diff * diff, absd - 0.5).sum(axis=2)  # (B, P)

        peak = conf_pred.max(axis=2, keepdims=True)                              # (B, P, 1)
        shifted = conf_pred - peak
        log_z = xp.log(xp.exp(shifted).sum(axis=2, keepdims=True))               # (B, P, 1) log-sum-exp
        log_p = shifted - log_z                                                  # (B, P, K)
        target = xp.maximum(conf_targets, 0)                                     # -1 read as 0
        ce = -xp.take_along_axis(log_p, target[:, :, None], axis=2)[:, :, 0]     # (B, P)

        loss_loc = xp.where(positive, smooth_l1, 0).sum() / n
        if not self.focal_gamma:                    # the paper's: hard negatives at most 3:1
            negative = self.mine(ce, positive, ignored)                          # (B, P)
            selected = positive | negative
            loss_conf = xp.where(selected, ce, 0).sum() / n
        else:                                       # focal loss: every box, weighted, no mining
            negative = ~positive & ~ignored
            weight, selected = self._focal(ce)                                   # (B, P) each
            selected = xp.where(ignored, 0, selected)
            loss_conf = xp.where(ignored, 0, weight * ce).sum() / n
        self.loss_loc, self.loss_conf = float(loss_loc), float(loss_conf)
        self.num_pos, self.positive, self.negative = n, positive, negative
        self._cache = (diff, log_p, conf_targets, positive, selected, n)
        return self.loss_conf + self.alpha * self.loss_loc

    def _focal(self, ce):
        """(B, P) cross-entropies -> the weights w = (1 - p_t)^g, p_t = exp(-CE), and
        d (w CE) / d CE = w + g (1 - p_t)^(g-1) p_t CE, what multiplies d CE / d logits."""
        xp = get_array_module(ce)
        g, q = self.focal_gamma, -xp.expm1(-ce)                  # q = 1 - p_t, exact for small ce
        weight = q ** g
        q_safe = xp.where(q > 0, q, 1)                           # q = 0 only where CE = 0
        return weight, weight + xp.where(q > 0, g * q_safe ** (g - 1) * xp.exp(-ce) * ce, 0)

    def backward(self, dloss=1.0):
        """d loss / d (loc_pred, conf_pred), times the upstream scalar ``dloss``."""
        if self._cache is None:
            raise RuntimeError("MultiBoxLoss.backward called before forward")
        diff, log_p, conf_targets, positive, selected, n = self._cache
        xp = get_array_module(diff)
        # smooth L1' = d inside (-1, 1), sign(d) outside: clip(d, -1, 1)
        dloc = xp.clip(diff, -1, 1) * positive[:, :, None] * (self.alpha * dloss / n)  # (B, P, 4)
        # d CE / d logits = softmax - one_hot(target), on selected boxes only (with the focal
        # loss ``selected`` is each box's factor d (w CE) / d CE instead of a 0/1 mask)
        one_hot = xp.arange(log_p.shape[2])[None, None, :] == conf_targets[:, :, None]  # (B, P, K)
        dconf = (xp.exp(log_p) - one_hot) * selected[:, :, None] * (dloss / n)          # (B, P, K)
        return dloc.astype(diff.dtype), dconf.astype(log_p.dtype)
