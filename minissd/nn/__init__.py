"""Chapters 1-4: a small neural-network library on NumPy and CuPy.

backend    NumPy/CuPy: get_array_module, to_numpy, to_device (the only module importing CuPy)
module     Module: params/grads, train/eval, to(device), state_dict as .npz
layers     Conv2d (im2col/col2im, dilation), MaxPool2d, ReLU, L2Norm, BatchNorm2d, Sequential
gradcheck  finite-difference gradient checks (float64, random upstream gradient)
optim      SGD with momentum and weight decay; warm-up + multi-step learning rate
"""
