"""What bench_model.py and bench_gpu.py share: twin networks (minissd and PyTorch holding
the same weights), fixed random training targets, and MultiBoxLoss written in torch.

Import it after the thread settings: it imports numpy and torch.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

from minissd.ssd.config import get_config
from minissd.ssd.loss import MultiBoxLoss
from minissd.ssd.model import SSD
from minissd.nn.optim import SGD
from minissd.interop.weights import from_ssd_pytorch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from torch_reference import TorchSSD, plan_of  # noqa: E402

NEG_POS_RATIO = 3
POSITIVE_FRACTION = 0.015      # share of default boxes that are positives in the fixed targets


def twin_models(name, num_classes, seed=0):
    """A minissd SSD and a TorchSSD holding the same weights."""
    cfg = get_config(name)
    model = SSD(cfg, num_classes, seed=seed)
    torch.manual_seed(seed)
    ref = TorchSSD(plan_of(model.arch), cfg.num_boxes_per_location, num_classes + 1)
    model.load_state_dict(from_ssd_pytorch(model, {k: v.numpy() for k, v in ref.state_dict().items()}))
    return cfg, model, ref


def random_targets(B, P, num_classes, rng):
    labels = np.where(rng.random((B, P)) < POSITIVE_FRACTION,
                      rng.integers(1, num_classes + 1, (B, P)), 0).astype(np.int64)   # (B, P)
    offsets = rng.standard_normal((B, P, 4)).astype(np.float32)                        # (B, P, 4)
    return offsets, labels


def torch_multibox_loss(loc, conf, loc_t, conf_t):
    """MultiBoxLoss in torch: (smooth L1 on positives + CE on positives and mined negatives) / N."""
    B, P, K = conf.shape
    pos = conf_t > 0
    n = pos.sum().clamp(min=1)
    loss_loc = F.smooth_l1_loss(loc[pos], loc_t[pos], reduction="sum")
    ce = F.cross_entropy(conf.reshape(-1, K), conf_t.reshape(-1), reduction="none").view(B, P)
    with torch.no_grad():
        hardness = ce.masked_fill(pos, -float("inf"))
        rank = hardness.argsort(1, descending=True).argsort(1)
        num_pos = pos.sum(1, keepdim=True)
        quota = torch.minimum(NEG_POS_RATIO * num_pos, P - num_pos)
        selected = pos | ((rank < quota) & ~pos)
    return (loss_loc + ce[selected].sum()) / n


def training_steps(model, ref, images, loc_t, conf_t, xp=np, torch_device="cpu"):
    """(minissd_step, torch_step): one SGD step (lr 1e-4, momentum 0.9, weight decay 5e-4)
    of each network on the same fixed batch; neither computes the images' gradient."""
    x, lt, ct = (xp.asarray(a) for a in (images, loc_t, conf_t))
    criterion = MultiBoxLoss(neg_pos_ratio=NEG_POS_RATIO)
    opt = SGD(model, lr=1e-4, momentum=0.9, weight_decay=5e-4)

    def minissd_step():
        loc, conf = model.forward(x)
        criterion.forward(loc, conf, lt, ct)
        model.backward(*criterion.backward(), need_dimages=False)
        opt.step()

    tx, tlt, tct = (torch.from_numpy(a).to(torch_device) for a in (images, loc_t, conf_t))
    t_opt = torch.optim.SGD(ref.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)

    def torch_step():
        t_opt.zero_grad()
        loc, conf = ref(tx)
        torch_multibox_loss(loc, conf, tlt, tct).backward()
        t_opt.step()

    return minissd_step, torch_step
