"""SSDConfig: presets, the scale rule, validation and JSON round trips."""
import dataclasses
import json

import pytest

from minissd.ssd.config import SSD300, SSD512, SSD_TINY, SSDConfig, get_config

# (preset, default boxes per cell of each map, total default boxes by hand)
COUNTS = [
    ("ssd300", (4, 6, 6, 6, 4, 4), 38 * 38 * 4 + 19 * 19 * 6 + 10 * 10 * 6 + 5 * 5 * 6 + 3 * 3 * 4 + 4),
    ("ssd512", (4, 6, 6, 6, 6, 4, 4),
     64 * 64 * 4 + 32 * 32 * 6 + 16 * 16 * 6 + 8 * 8 * 6 + 4 * 4 * 6 + 2 * 2 * 4 + 4),
    ("ssd-tiny", (4, 6, 6, 4, 4), 16 * 16 * 4 + 8 * 8 * 6 + 4 * 4 * 6 + 2 * 2 * 4 + 4),
    ("ssd-cpu", (6, 6, 6, 4, 4), 24 * 24 * 6 + 12 * 12 * 6 + 6 * 6 * 6 + 3 * 3 * 4 + 4),
]


@pytest.mark.parametrize("name, per_location, total", COUNTS)
def test_preset_counts(name, per_location, total):
    cfg = get_config(name)
    assert cfg.name == name
    assert cfg.num_boxes_per_location == per_location
    assert cfg.num_priors == total
    assert cfg.variances == (0.1, 0.2) and cfg.clip == "corners"


def test_paper_counts():
    assert SSD300.num_priors == 8732 and SSD512.num_priors == 24564
    assert SSD300.boxes_per_map == (5776, 2166, 600, 150, 36, 4)        # 38²x4, 19²x6, ... 1²x4


# (preset, from_scales arguments reproducing it)
CAFFE_RULE = [
    (SSD300, dict(s_min=0.2, s_max=0.9, first_scale=0.1, round_percent=True)),   # 17 % steps
    (SSD512, dict(s_min=0.15, s_max=0.9, first_scale=0.07, round_percent=True)),  # 15 % steps
]


@pytest.mark.parametrize("preset, kwargs", CAFFE_RULE)
def test_presets_follow_caffe_rule(preset, kwargs):
    c = SSDConfig.from_scales(preset.name, preset.image_size, preset.feature_maps, preset.steps,
                              preset.aspect_ratios, **kwargs)
    assert c.min_sizes == pytest.approx(preset.min_sizes)
    assert c.max_sizes == pytest.approx(preset.max_sizes)


def test_paper_rule_by_hand():
    # m = 6 maps: s_k = 0.2 + 0.7 (k - 1) / 5 = 0.2, 0.34, 0.48, 0.62, 0.76, 0.9 (and 1.04 beyond)
    c = SSDConfig.from_scales("p", 100, (38, 19, 10, 5, 3, 1), (8, 16, 32, 64, 100, 300),
                              ((2,),) * 6)
    assert c.min_sizes == pytest.approx((20, 34, 48, 62, 76, 90))
    assert c.max_sizes == pytest.approx((34, 48, 62, 76, 90, 104))


def test_tiny_scales_by_hand():
    # first map 10 %, then 20 % + 23 % steps (floor(70 / 3)): 20, 43, 66, 89 %, last max 112 %
    assert SSD_TINY.min_sizes == pytest.approx((12.8, 25.6, 55.04, 84.48, 113.92))
    assert SSD_TINY.max_sizes == pytest.approx((25.6, 55.04, 84.48, 113.92, 143.36))
    assert SSD_TINY.image_size == 128 and SSD_TINY.feature_maps == (16, 8, 4, 2, 1)


def test_cpu_scales_by_hand():
    # first map 7 % of 192 px, then 20 % + 23 % steps (floor(70 / 3)): 20, 43, 66, 89 %
    cfg = get_config("ssd-cpu")
    assert cfg.min_sizes == pytest.approx((13.44, 38.4, 82.56, 126.72, 170.88))
    assert cfg.max_sizes == pytest.approx((38.4, 82.56, 126.72, 170.88, 215.04))
    assert cfg.image_size == 192 and cfg.steps == (8, 16, 32, 64, 192)


