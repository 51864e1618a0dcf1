"""Chapters 1-4: a small neural-network library on NumPy and CuPy.

backend     NumPy/CuPy: get_array_module, to_numpy, to_device (the only module importing CuPy)
module      Module: params/grads, train/eval, to(device), state_dict as .npz
functional  the textbook ops for the whole batch, each backward under its forward: im2col/col2im,
            conv2d (dx, dW, db), max pooling, ReLU, L2Norm, BatchNorm
layers      Conv2d (dilation), MaxPool2d, ReLU, L2Norm, BatchNorm2d, Sequential: one dispatch per
            method to functional or fast
fast        the CPU fast paths (chunks on threads, bands, tap blocks, kept columns, stacked convs),
            tested equal to functional; off with fast.set_enabled(False) or MINISSD_FAST=0
threads     minissd's thread pool and the OpenBLAS pinning (used by fast only)
gradcheck   finite-difference gradient checks (float64, random upstream gradient)
optim       SGD with momentum and weight decay, AdamW; warm-up + multi-step learning rate
"""
