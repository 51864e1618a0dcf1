"""Chapter 10: running a trained model and scoring it.

inference  Detector (image -> boxes, labels, scores) and data-set evaluation
metrics    VOC07 11-point / VOC10 all-point AP and mAP
"""
