"""A PyTorch SSD in ssd.pytorch's layout (amdegroot/ssd.pytorch, ssd.py), the reference for tests.

Same module names as ssd.pytorch, so its ``state_dict()`` has the keys of a
released checkpoint: ``vgg.{i}``, ``L2Norm.weight``, ``extras.{j}``,
``loc.{m}``, ``conf.{m}``. Built from the numbers of a minissd ``SSDArch``
(plan tuples, fc6/fc7, extras), but written independently of minissd's
builders. Used by tests/test_model.py, tests/test_weights.py, the fixture
script in tests/data/weights/ and benchmarks/bench_model.py. Needs torch.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class L2Norm(nn.Module):
    """ssd.pytorch's L2Norm: weight * x / (||x||_channels + eps)."""

    def __init__(self, channels, scale, eps=1e-10):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))
        self.eps = eps

    def forward(self, x):
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return self.weight[None, :, None, None] * (x / norm)


def vgg(plan, in_channels):
    """ssd.pytorch's vgg(): 3x3 convs + ReLU, 'M'/'C' pools, then pool5, conv6 (atrous), conv7.

    (plan["stem_stride"], if given, is the first conv's stride; with plan["batch_norm"] a
    BatchNorm2d sits between each conv (then bias-free) and its ReLU, fc6/fc7 included.)
    """
    bn = plan.get("batch_norm", False)

    def block(conv):
        return [conv] + ([nn.BatchNorm2d(conv.out_channels)] if bn else []) + [nn.ReLU(inplace=True)]

    layers, stride = [], plan.get("stem_stride", 1)
    for v in list(plan["base"]) + list(plan["base_tail"]):
        if v == "M":
            layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
        elif v == "C":
            layers += [nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)]
        else:
            layers += block(nn.Conv2d(in_channels, v, kernel_size=3, stride=stride, padding=1, bias=not bn))
            in_channels, stride = v, 1
    d = plan["fc6_dilation"]
    layers += [nn.MaxPool2d(kernel_size=3, stride=1, padding=1)]
    layers += block(nn.Conv2d(in_channels, plan["fc6"], kernel_size=3, padding=d, dilation=d, bias=not bn))
    layers += block(nn.Conv2d(plan["fc6"], plan["fc7"], kernel_size=1, bias=not bn))
    return layers


def add_extras(plan):
    """ssd.pytorch's add_extras(): a 1x1 and a k x k conv per extra source (ReLUs in forward)."""
    layers, c, bias = [], plan["fc7"], not plan.get("batch_norm", False)
    for mid, out, k, s, p in plan["extras"]:
        layers += [nn.Conv2d(c, mid, kernel_size=1, bias=bias),
                   nn.Conv2d(mid, out, kernel_size=k, stride=s, padding=p, bias=bias)]
        c = out
    return layers


class TorchSSD(nn.Module):
    """ssd.pytorch's SSD (phase 'train' output: loc (B, P, 4), conf (B, P, num_classes))."""

    def __init__(self, plan, boxes_per_location, num_classes):
        super().__init__()
        self.num_classes = num_classes                     # including background
        self.vgg = nn.ModuleList(vgg(plan, plan.get("in_channels", 3)))
        # source 1 is the ReLU after the last conv of plan["base"] (index 22 in SSD300)
        per_conv = 3 if plan.get("batch_norm", False) else 2
        self.split = per_conv * sum(isinstance(v, int) for v in plan["base"]) + \
            sum(v in ("M", "C") for v in plan["base"])
        last = [v for v in plan["base"] if isinstance(v, int)][-1]
        self.L2Norm = L2Norm(last, plan["l2norm_scale"])
        self.extras = nn.ModuleList(add_extras(plan))
        if plan.get("batch_norm", False):   # not in ssd.pytorch: one BatchNorm per extra conv
            self.extras_bn = nn.ModuleList(nn.BatchNorm2d(c.out_channels) for c in self.extras)
        channels = [last, plan["fc7"]] + [e[1] for e in plan["extras"]]
        self.loc = nn.ModuleList(nn.Conv2d(c, k * 4, 3, padding=1)
                                 for c, k in zip(channels, boxes_per_location))
        self.conf = nn.ModuleList(nn.Conv2d(c, k * num_classes, 3, padding=1)
                                  for c, k in zip(channels, boxes_per_location))

    def forward(self, x):
        sources = []
        for k in range(self.split):
            x = self.vgg[k](x)
        sources.append(self.L2Norm(x))
        for k in range(self.split, len(self.vgg)):
            x = self.vgg[k](x)
        sources.append(x)
        for k, v in enumerate(self.extras):
            x = v(x)
            if hasattr(self, "extras_bn"):
                x = self.extras_bn[k](x)
            x = F.relu(x, inplace=True)
            if k % 2 == 1:
                sources.append(x)
        loc = [l(s).permute(0, 2, 3, 1).contiguous() for s, l in zip(sources, self.loc)]
        conf = [c(s).permute(0, 2, 3, 1).contiguous() for s, c in zip(sources, self.conf)]
        loc = torch.cat([o.view(o.size(0), -1) for o in loc], 1)
        conf = torch.cat([o.view(o.size(0), -1) for o in conf], 1)
        return loc.view(loc.size(0), -1, 4), conf.view(conf.size(0), -1, self.num_classes)


def plan_of(arch):
    """The numbers of a minissd SSDArch as a plain dict (so this file needs no minissd import)."""
    return {"base": tuple(arch.base), "base_tail": tuple(arch.base_tail), "fc6": arch.fc6,
            "fc6_dilation": arch.fc6_dilation, "fc7": arch.fc7, "extras": tuple(arch.extras),
            "l2norm_scale": arch.l2norm_scale, "in_channels": arch.in_channels,
            "stem_stride": arch.stem_stride, "batch_norm": arch.batch_norm}