def test_get_config_returns_a_copy():
    c = get_config("ssd300")
    c.clip = None
    assert get_config("ssd300").clip == "corners" and SSD300.clip == "corners"


def test_get_config_unknown_lists_names():
    with pytest.raises(ValueError, match=r"'ssd-tiny', 'ssd300', 'ssd512'"):
        get_config("ssd600")


@pytest.mark.parametrize("name", ["ssd300", "ssd512", "ssd-tiny", "ssd-cpu"])
def test_dict_round_trip_through_json(name):
    cfg = get_config(name)
    back = SSDConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg


def test_box_centres_round_trip_and_old_json():
    """A tiled config survives JSON; the paper's tiling writes no box_centres key (checkpoints as
    before the field existed) and JSON without the key loads as the paper's tiling."""
    tiled = dataclasses.replace(SSD300, box_centres=(((0.25, 0.5), (0.75, 0.5)),) + (((0.5, 0.5),),) * 5)
    back = SSDConfig.from_dict(json.loads(json.dumps(tiled.to_dict())))
    assert back == tiled and back.num_boxes_per_location == (8, 6, 6, 6, 4, 4)
    assert "box_centres" not in SSD300.to_dict()
    assert SSDConfig.from_dict(SSD300.to_dict()).box_centres is None
    assert SSD300.centres(0) == ((0.5, 0.5),) and tiled.centres(0) == ((0.25, 0.5), (0.75, 0.5))


def test_from_dict_names_bad_keys():
    d = SSD300.to_dict()
    d["colour"] = "red"
    del d["steps"]
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\], missing keys \['steps'\]"):
        SSDConfig.from_dict(d)


# (field, bad value, message fragment)
BAD_FIELDS = [
    ("steps", (8, 16, 32), "steps has 3 entries but feature_maps has 6"),
    ("aspect_ratios", ((2,),), "aspect_ratios has 1 entries"),
    ("min_sizes", (30, 60, 111, 162, 213, -1), r"min_sizes \[5\]"),
    ("max_sizes", (60, 111, 162, 213, 264, 200), r"max_sizes \[5\] = 200 must exceed"),
    ("aspect_ratios", ((2,), (2, 3), (2, 0.5), (2, 3), (2,), (2,)), "aspect_ratios"),
    ("variances", (0.1,), "variances"),
    ("image_size", 0, "image_size"),
    ("feature_maps", (38.0, 19, 10, 5, 3, 1), "feature_maps"),
    ("clip", "xyxy", r"clip must be one of \('corners', 'cxcywh', None\), got 'xyxy'"),
    ("clip", 1, "clip must be one of"),
    ("box_centres", (((0.5, 0.5),),) * 5, "box_centres has 5 entries but feature_maps has 6"),
    ("box_centres", (((0.5, 0.5),),) * 5 + ((),), r"box_centres \[5\] is empty"),
    ("box_centres", (((0.5, 0.5), (0.5, 0.5)),) + (((0.5, 0.5),),) * 5, r"box_centres \[0\] .* repeats"),
    ("box_centres", (((0.5, 1.5),),) + (((0.5, 0.5),),) * 5, r"box_centres \[0\] has \(0.5, 1.5\)"),
    ("box_centres", (((0.5,),),) + (((0.5, 0.5),),) * 5, r"a centre is \(x, y\)"),
    ("box_centres", ((0.5, 0.5),) * 6, "box_centres must list, per map, "),
]


@pytest.mark.parametrize("field, value, message", BAD_FIELDS)
def test_validate_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SSD300, **{field: value})


def test_validate_after_mutation():
    c = get_config("ssd300")
    c.steps = (8, 16)
    with pytest.raises(ValueError, match="steps"):
        c.validate()


@pytest.mark.parametrize("legacy, mode", [(True, "corners"), (False, None)])
def test_checkpoint_json_with_bool_clip_still_loads(legacy, mode):
    """minissd <= 0.1 wrote clip: true / false into checkpoints' JSON."""
    d = json.loads(json.dumps(SSD300.to_dict()))
    d["clip"] = legacy
    cfg = SSDConfig.from_dict(d)
    assert cfg.clip == mode and cfg.to_dict()["clip"] == mode


@pytest.mark.parametrize("mode", ["corners", "cxcywh", None])
def test_clip_modes_round_trip(mode):
    cfg = dataclasses.replace(SSD300, clip=mode)
    assert SSDConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
