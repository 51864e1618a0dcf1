"""Chapters 5-8 and 10: the detector itself.

config        SSDConfig: SSD300, SSD512, ssd-tiny; the paper's scale formula    (ch. 6)
architecture  SSDArch: the VGG16 base, atrous fc6/fc7 and the extra layers      (ch. 5)
model         SSD: base, extras and heads, forward and backward by hand        (ch. 5)
summary       the model table: per layer output shape, parameters, MACs         (ch. 5)
priors        default boxes (8732 for SSD300)                                   (ch. 6)
boxes         xyxy <-> cxcywh, IoU, encode/decode with variances                (ch. 7)
matching      ground truth -> default boxes                                     (ch. 7)
loss          MultiBoxLoss: smooth L1 + cross-entropy, hard negative mining     (ch. 8)
postprocess   decode + per-class non-maximum suppression                        (ch. 10)
"""
