"""minissd: the SSD object detector written by hand on NumPy (CPU) and CuPy (GPU).

The folders follow the chapters: ``minissd.nn`` (arrays, layers, backprop:
chapters 1-4), ``minissd.ssd`` (network, default boxes, matching, loss,
decoding: 5-8 and 10), ``minissd.datasets`` (VOC reader, augmentation, loader,
synthetic shapes), ``minissd.evaluation`` (detector, mAP), ``minissd.interop``
(PyTorch .pth files); ``checkpoint``, ``train``, ``cli`` and ``viz`` on top.
"""
from minissd import _moved

__version__ = "0.1.0"

_moved.install()          # `import minissd.layers` (0.1's flat names) still works, with a warning
