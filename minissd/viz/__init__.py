"""Drawing helpers, one module per group of chapters; every name is also here (``from
minissd.viz import draw_boxes``), so a chapter imports from ``minissd.viz`` alone.

- :mod:`minissd.viz.photos`: boxes on photos, class colours and captions, grids, augmentation
  (chapter 9) — ``draw_boxes``, ``show_detections``, ``add_boxes``, ``show_augmented``;
- :mod:`minissd.viz.cnn`: the CNN from scratch (chapters 1-4) — the backend diagram, pooling's
  ceil mode, convolution as a GEMM, dilation's taps, the backward passes, gradient checks;
- :mod:`minissd.viz.network`: the network (chapter 5) — ``draw_architecture`` (the paper's
  Fig. 2, drawn from the model), source maps, receptive fields, the budget per block;
- :mod:`minissd.viz.default_boxes`: the default boxes (chapter 6);
- :mod:`minissd.viz.matching_and_loss`: IoU, matching, the encoding and the loss (chapters 7, 8);
- :mod:`minissd.viz.training`: the training log and mAP curves (chapter 9);
- :mod:`minissd.viz.detections`: NMS, detections judged against the truth, AP by hand (chapter 10).

Boxes are pixel xyxy; multiply [0, 1] boxes by the image size first. Labels are 1..C (0 is the
background), so the name of label k is ``class_names[k - 1]``. matplotlib is imported inside
the functions that plot, so drawing on PIL images does not need it.
"""
from minissd.viz.cnn import (draw_backend_diagram, draw_ceil_mode, draw_conv_backward,
                             draw_conv_gemm, draw_dilation_taps, draw_gradient_check,
                             draw_tap_subsampling, show_column_matrix, show_pool_backward,
                             show_tap_counts)
from minissd.viz.default_boxes import draw_box_scales, draw_box_shapes, draw_default_boxes_at
from minissd.viz.detections import (JUDGED_COLOURS, draw_ap_by_hand, draw_nms_steps,
                                    judged_legend, show_judged)
from minissd.viz.matching_and_loss import (draw_encoding, draw_iou, draw_iou_heatmaps,
                                           draw_loss_balance, plot_positives_by_threshold,
                                           plot_regression_losses, plot_target_histograms)
from minissd.viz.network import (ARCHITECTURE_PARTS, draw_architecture, draw_model_budget,
                                 draw_receptive_fields, show_source_maps)
from minissd.viz.photos import (FONT_SIZE, PALETTE, add_boxes, backdrop, box_caption,
                                class_color, denormalize, draw_boxes, make_grid, save_grid,
                                show_augmentation_steps, show_augmented, show_detections)
from minissd.viz.training import (moving_average, plot_eval_curves, plot_train_log,
                                  read_eval_log, read_train_log)

__all__ = [
    "draw_backend_diagram", "draw_ceil_mode", "draw_conv_backward", "draw_conv_gemm",
    "draw_dilation_taps", "draw_gradient_check", "draw_tap_subsampling", "show_column_matrix",
    "show_pool_backward", "show_tap_counts",
    "draw_box_scales", "draw_box_shapes", "draw_default_boxes_at",
    "JUDGED_COLOURS", "draw_ap_by_hand", "draw_nms_steps", "judged_legend", "show_judged",
    "draw_encoding", "draw_iou", "draw_iou_heatmaps", "draw_loss_balance",
    "plot_positives_by_threshold", "plot_regression_losses", "plot_target_histograms",
    "ARCHITECTURE_PARTS", "draw_architecture", "draw_model_budget", "draw_receptive_fields",
    "show_source_maps",
    "FONT_SIZE", "PALETTE", "add_boxes", "backdrop", "box_caption", "class_color", "denormalize",
    "draw_boxes", "make_grid", "save_grid", "show_augmentation_steps", "show_augmented",
    "show_detections",
    "moving_average", "plot_eval_curves", "plot_train_log", "read_eval_log", "read_train_log",
]
