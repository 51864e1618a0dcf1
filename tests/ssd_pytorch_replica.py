"""ssd.pytorch's test-time path in PyTorch, head to tail, the reference for the ssd.pytorch tests.

Written for minissd's tests from the published code of amdegroot/ssd.pytorch (master):
data/config.py (``voc``: the SSD300 numbers, ``MEANS``), data/__init__.py (``base_transform``),
data/voc0712.py (``VOCDetection.pull_item``: the flip "to rgb"), layers/functions/prior_box.py
(``PriorBox.forward``), layers/box_utils.py (``decode``, ``nms``), layers/functions/detection.py
(``Detect.forward``) and ssd.py (phase 'test': softmax, then ``Detect(num_classes, 0, 200,
0.01, 0.45)``). The network itself is tests/torch_reference.py's ``TorchSSD``. It imports
nothing from minissd, and keeps ssd.pytorch's arithmetic where the float32 rounding could
tell: the order of the operations in decode and in nms's IoU. Needs torch.
"""
from itertools import product
from math import sqrt

import numpy as np
import torch

VOC_SSD300 = {                                   # data/config.py, voc
    "num_classes": 21, "feature_maps": [38, 19, 10, 5, 3, 1], "min_dim": 300,
    "steps": [8, 16, 32, 64, 100, 300], "min_sizes": [30, 60, 111, 162, 213, 264],
    "max_sizes": [60, 111, 162, 213, 264, 315], "aspect_ratios": [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
    "variance": [0.1, 0.2], "clip": True,
}
MEANS = (104, 117, 123)                          # data/config.py: BGR


def preprocess(image_bgr, size=300):
    """base_transform, then pull_item's flip to RGB: uint8 (S, S, 3) BGR -> (3, S, S) tensor.

    (cv2.resize to the size the image already has changes nothing, so it is left out:
    the tests feed 300 x 300 images.)
    """
    assert image_bgr.shape[:2] == (size, size), "the replica leaves resizing out"
    x = image_bgr.astype(np.float32)
    x -= np.array(MEANS, dtype=np.float32)
    x = x[:, :, (2, 1, 0)]                                   # "to rgb"
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)


def prior_box(cfg=VOC_SSD300):
    """PriorBox.forward: (8732, 4) float32 (cx, cy, w, h), clamped as numbers to [0, 1]."""
    rows = []
    for k, f in enumerate(cfg["feature_maps"]):
        for i, j in product(range(f), repeat=2):             # row i, column j
            f_k = cfg["min_dim"] / cfg["steps"][k]
            cx, cy = (j + 0.5) / f_k, (i + 0.5) / f_k
            s_k = cfg["min_sizes"][k] / cfg["min_dim"]
            rows.append([cx, cy, s_k, s_k])
            s_k_prime = sqrt(s_k * (cfg["max_sizes"][k] / cfg["min_dim"]))
            rows.append([cx, cy, s_k_prime, s_k_prime])
            for ar in cfg["aspect_ratios"][k]:
                rows.append([cx, cy, s_k * sqrt(ar), s_k / sqrt(ar)])
                rows.append([cx, cy, s_k / sqrt(ar), s_k * sqrt(ar)])
    priors = torch.tensor(rows, dtype=torch.float32)         # torch.Tensor(mean).view(-1, 4)
    if cfg["clip"]:
        priors.clamp_(max=1, min=0)
    return priors


def decode(loc, priors, variances):
    """box_utils.decode: (P, 4) offsets -> (P, 4) xyxy; x2 is computed as x1 + w, as there."""
    boxes = torch.cat((priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:],
                       priors[:, 2:] * torch.exp(loc[:, 2:] * variances[1])), 1)
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def nms(boxes, scores, overlap=0.5, top_k=200):
    """box_utils.nms: (indices kept, count), the best first.

    Only the ``top_k`` best scores enter. Scores are sorted ascending with torch's sort
    (not stable) and the walk takes the last one each time, so the order among equal
    scores is whatever torch.sort leaves.
    """
    keep = torch.zeros(scores.size(0), dtype=torch.long)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = torch.mul(x2 - x1, y2 - y1)
    _, idx = scores.sort(0)                                  # ascending
    idx = idx[-top_k:]
    count = 0
    while idx.numel() > 0:
        i = idx[-1]                                          # the best one left
        keep[count] = i
        count += 1
        if idx.size(0) == 1:
            break
        idx = idx[:-1]
        xx1 = torch.clamp(x1[idx], min=float(x1[i]))
        yy1 = torch.clamp(y1[idx], min=float(y1[i]))
        xx2 = torch.clamp(x2[idx], max=float(x2[i]))
        yy2 = torch.clamp(y2[idx], max=float(y2[i]))
        w = torch.clamp(xx2 - xx1, min=0.0)
        h = torch.clamp(yy2 - yy1, min=0.0)
        inter = w * h
        union = (area[idx] - inter) + area[i]                # this order, as there
        idx = idx[(inter / union).le(overlap)]
    return keep, count


def detect(loc, conf, priors, num_classes=21, top_k=200, conf_thresh=0.01, nms_thresh=0.45,
           variances=(0.1, 0.2)):
    """Detect.forward: (B, P, 4) offsets, (B, P, C+1) softmax scores -> (B, C+1, top_k, 5).

    Row ``[b, cl, n]`` is (score, x1, y1, x2, y2) of class cl's n-th detection, best first;
    unused rows are zeros.
    """
    num = loc.size(0)
    output = torch.zeros(num, num_classes, top_k, 5)
    conf_preds = conf.view(num, priors.size(0), num_classes).transpose(2, 1)
    for i in range(num):
        decoded_boxes = decode(loc[i], priors, variances)      # not clipped to the image
        conf_scores = conf_preds[i].clone()
        for cl in range(1, num_classes):
            c_mask = conf_scores[cl].gt(conf_thresh)
            scores = conf_scores[cl][c_mask]
            if scores.size(0) == 0:
                continue
            boxes = decoded_boxes[c_mask.unsqueeze(1).expand_as(decoded_boxes)].view(-1, 4)
            ids, count = nms(boxes, scores, nms_thresh, top_k)
            output[i, cl, :count] = torch.cat((scores[ids[:count]].unsqueeze(1),
                                               boxes[ids[:count]]), 1)
    # ssd.pytorch's last step, meant to keep the top_k of all classes: boolean indexing
    # makes a copy, so fill_ zeroes the copy and ``output`` is returned unchanged.
    flt = output.contiguous().view(num, -1, 5)
    _, idx = flt[:, :, 0].sort(1, descending=True)
    _, rank = idx.sort(1)
    flt[(rank < top_k).unsqueeze(-1).expand_as(flt)].fill_(0)
    return output


def run(net, image_rgb, priors):
    """The whole test-time path on one uint8 (300, 300, 3) RGB image (OpenCV would give BGR).

    Returns the raw (loc (1, P, 4), conf logits (1, P, C+1)) and Detect's output.
    """
    x = preprocess(np.ascontiguousarray(image_rgb[:, :, ::-1]))[None]   # (1, 3, 300, 300)
    with torch.no_grad():
        loc, conf = net(x)
        out = detect(loc, torch.softmax(conf, dim=-1), priors, num_classes=conf.size(2))
    return loc, conf, out
