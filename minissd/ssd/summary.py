"""The model table: per layer its output shape, parameters and multiply-adds; totals.

Compute is counted in MACs (multiply-accumulates) of the convolutions: a conv
with C inputs, K outputs and a kh x kw kernel does C*kh*kw*K MACs per output
pixel. FLOPs = 2 x MACs (one multiply, one add). Biases, ReLU, pooling and
L2Norm are left out (under 1 % of the total). This is the table chapter 5
shows and ``minissd summary`` prints.
"""
from __future__ import annotations


def conv_macs(conv, out_shape) -> int:
    """Multiply-adds of one Conv2d for one image, given its output shape (K, Ho, Wo)."""
    k, ho, wo = out_shape
    kh, kw = conv.kernel_size
    return int(ho * wo * k * conv.in_channels * kh * kw)


def _describe(layer) -> str:
    name = type(layer).__name__
    if name == "Conv2d":
        (kh, kw), (s, _), (p, _), (d, _) = layer.kernel_size, layer.stride, layer.padding, layer.dilation
        extra = f" dil {d}" if d != 1 else ""
        return f"conv {kh}x{kw}/{s} p{p}{extra}"
    if name == "MaxPool2d":
        (k, _), (s, _), (p, _) = layer.kernel_size, layer.stride, layer.padding
        return f"maxpool {k}x{k}/{s} p{p}" + (" ceil" if layer.ceil_mode else "")
    if name == "L2Norm":
        return f"L2Norm (scale {layer.scale:g})"
    return name


def model_stats(model) -> dict:
    """Totals: parameters, default boxes, convolution MACs and FLOPs per image."""
    macs = sum(conv_macs(layer, shape) for _, layer, shape in model.layer_shapes()
               if type(layer).__name__ == "Conv2d")
    return {"parameters": model.num_parameters(), "default_boxes": model.cfg.num_priors,
            "macs": macs, "flops": 2 * macs}


def summary(model) -> str:
    """The model as a table (ReLUs omitted: one follows every conv of the base and extras)."""
    cfg = model.cfg
    S = cfg.image_size
    lines = [f"SSD {cfg.name!r} (architecture {model.arch.name!r}), {model.num_classes} classes "
             f"+ background, input (B, {model.arch.in_channels}, {S}, {S})",
             f"{'layer':<18}{'operation':<26}{'output (C, H, W)':<26}{'params':>12}{'MMACs':>10}",
             "-" * 92]
    sources = dict(zip(model.source_layers, model.source_names))
    for name, layer, shape in model.layer_shapes():
        kind = type(layer).__name__
        if kind == "ReLU":
            short = name.split(".")[-1]
            if short in sources:
                c, h, w = shape
                lines.append(f"{'':<18}-> source {sources[short]}: {h}x{w}, {c} channels")
            continue
        params = sum(int(p.size) for p in layer.params.values())
        macs = conv_macs(layer, shape) if kind == "Conv2d" else 0
        out = str(tuple(shape))
        if name.startswith(("loc.", "conf.")):
            k, h, w = shape
            i = model.source_names.index(name.split(".", 1)[1])
            per_box = 4 if name.startswith("loc.") else model.scores_per_box(i)
            out += f" -> {h * w * (k // per_box)}x{per_box}"
            if per_box > model.num_classes + 1 and name.startswith("conf."):
                out += f" (max of {model.arch.background_maxout} backgrounds)"
        lines.append(f"{name:<18}{_describe(layer):<26}{out:<26}{params:>12,}"
                     f"{macs / 1e6:>10.1f}")
    stats = model_stats(model)
    per_map = " + ".join(f"{f}x{f}x{k}" for f, k in zip(cfg.feature_maps, cfg.num_boxes_per_location))
    lines += ["-" * 92,
              f"parameters:    {stats['parameters']:,}",
              f"default boxes: {stats['default_boxes']:,} ({per_map})",
              f"compute:       {stats['macs'] / 1e9:.3f} GMACs = {stats['flops'] / 1e9:.3f} GFLOPs "
              f"per image (FLOPs = 2 x multiply-adds; convolutions only)"]
    return "\n".join(lines)


def receptive_fields(model) -> list[dict]:
    """Per source map: its name, side m, step, theoretical receptive field and square default boxes.

    Down the trunk, each conv or pool of kernel k, stride s, dilation d widens the field by
    (d (k - 1)) x jump and multiplies the jump (input pixels between neighbouring outputs) by s:
    r <- r + d (k - 1) j, j <- j s, from r = j = 1 at the input. The field is the window of input
    pixels one cell of the map can see (its centre weighs most); the default boxes are the
    sides min_size and sqrt(min_size * max_size) that cell's heads predict from it. With
    ``arch.top_down`` the first map's cells also see an fc7 cell: their field is the larger.
    """
    field, jump, out = 1, 1, []
    names = dict(zip(model.source_layers, model.source_names))
    cfg = model.cfg
    for name, layer in model.trunk():
        if type(layer).__name__ in ("Conv2d", "MaxPool2d"):
            k, s = layer.kernel_size[0], layer.stride[0]
            d = layer.dilation[0] if type(layer).__name__ == "Conv2d" else 1
            field += d * (k - 1) * jump
            jump *= s
        if name in names:
            m = len(out)
            out.append({"name": names[name], "size": cfg.feature_maps[m], "step": cfg.steps[m],
                        "jump": jump, "field": field, "min_size": cfg.min_sizes[m],
                        "extra_size": (cfg.min_sizes[m] * cfg.max_sizes[m]) ** 0.5})
    if model.arch.top_down:     # the first map's cells also see fc7's cell through the path
        out[0]["field"] = max(out[0]["field"], out[1]["field"])
    return out
