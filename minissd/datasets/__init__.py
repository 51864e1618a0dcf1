"""Data: VOC-layout folders in, batches of images and boxes out (chapters 8-9).

voc        VOCDataset: any VOC-layout folder and class list
augment    SSD's augmentation: photometric distortions, zoom out, IoU crops, flip
loader     DataLoader: background workers, deterministic order per (seed, epoch)
synthetic  the built-in shapes data set, written in VOC layout
"""
