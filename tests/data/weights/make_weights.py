"""Make the small weight fixtures for tests/test_weights.py (run once; needs torch).

    .venv/bin/python tests/data/weights/make_weights.py

Writes, beside this script, for a "mini" SSD (the SSD300 design with 4-16
channels: ceil-mode pool3, atrous fc6, L2Norm, 4 source maps, 44-px input):

  mini.json                     the SSDArch and SSDConfig of the mini model, 2 classes
  mini_ssd_pytorch.pth          an ssd.pytorch-layout state dict (tests/torch_reference.py's
                                TorchSSD, random init), saved in torch's legacy (non-zip)
                                format like ssd300_mAP_77.43_v2.pth
  mini_ssd_pytorch_expected.npz images (2, 3, 44, 44) and TorchSSD's loc, conf on them, in float64
                                (the float32 weights and images cast up), so a test can compare
                                minissd's float64 forward with a tight tolerance
  mini_vgg16_torchvision.pth    a torchvision-VGG16-layout state dict (features.N,
                                classifier.0/3/6) whose classifier has 4x the channels of
                                the mini fc6/fc7, as VGG16's 4096 are 4x SSD's 1024
  mini_vgg16_expected.npz       the minissd parameters it must load into, computed here
                                with torch's index_select, independently of minissd.interop.weights

The names and indices below are written out by hand on purpose: the tests
check minissd's key mapping against them.
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))          # tests/, for torch_reference
from torch_reference import TorchSSD  # noqa: E402

FC_FACTOR = 4   # VGG16: 4096 fully connected channels -> SSD's 1024
MINI_ARCH = {
    "name": "mini", "base": [4, 4, "M", 8, 8, "M", 8, "C", 16], "base_tail": ["M", 16],
    "fc6": 8, "fc6_dilation": 2, "fc7": 8,
    "extras": [[8, 16, 3, 2, 1], [8, 16, 3, 2, 1]],
    "l2norm_scale": 20.0, "in_channels": 3, "base_init": "he",
}
# 44 -> 22 -> 11 -> 6 (ceil) = source 1; 3 (pool4, fc7) ; 2 ; 1
MINI_CONFIG = {
    "name": "mini", "image_size": 44, "feature_maps": [6, 3, 2, 1], "steps": [8, 16, 22, 44],
    "min_sizes": [4.4, 8.8, 19.8, 30.8], "max_sizes": [8.8, 19.8, 30.8, 41.8],
    "aspect_ratios": [[2], [2, 3], [2], [2]], "variances": [0.1, 0.2], "clip": True,
}
NUM_CLASSES = 2
BOXES = [2 + 2 * len(a) for a in MINI_CONFIG["aspect_ratios"]]

# minissd's names of the mini base convs, and their index in torchvision's `features`
TORCHVISION_CONVS = [("conv1_1", 0), ("conv1_2", 2), ("conv2_1", 5), ("conv2_2", 7),
                     ("conv3_1", 10), ("conv4_1", 13), ("conv5_1", 16)]


def torchvision_like_vgg():
    """torchvision's VGG layout for the mini channels: features (pools all 'M') + classifier."""
    layers, c = [], 3
    for v in MINI_ARCH["base"] + MINI_ARCH["base_tail"] + ["M"]:
        if v in ("M", "C"):
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v
    F = MINI_ARCH["fc6"] * FC_FACTOR
    model = nn.Module()
    model.features = nn.Sequential(*layers)
    model.classifier = nn.Sequential(nn.Linear(c * 7 * 7, F), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(F, F), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(F, 10))
    for name, i in TORCHVISION_CONVS:      # sanity: the hand-written indices are convs
        assert isinstance(model.features[i], nn.Conv2d), name
    return model


def decimate(t, steps):
    """Keep every steps[d]-th entry along each dimension d (None: all), starting at 0."""
    for d, m in enumerate(steps):
        if m is not None:
            t = t.index_select(d, torch.arange(0, t.size(d), m))
    return t


def main():
    torch.manual_seed(0)
    with open(os.path.join(HERE, "mini.json"), "w") as f:
        json.dump({"arch": MINI_ARCH, "config": MINI_CONFIG, "num_classes": NUM_CLASSES}, f, indent=1)

    # ssd.pytorch layout
    ssd = TorchSSD(MINI_ARCH, BOXES, NUM_CLASSES + 1).eval()
    with torch.no_grad():
        for p in ssd.parameters():       # biases too, so a mixed-up bias shows
            p.add_(0.1 * torch.randn_like(p))
    torch.save(ssd.state_dict(), os.path.join(HERE, "mini_ssd_pytorch.pth"),
               _use_new_zipfile_serialization=False)
    images = torch.randn(2, 3, MINI_CONFIG["image_size"], MINI_CONFIG["image_size"])
    with torch.no_grad():
        loc, conf = ssd.double()(images.double())
    np.savez(os.path.join(HERE, "mini_ssd_pytorch_expected.npz"), images=images.numpy(),
             loc=loc.numpy(), conf=conf.numpy())

    # torchvision layout
    vgg = torchvision_like_vgg()
    state = vgg.state_dict()
    torch.save(state, os.path.join(HERE, "mini_vgg16_torchvision.pth"))
    expected = {}
    for name, i in TORCHVISION_CONVS:
        expected[f"vgg.{name}.weight"] = state[f"features.{i}.weight"].numpy()
        expected[f"vgg.{name}.bias"] = state[f"features.{i}.bias"].numpy()
    F, C = state["classifier.0.weight"].shape[0], MINI_ARCH["base_tail"][-1]
    w6 = state["classifier.0.weight"].view(F, C, 7, 7)
    expected["vgg.fc6.weight"] = decimate(w6, [FC_FACTOR, None, 3, 3]).numpy()
    expected["vgg.fc6.bias"] = decimate(state["classifier.0.bias"], [FC_FACTOR]).numpy()
    w7 = state["classifier.3.weight"].view(F, F, 1, 1)
    expected["vgg.fc7.weight"] = decimate(w7, [FC_FACTOR, FC_FACTOR, None, None]).numpy()
    expected["vgg.fc7.bias"] = decimate(state["classifier.3.bias"], [FC_FACTOR]).numpy()
    np.savez(os.path.join(HERE, "mini_vgg16_expected.npz"), **expected)
    for f in sorted(os.listdir(HERE)):
        print(f"{f:<34} {os.path.getsize(os.path.join(HERE, f)):>8} bytes")


if __name__ == "__main__":
    main()
