"""Published weights without torch.

pth      PyTorch .pth reader (restricted unpickler: arrays only)
weights  torchvision VGG16 (fc6/fc7 decimated) and ssd.pytorch SSD300 into minissd
"""
