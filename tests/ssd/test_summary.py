"""The model table: rows, totals, and a MAC count checked against a real forward pass."""
import numpy as np
import pytest

from minissd.ssd.config import get_config
from minissd.nn.layers import Conv2d
from minissd.ssd.model import SSD, summary
from minissd.ssd.summary import conv_macs, model_stats
from test_model import record_head_outputs, record_outputs


@pytest.mark.parametrize("name, classes, params, boxes, gmacs", [
    ("ssd300", 20, "26,285,486", "8,732", "31.374 GMACs"),
    ("ssd-tiny", 3, "1,138,768", "1,524", "0.117 GMACs"),
    ("ssd-cpu", 5, "1,233,364", "4,576", "0.179 GMACs"),
])
def test_summary_totals(name, classes, params, boxes, gmacs):
    text = summary(SSD(get_config(name), classes))
    assert f"parameters:    {params}" in text
    assert f"default boxes: {boxes}" in text
    assert gmacs in text and "FLOPs = 2 x multiply-adds" in text


def test_summary_rows():
    text = summary(SSD(get_config("ssd300"), 20))
    rows = {line.split()[0]: line for line in text.splitlines() if line[:1].isalpha()}
    assert "(512, 38, 38)" in rows["vgg.conv4_3"] and "2,359,808" in rows["vgg.conv4_3"]
    assert "dil 6" in rows["vgg.fc6"] and "(1024, 19, 19)" in rows["vgg.fc6"]
    assert "ceil" in rows["vgg.pool3"]
    assert "5776x4" in rows["loc.conv4_3"] and "5776x21" in rows["conf.conv4_3"]
    assert "-> source conv11_2: 1x1, 256 channels" in text
    # the parameter column adds up to the total
    column = sum(int(line.split()[-2].replace(",", "")) for key, line in rows.items()
                 if key.startswith(("vgg.", "extras.", "loc.", "conf.", "l2norm")))
    assert column == 26_285_486


def test_macs_match_a_forward_pass():
    """Sum over the convs of (output elements per image) x (C x kh x kw), from real outputs."""
    model = SSD(get_config("ssd-tiny"), 3).eval()
    outputs = {}
    convs = {name: layer for name, layer in model.named_modules() if isinstance(layer, Conv2d)}
    for name, conv in convs.items():
        record_outputs(conv, outputs, name)
    heads = {}
    record_head_outputs(model, heads)          # the heads run as one stacked conv per map
    model.forward(np.zeros((2, 3, 128, 128), np.float32))
    outputs.update({f"{head}.{name}": y for (head, name), y in heads.items()})
    macs = sum(outputs[n][0].size * c.in_channels * np.prod(c.kernel_size) for n, c in convs.items())
    assert len(outputs) == 23
    assert model_stats(model)["macs"] == macs
    assert model_stats(model)["flops"] == 2 * macs
    assert conv_macs(Conv2d(3, 8, 3), (8, 10, 10)) == 10 * 10 * 8 * 27


def test_receptive_fields_of_ssd300_are_vgg_s():
    from minissd.ssd.summary import receptive_fields

    rows = receptive_fields(SSD(get_config("ssd300"), 20))
    assert [r["name"] for r in rows] == ["conv4_3", "fc7", "conv8_2", "conv9_2", "conv10_2", "conv11_2"]
    # VGG16's conv4_3 sees 92 px (jump 8); conv5_3 196 (jump 16), pool5 3x3/1 adds 2*16 and fc6
    # (3x3, dilation 6) 12*16: fc7 sees 420; each extra 3x3 adds 2 x its input jump
    assert [r["field"] for r in rows] == [92, 420, 420 + 32, 452 + 64, 516 + 128, 644 + 128]
    assert [r["jump"] for r in rows] == [8, 16, 32, 64, 64, 64]        # conv10_2, conv11_2: stride 1
    assert [r["step"] for r in rows] == [8, 16, 32, 64, 100, 300]      # the config's (Caffe's) steps
    assert rows[0]["min_size"] == 30 and rows[0]["extra_size"] == pytest.approx((30 * 60) ** 0.5)


def test_receptive_fields_of_ssd_tiny_by_hand():
    from minissd.ssd.summary import receptive_fields

    # field r and jump j: conv1_1 3x3 (3, 1), pool1 2x2/2 (4, 2), conv2_1 (8, 2), pool2 (10, 4),
    # conv3_1 (18, 4), pool3 (22, 8), conv4_1 (38, 8) | pool4 (46, 16), conv5_1 (78, 16),
    # pool5 3x3/1 (110, 16), fc6 3x3 dilation 3 (206, 16), fc7 1x1 (206, 16) | conv8_2 3x3/2
    # (238, 32) | conv9_2 (302, 64) | conv10_2 (430, 128)
    rows = receptive_fields(SSD(get_config("ssd-tiny"), 3))
    assert [(r["name"], r["field"], r["jump"]) for r in rows] == [
        ("conv4_1", 38, 8), ("fc7", 206, 16), ("conv8_2", 238, 32), ("conv9_2", 302, 64),
        ("conv10_2", 430, 128)]
    assert [r["size"] for r in rows] == [16, 8, 4, 2, 1]


def test_summary_rows_of_a_background_maxout_head():
    import dataclasses
    from minissd.ssd.architecture import get_arch
    arch = dataclasses.replace(get_arch("ssd-cpu"), background_maxout=3)
    rows = {line.split()[0]: line for line in summary(SSD(get_config("ssd-cpu"), 5, arch=arch)).splitlines()
            if line[:1].isalpha()}
    # 6 boxes per cell on the 24x24 map, each with 5 classes + 3 background scores
    assert "(48, 24, 24) -> 3456x8 (max of 3 backgrounds)" in rows["conf.conv3_2"]
    assert "(36, 12, 12) -> 864x6" in rows["conf.fc7"] and "max of" not in rows["conf.fc7"]


def test_summary_and_fields_of_a_top_down_model():
    """ssd-cpu with arch.top_down: the path's 1x1 conv (fc7's 256 -> 64 channels at 12x12) and
    its upsampling are rows, their parameters and MACs in the totals; the first map's field is fc7's."""
    import dataclasses
    from minissd.ssd.architecture import get_arch
    from minissd.ssd.summary import receptive_fields
    plain = SSD(get_config("ssd-cpu"), 5)
    model = SSD(get_config("ssd-cpu"), 5, arch=dataclasses.replace(get_arch("ssd-cpu"), top_down=True))
    rows = {line.split()[0]: line for line in summary(model).splitlines() if line[:1].isalpha()}
    assert "(64, 12, 12)" in rows["top_down"] and "16,448" in rows["top_down"]   # 256 x 64 + 64
    assert "(64, 24, 24)" in rows["upsample"] and "Upsample2d" in rows["upsample"]
    assert model.num_parameters() == plain.num_parameters() + 256 * 64 + 64
    assert model_stats(model)["macs"] == model_stats(plain)["macs"] + 12 * 12 * 64 * 256
    fields = [r["field"] for r in receptive_fields(model)]
    assert fields[0] == fields[1] == [r["field"] for r in receptive_fields(plain)][1]
