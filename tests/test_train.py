"""Training: checkpoints (atomic, resumable), the NaN guard and the log, on a tiny shapes set."""
import json
import os
import re
import shutil

import numpy as np
import pytest

from minissd.nn.module import load_npz
from minissd.datasets.synthetic import write_shapes_dataset
from minissd.checkpoint import export_model, load_model, read_checkpoint
from minissd.nn.optim import AdamW, WarmupCosine
from minissd.errors import UserError
from minissd.ssd.config import get_config
from minissd.ssd.model import SSD
from minissd.train import (NonFiniteLossError, NonFiniteWeightsError, Progress, RunExistsError,
                           Trainer, TrainConfig, epochs_for_budget, truncate_log)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=8, num_test=4,
                                image_size=96, seed=1)


def tiny(root, out, **kw):
    kw = dict(dict(data=[root], config="ssd-tiny", epochs=2, batch_size=4, lr=1e-3, workers=1,
                   out=str(out), warmup_steps=2), **kw)
    return TrainConfig(**kw)


def params(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def test_fit_writes_checkpoint_log_and_changes_parameters(shapes_root, tmp_path):
    trainer = Trainer(tiny(shapes_root, tmp_path, epochs=1), log=lambda *_: None)
    before = params(trainer.model)
    trainer.fit()
    after = params(trainer.model)
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    lines = [json.loads(l) for l in open(tmp_path / "train_log.jsonl")]
    assert [r["step"] for r in lines] == [1, 2]
    assert {"loss", "loss_loc", "loss_conf", "lr", "images_per_s", "epoch"} <= set(lines[0])
    arrays, meta = read_checkpoint(tmp_path / "last.npz")
    assert meta["epoch"] == 1 and meta["step"] == 2
    assert meta["class_names"] == ["circle", "square", "triangle"]
    assert json.load(open(tmp_path / "last.json"))["step"] == 2
    model, _ = load_model(tmp_path / "last.npz")
    for k, v in after.items():
        np.testing.assert_array_equal(model.state_dict()[k], v)


def test_loader_processes_train_the_same_steps_as_threads(shapes_root, tmp_path):
    logs = []
    for loader in ("threads", "processes"):
        out = tmp_path / loader
        trainer = Trainer(tiny(shapes_root, out, epochs=1, workers=2, loader=loader),
                          log=lambda *_: None)
        assert trainer.loader.processes == (loader == "processes")
        trainer.fit()
        logs.append([(r["loss"], r["loss_loc"], r["loss_conf"])
                     for r in map(json.loads, open(out / "train_log.jsonl"))])
    assert logs[0] == logs[1]            # the same batches, so the same steps, bit for bit


def test_mosaic_trains_on_mosaics_and_processes_see_the_same_batches(shapes_root, tmp_path):
    logs = []
    for loader in ("threads", "processes"):
        out = tmp_path / loader
        trainer = Trainer(tiny(shapes_root, out, epochs=1, workers=2, loader=loader, mosaic=1.0),
                          log=lambda *_: None)
        assert trainer.loader.mosaic.p == 1.0
        trainer.fit()
        logs.append([r["loss"] for r in map(json.loads, open(out / "train_log.jsonl"))])
    assert logs[0] == logs[1] and all(np.isfinite(logs[0]))
    plain = Trainer(tiny(shapes_root, tmp_path / "plain", epochs=1), log=lambda *_: None)
    assert plain.loader.mosaic is None and plain.loader.mixup is None
    plain.fit()
    assert [r["loss"] for r in map(json.loads, open(tmp_path / "plain" / "train_log.jsonl"))] != logs[0]


def test_mixup_trains_on_blends_and_is_recorded(shapes_root, tmp_path):
    out = tmp_path / "mixup"
    trainer = Trainer(tiny(shapes_root, out, epochs=1, workers=2, mixup=1.0), log=lambda *_: None)
    assert trainer.loader.mixup.p == 1.0
    batch = next(iter(trainer.loader))
    assert sum(map(len, batch.boxes)) > 0
    trainer.fit()
    losses = [r["loss"] for r in map(json.loads, open(out / "train_log.jsonl"))]
    assert losses and all(np.isfinite(losses))
    assert json.load(open(out / "last.json"))["train_config"]["mixup"] == 1.0


def test_match_iou_is_the_threshold_the_training_targets_use(shapes_root, tmp_path, monkeypatch):
    import minissd.train as T
    seen = []
    def spy(*args, **kw):
        seen.append(args[3])
        return real(*args, **kw)
    real = T.match_batch
    monkeypatch.setattr(T, "match_batch", spy)
    losses = {}
    for iou in (0.5, 0.3):
        out = tmp_path / str(iou)
        Trainer(tiny(shapes_root, out, epochs=1, match_iou=iou), log=lambda *_: None).fit()
        losses[iou] = [r["loss"] for r in map(json.loads, open(out / "train_log.jsonl"))]
    assert seen == [0.5, 0.5, 0.3, 0.3]                 # two steps each
    assert losses[0.5] != losses[0.3]                    # more positives, other targets


def test_ignore_iou_marks_the_band_for_the_loss(shapes_root, tmp_path, monkeypatch):
    """--ignore-iou 0.2: the targets carry -1 for the band, the loss mines around them, the run
    trains and records the setting; 0 (the default) passes no band at all."""
    import minissd.train as T
    seen, targets = [], []
    def spy(*args, **kw):
        seen.append(kw.get("ignore_threshold"))
        out = real(*args, **kw)
        targets.append(out[1])
        return out
    real = T.match_batch
    monkeypatch.setattr(T, "match_batch", spy)
    for ignore in (0.0, 0.2):
        out = tmp_path / str(ignore)
        trainer = Trainer(tiny(shapes_root, out, epochs=1, match_iou=0.5, ignore_iou=ignore),
                          log=lambda *_: None)
        trainer.fit()
        mined = trainer.criterion.negative
        assert not (mined & (targets[-1] < 0)).any()
        losses = [r["loss"] for r in map(json.loads, open(out / "train_log.jsonl"))]
        assert losses and all(np.isfinite(losses))
        assert json.load(open(out / "last.json"))["train_config"]["ignore_iou"] == ignore
    assert seen == [None, None, 0.2, 0.2]                 # two steps each
    assert not any((t < 0).any() for t in targets[:2]) and all((t < 0).any() for t in targets[2:])


def test_match_topk_gives_each_object_its_threshold(shapes_root, tmp_path, monkeypatch):
    """--match-topk 12 --match-floor 0.2: matching gets both, more default boxes are positives,
    the run trains and records them; 0 (the default) passes no topk at all."""
    import minissd.train as T
    seen, positives = [], []
    def spy(*args, **kw):
        seen.append((kw.get("topk"), kw.get("topk_floor")))
        out = real(*args, **kw)
        positives.append(int((out[1] > 0).sum()))
        return out
    real = T.match_batch
    monkeypatch.setattr(T, "match_batch", spy)
    for topk in (0, 12):
        out = tmp_path / str(topk)
        Trainer(tiny(shapes_root, out, epochs=1, match_iou=0.5, match_topk=topk, match_floor=0.2),
                log=lambda *_: None).fit()
        losses = [r["loss"] for r in map(json.loads, open(out / "train_log.jsonl"))]
        assert losses and all(np.isfinite(losses))
        recorded = json.load(open(out / "last.json"))["train_config"]
        assert (recorded["match_topk"], recorded["match_floor"]) == (topk, 0.2)
    assert seen == [(None, 0.2), (None, 0.2), (12, 0.2), (12, 0.2)]      # two steps each
    assert positives[2] > positives[0] and positives[3] > positives[1]   # the same batches


def test_match_floor_is_only_held_to_match_iou_with_match_topk():
    """A run matching at 0.2 without --match-topk (or one from before the option) is valid
    with the floor's default 0.25; with --match-topk it is refused."""
    TrainConfig(data=["x"], match_iou=0.2).validate()
    with pytest.raises(UserError, match=r"match_floor \(--match-floor\): must be at most --match-iou"):
        TrainConfig(data=["x"], match_iou=0.2, match_topk=8).validate()


def test_focal_trains_every_box_from_the_background_prior(shapes_root, tmp_path, monkeypatch):
    """--focal 2: the loss is the focal loss (no mining), the conf heads start at background
    probability 0.99 (the max-out map's three background scores too), the run trains."""
    import minissd.train as T
    start = {}
    real = T.SSD.set_background_prior
    def spy(model, p):
        real(model, p)
        start.update({k: v.copy() for k, v in model.state_dict().items() if k.startswith("conf.")})
        return model
    monkeypatch.setattr(T.SSD, "set_background_prior", spy)
    trainer = Trainer(tiny(shapes_root, tmp_path, epochs=1, focal=2.0, background_maxout=3),
                      log=lambda *_: None)
    assert trainer.criterion.focal_gamma == 2.0
    first = trainer.model.source_names[0]
    bias = start[f"conf.{first}.bias"].reshape(-1, 3 + 3)             # (k, 3 backgrounds + 3 classes)
    np.testing.assert_allclose(bias[:, :3], np.log(3 * 0.99 / 0.01), rtol=1e-6)
    assert not bias[:, 3:].any()
    trainer.fit()
    log = [json.loads(line) for line in open(tmp_path / "train_log.jsonl")]
    assert len(log) == 2 and all(np.isfinite(r["loss"]) for r in log)
    assert int(trainer.criterion.negative.sum()) == int((~trainer.criterion.positive).sum())  # no mining
    plain = Trainer(tiny(shapes_root, tmp_path / "plain", epochs=1), log=lambda *_: None)
    assert plain.criterion.focal_gamma == 0                           # the default: mining,
    assert not any(v.any() for k, v in plain.model.state_dict().items()   # zero conf biases
                   if k.startswith("conf.") and k.endswith(".bias"))


def test_background_maxout_trains_and_its_checkpoint_loads_with_it(shapes_root, tmp_path):
    trainer = Trainer(tiny(shapes_root, tmp_path, epochs=1, background_maxout=3),
                      log=lambda *_: None).fit()
    first = trainer.model.source_names[0]
    k = trainer.model.loc[first].out_channels // 4
    assert trainer.model.arch.background_maxout == 3
    assert trainer.model.conf[first].out_channels == k * (3 + 3)     # 3 classes + 3 backgrounds
    model, _ = load_model(tmp_path / "last.npz")                     # the arch travels with it
    assert model.arch.background_maxout == 3
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype(np.float32)
    trainer.model.eval(), model.eval()
    for got, want in zip(model.forward(x), trainer.model.forward(x)):
        np.testing.assert_array_equal(got, want)                     # the same weights, the same code
    assert want.shape == (1, model.cfg.num_priors, 3 + 1)


def test_maxout_maps_trains_and_its_checkpoint_loads_with_it(shapes_root, tmp_path):
    trainer = Trainer(tiny(shapes_root, tmp_path, epochs=1, background_maxout=2, maxout_maps=2),
                      log=lambda *_: None).fit()
    model, _ = load_model(tmp_path / "last.npz")
    assert (model.arch.background_maxout, model.arch.maxout_maps) == (2, 2)
    for i, name in enumerate(model.source_names):
        k = model.loc[name].out_channels // 4
        assert model.conf[name].out_channels == k * (3 + (2 if i < 2 else 1))


def test_init_from_another_maxout_names_the_settings(shapes_root, tmp_path):
    """--init from a model with other background scores: the class heads cannot load; the
    error names both runs' settings and --reset-heads, which then starts from the rest."""
    Trainer(tiny(shapes_root, tmp_path / "a", epochs=1, background_maxout=3),
            log=lambda *_: None).fit()
    with pytest.raises(UserError, match=r"trained with --background-maxout 3 --maxout-maps 1, this "
                                        r"run has --background-maxout 1 --maxout-maps 1: .*--reset-heads"):
        Trainer(tiny(shapes_root, tmp_path / "b", epochs=1, init=str(tmp_path / "a" / "last.npz")),
                log=lambda *_: None)
    trainer = Trainer(tiny(shapes_root, tmp_path / "b", epochs=1, init=str(tmp_path / "a" / "last.npz"),
                           reset_heads=True), log=lambda *_: None)
    saved, _ = load_model(tmp_path / "a" / "last.npz")
    first = saved.source_names[0]
    np.testing.assert_array_equal(trainer.model.loc[first].params["weight"],
                                  saved.loc[first].params["weight"])   # the box heads loaded


def test_init_from_a_checkpoint_without_an_architecture_into_maxout_names_the_settings(
        shapes_root, tmp_path):
    """A checkpoint written before checkpoints kept the architecture (ssd-tiny-shapes.npz)
    has one background score per box: --init into a max-out run names both settings, not
    just the first mismatching array."""
    old = SHIPPED                                 # models/ssd-tiny-shapes.npz
    assert "arch" not in read_checkpoint(old)[1]
    with pytest.raises(UserError, match=r"trained with --background-maxout 1 --maxout-maps 1, this "
                                        r"run has --background-maxout 3 --maxout-maps 1: .*--reset-heads"):
        Trainer(tiny(shapes_root, tmp_path, epochs=1, background_maxout=3, init=str(old)),
                log=lambda *_: None)
    Trainer(tiny(shapes_root, tmp_path, epochs=1, init=str(old)), log=lambda *_: None)   # loads


def test_top_down_trains_and_its_checkpoint_loads_with_it(shapes_root, tmp_path):
    trainer = Trainer(tiny(shapes_root, tmp_path, epochs=1, top_down=True), log=lambda *_: None).fit()
    assert np.abs(trainer.model.top_down.params["weight"]).sum() > 0      # it left zero
    model, _ = load_model(tmp_path / "last.npz")                          # the arch travels with it
    assert model.arch.top_down
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype(np.float32)
    trainer.model.eval(), model.eval()
    for got, want in zip(model.forward(x), trainer.model.forward(x)):
        np.testing.assert_array_equal(got, want)


def test_init_across_top_down(shapes_root, tmp_path):
    """--init from a plain model into a --top-down run starts the path at zero (the plain model's
    outputs); from a top-down model into a plain run it names --top-down."""
    Trainer(tiny(shapes_root, tmp_path / "plain", epochs=1), log=lambda *_: None).fit()
    logs = []
    trainer = Trainer(tiny(shapes_root, tmp_path / "td", epochs=1, top_down=True,
                           init=str(tmp_path / "plain" / "last.npz")), log=logs.append)
    assert any("has no top-down path; --top-down starts it at zero" in line for line in logs)
    plain, _ = load_model(tmp_path / "plain" / "last.npz")
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype(np.float32)
    trainer.model.eval(), plain.eval()
    for got, want in zip(trainer.model.forward(x), plain.forward(x)):
        np.testing.assert_array_equal(got, want)
    trainer.fit()
    with pytest.raises(UserError, match=r"trained with --top-down, this run is without it: give --top-down"):
        Trainer(tiny(shapes_root, tmp_path / "again", epochs=1, init=str(tmp_path / "td" / "last.npz")),
                log=lambda *_: None)


def test_maxout_maps_beyond_the_configs_maps_names_the_option(shapes_root, tmp_path):
    maps = len(get_config("ssd-tiny").feature_maps)
    with pytest.raises(UserError, match=rf"TrainConfig.maxout_maps \(--maxout-maps\): ssd-tiny has "
                                        rf"{maps} feature maps, not {maps + 1}"):
        Trainer(tiny(shapes_root, tmp_path, epochs=1, background_maxout=2, maxout_maps=maps + 1),
                log=lambda *_: None)


def test_cosine_schedule_sets_each_step_s_learning_rate(shapes_root, tmp_path):
    # 8 photos, batch 4: 2 steps an epoch, 4 in all, the first 2 warming up
    trainer = Trainer(tiny(shapes_root, tmp_path, schedule="cosine"), log=lambda *_: None).fit()
    assert isinstance(trainer.schedule, WarmupCosine)
    lines = [json.loads(l) for l in open(tmp_path / "train_log.jsonl")]
    expected = WarmupCosine(1e-3, total_steps=4, warmup_steps=2)
    assert [r["lr"] for r in lines] == pytest.approx([expected(r["step"] - 1) for r in lines],
                                                     rel=1e-12)
    assert lines[-1]["lr"] == pytest.approx(1e-3 / 2)          # step 4 of 4: half-way down


def test_eval_every_logs_map_on_the_eval_split(shapes_root, tmp_path):
    from minissd.datasets.voc import VOCDataset
    from minissd.evaluation.inference import Detector, evaluate_dataset
    tc = tiny(shapes_root, tmp_path, epochs=3, lr=1e-2, eval_every=2, eval_split="test")
    trainer = Trainer(tc, log=lambda *_: None).fit()
    assert trainer.model.training                            # back in training mode (BatchNorm)
    lines = [json.loads(l) for l in open(tmp_path / "train_log.jsonl")]
    evals = [r for r in lines if "eval_map" in r]
    assert [(r["epoch"], r["step"]) for r in evals] == [(2, 4), (3, 6)]   # every 2, and the last
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert evals[0]["eval_split"] == "test" and set(evals[0]["eval_ap"]) == {"circle", "square",
                                                                             "triangle"}
    model, _ = load_model(tmp_path / "last.npz")              # the last record scored last.npz
    test = VOCDataset([(shapes_root, "test")], keep_difficult=True)
    result, _ = evaluate_dataset(Detector(model), test)
    assert evals[-1]["eval_map"] == pytest.approx(result["map"], abs=1e-9)
    assert list(evals[-1]["eval_ap"].values()) == pytest.approx(list(result["ap"]), abs=1e-9)
    with pytest.raises(ValueError, match=r"eval_every \(--eval-every\): needs --eval-split"):
        Trainer(tiny(shapes_root, tmp_path / "b", epochs=1, eval_every=1))   # before any training
    assert not (tmp_path / "b").exists()


def test_resume_continues_exactly(shapes_root, tmp_path):
    straight = Trainer(tiny(shapes_root, tmp_path / "a"), log=lambda *_: None).fit()
    Trainer(tiny(shapes_root, tmp_path / "b"), log=lambda *_: None).fit(epochs=1)
    resumed = Trainer(tiny(shapes_root, tmp_path / "c"), log=lambda *_: None)
    resumed.resume(tmp_path / "b" / "last.npz")
    assert (resumed.epoch, resumed.step) == (1, 2)
    resumed.fit()
    assert resumed.step == straight.step == 4
    a, c = params(straight.model), params(resumed.model)
    for k in a:                    # the same operations in the same order: the same bits
        np.testing.assert_array_equal(c[k], a[k], err_msg=k)
    for k, buf in straight.optimizer.buffers.items():
        np.testing.assert_array_equal(resumed.optimizer.buffers[k], buf, err_msg=k)


def test_resume_refuses_another_class_list(shapes_root, tmp_path):
    Trainer(tiny(shapes_root, tmp_path / "a", epochs=1), log=lambda *_: None).fit()
    other = Trainer(tiny(shapes_root, tmp_path / "b", classes=["circle", "square", "triangle", "cross"]),
                    log=lambda *_: None)
    with pytest.raises(ValueError, match="classes"):
        other.resume(tmp_path / "a" / "last.npz")


def test_non_finite_loss_stops_and_names_step_and_images(shapes_root, tmp_path):
    trainer = Trainer(tiny(shapes_root, tmp_path), log=lambda *_: None)
    head = next(m for name, m in trainer.model.named_modules() if name.startswith("conf."))
    head.params["bias"] = head.params["bias"] + np.nan
    with pytest.raises(NonFiniteLossError, match=r"step 1, epoch 0 .*images in the batch: \d{6}"):
        trainer.fit()
    assert not os.path.exists(tmp_path / "last.npz")     # nothing trained on NaN was saved


@pytest.mark.parametrize("module, name", [(np, "savez"), (os, "replace")],
                         ids=["while-building-the-npz", "after-writing-the-temp-file"])
def test_checkpoint_write_is_atomic(shapes_root, tmp_path, monkeypatch, module, name):
    trainer = Trainer(tiny(shapes_root, tmp_path, epochs=1), log=lambda *_: None).fit()
    path = tmp_path / "last.npz"
    good = load_npz(path)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")
    monkeypatch.setattr(module, name, killed)
    with pytest.raises(KeyboardInterrupt):
        trainer.save(str(path))
    monkeypatch.undo()
    again = load_npz(path)                                # the old checkpoint is intact
    assert set(again) == set(good)
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_read_checkpoint_rejects_bare_weights(tmp_path):
    np.savez(tmp_path / "w.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a minissd checkpoint"):
        read_checkpoint(tmp_path / "w.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        read_checkpoint(tmp_path / "missing.npz")


def test_trainer_errors_are_clear(shapes_root, tmp_path):
    with pytest.raises(ValueError, match="TrainConfig.data"):
        Trainer(tiny(shapes_root, tmp_path, data=[]))
    with pytest.raises(ValueError, match="batch"):
        Trainer(tiny(shapes_root, tmp_path, batch_size=64))
    with pytest.raises(ValueError, match="'cpu', 'cuda'"):
        Trainer(tiny(shapes_root, tmp_path, device="gpu"))


class FakeClock:
    """time.monotonic stand-in: each call returns ``now``, moved by the test."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_progress_prints_every_n_steps_with_the_time_left(capsys):
    import sys
    clock = FakeClock()
    p = Progress(5, "epoch 1/3", every=2, stream=sys.stdout, then=2, clock=clock)
    for i in range(1, 6):
        clock.now += 3.0                                  # 3 s a step
        p.update(i, f"loss {i}")
    out = capsys.readouterr().out.splitlines()
    # step 2: 6 s for 2 steps, 3 to go -> 0:09 here; 2 more epochs of 5 steps -> +30 s
    assert [l.split("] ")[1] for l in out] == ["2/5 loss 2 0:09 left, run 0:39",
                                                "4/5 loss 4 0:03 left, run 0:33",
                                                "5/5 loss 5 0:00 left, run 0:30"]


def test_progress_counts_steps_since_its_last_line_and_shows_no_run_time_alone(capsys):
    import sys
    clock = FakeClock()
    p = Progress(100, "evaluate", every=32, stream=sys.stdout, clock=clock)
    for done in (16, 32, 48, 64, 80, 96, 100):             # batches of 16: 32 is not a divisor
        clock.now += 1.0
        p.update(done, f"{p.rate(done):.1f} img/s")
    out = [l.split("] ")[1] for l in capsys.readouterr().out.splitlines()]
    assert out == ["32/100 16.0 img/s 0:04 left", "64/100 16.0 img/s 0:02 left",
                   "96/100 16.0 img/s 0:00 left", "100/100 14.3 img/s 0:00 left"]


def test_format_duration():
    from minissd.train import format_duration
    assert [format_duration(s) for s in (0, 59.4, 61, 3599, 3600, 3725, -5)] == [
        "0:00", "0:59", "1:01", "59:59", "1:00:00", "1:02:05", "0:00"]


def test_image_progress_draws_evaluate_dataset_s_callback(capsys):
    import sys
    from minissd.train import image_progress
    progress = image_progress("evaluate", every=2, stream=sys.stdout)
    for done in (2, 4, 5):
        progress(done, 5)
    out = capsys.readouterr().out.splitlines()
    assert [l.split(" [")[0] for l in out] == ["evaluate"] * 3
    assert [l.split("] ")[1].split()[0] for l in out] == ["2/5", "4/5", "5/5"]
    assert all("img/s" in l and "left" in l for l in out)


def test_training_and_detection_on_fake_cupy(shapes_root, tmp_path, monkeypatch):
    """device='cuda' end to end on tests/fake_cupy (NumPy under CuPy's rules): every host/device
    hand-over of the loop -- batches, matching, loss, SGD, checkpoints, resume, detect, mAP -- is
    explicit, and the numbers agree with the NumPy run."""
    import fake_cupy
    from minissd.nn import backend
    from minissd.datasets.voc import VOCDataset
    from minissd.evaluation.inference import Detector, evaluate_dataset

    def trainer(out, **kw):        # float64: another order of the sums moves the results ~1e-16
        t = Trainer(tiny(shapes_root, tmp_path / out, **kw), log=lambda *_: None)
        t.model.astype(np.float64)
        return t

    on_cpu = trainer("cpu").fit()
    monkeypatch.setattr(backend, "_cupy", fake_cupy)
    on_gpu = trainer("gpu", device="cuda")
    on_gpu.fit(epochs=1)
    assert isinstance(next(on_gpu.model.parameters()), fake_cupy.ndarray)
    resumed = trainer("gpu2", device="cuda")
    resumed.resume(tmp_path / "gpu" / "last.npz")
    resumed.fit()
    a, b = params(on_cpu.model), {k: backend.to_numpy(v) for k, v in params(resumed.model).items()}
    assert b["vgg.conv1_1.weight"].dtype == np.float64
    for k in a:                    # the CuPy paths cut and sum in another order: rounding only
        np.testing.assert_allclose(b[k], a[k], rtol=1e-10, atol=1e-12, err_msg=k)

    test_set = VOCDataset([(shapes_root, "test")])
    results = {}
    for device in ("cpu", "cuda"):
        model, _ = load_model(tmp_path / "gpu2" / "last.npz", device=device)
        results[device] = evaluate_dataset(Detector(model, conf_threshold=0.05), test_set)
    (res_cpu, det_cpu), (res_gpu, det_gpu) = results["cpu"], results["cuda"]
    assert all(isinstance(arr, np.ndarray) for d in det_gpu for arr in d)   # back on the host
    assert [len(d[0]) for d in det_gpu] == [len(d[0]) for d in det_cpu]
    assert res_gpu["map"] == pytest.approx(res_cpu["map"], abs=1e-6)


# --------------------------------------------------------------------------- #
# Finite or nothing
# --------------------------------------------------------------------------- #
SHIPPED = os.path.join(os.path.dirname(__file__), "..", "models", "ssd-tiny-shapes.npz")


def quiet(tc):
    return Trainer(tc, log=lambda *_: None)


def files(folder):
    """{name: bytes} of the files in ``folder``."""
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_an_update_that_makes_the_weights_non_finite_stops_before_the_save(shapes_root, tmp_path):
    """The loss of step 4 is finite; its update is not. Without the check after the update, the
    end of epoch 2 would save the poisoned weights over epoch 1's checkpoint."""
    trainer = quiet(tiny(shapes_root, tmp_path))
    trainer.fit(epochs=1)
    good = files(tmp_path)
    schedule = trainer.schedule
    trainer.schedule = lambda step: 1e38 if step == 3 else schedule(step)   # step 4's update
    with pytest.raises(NonFiniteWeightsError) as e:
        trainer.fit()
    message = str(e.value)
    assert "after step 4, epoch 1 (train_log.jsonl; epoch 2/2 on the progress bar)" in message
    assert re.search(r"the \w+ \((parameter|statistic)\) of layer [\w.]+ is the first NaN", message)
    assert re.search(r"images in the batch: \d{6}, \d{6}, \d{6}, \d{6}\.", message)
    assert f"last good checkpoint, {tmp_path / 'last.npz'}, is untouched" in message
    assert {k: v for k, v in files(tmp_path).items() if k != "train_log.jsonl"} == \
        {k: v for k, v in good.items() if k != "train_log.jsonl"}
    read_checkpoint(tmp_path / "last.npz")                   # finite, loadable


def test_resume_continues_an_adamw_run_exactly(shapes_root, tmp_path):
    adamw = dict(optimizer="adamw", lr=1e-3, weight_decay=0.05)
    straight = Trainer(tiny(shapes_root, tmp_path / "a", **adamw), log=lambda *_: None).fit()
    assert isinstance(straight.optimizer, AdamW) and straight.optimizer.steps == 4
    Trainer(tiny(shapes_root, tmp_path / "b", **adamw), log=lambda *_: None).fit(epochs=1)
    resumed = Trainer(tiny(shapes_root, tmp_path / "c", **adamw), log=lambda *_: None)
    resumed.resume(tmp_path / "b" / "last.npz")
    assert resumed.optimizer.steps == 2                  # the bias corrections go on from 3
    resumed.fit()
    a, c = params(straight.model), params(resumed.model)
    for k in a:
        np.testing.assert_array_equal(c[k], a[k], err_msg=k)
    for kind, name, buf in straight.optimizer.named_buffers():
        store = resumed.optimizer.exp_avg if "exp_avg)" in kind else resumed.optimizer.exp_avg_sq
        np.testing.assert_array_equal(store[name], buf, err_msg=f"{kind} {name}")
    # an SGD run is not an AdamW run: refused, as any changed setting is
    with pytest.raises(ValueError, match=r"--optimizer 'adamw' -> 'sgd'"):
        Trainer(tiny(shapes_root, tmp_path / "d", resume=str(tmp_path / "b" / "last.npz"),
                     epochs=2), log=lambda *_: None)


def test_first_non_finite_names_adamws_moments(shapes_root, tmp_path):
    trainer = quiet(tiny(shapes_root, tmp_path, optimizer="adamw"))
    trainer.train_step(next(iter(trainer.loader)))
    assert trainer.first_non_finite() is None
    v = trainer.optimizer.exp_avg_sq
    v["conf.fc7.weight"] = v["conf.fc7.weight"] * np.nan
    assert trainer.first_non_finite() == "the second moment (exp_avg_sq) of conf.fc7.weight"


def test_first_non_finite_names_the_layer_statistic_or_momentum(shapes_root, tmp_path):
    trainer = quiet(tiny(shapes_root, tmp_path))
    assert trainer.first_non_finite() is None
    trainer.optimizer.buffers["loc.fc7.bias"] = trainer.model.loc["fc7"].params["bias"] * np.nan
    assert trainer.first_non_finite() == "the momentum buffer of loc.fc7.bias"
    bn_name, bn = next((n, m) for n, m in trainer.model.named_modules() if m.buffers)
    bn.buffers["running_var"] = bn.buffers["running_var"] + np.inf
    assert trainer.first_non_finite() == f"the running_var (statistic) of layer {bn_name}"
    conv = trainer.model.vgg.conv1_1
    conv.params["weight"] = conv.params["weight"] * np.nan
    assert trainer.first_non_finite() == "the weight (parameter) of layer vgg.conv1_1"


# --------------------------------------------------------------------------- #
# Fine-tuning
# --------------------------------------------------------------------------- #
def test_init_fine_tunes_a_shipped_model_with_a_fresh_optimiser(shapes_root, tmp_path):
    shipped, meta = load_model(SHIPPED)
    trainer = quiet(tiny(shapes_root, tmp_path / "ft", init=SHIPPED, epochs=1, augment="flip"))
    assert (trainer.step, trainer.epoch, trainer.optimizer.buffers) == (0, 0, {})
    for k, v in shipped.state_dict().items():
        np.testing.assert_array_equal(trainer.model.state_dict()[k], v, err_msg=k)
    scratch = quiet(tiny(shapes_root, tmp_path / "scratch", epochs=1, augment="flip"))
    batch = next(iter(scratch.loader))
    assert trainer.train_step(batch)[0] < scratch.train_step(batch)[0] / 3   # it starts trained
    trainer = quiet(tiny(shapes_root, tmp_path / "ft2", init=SHIPPED, epochs=1)).fit()
    _, saved = read_checkpoint(tmp_path / "ft2" / "last.npz")
    assert saved["train_config"]["init"] == SHIPPED and saved["step"] == 2


def test_init_with_another_class_list_needs_reset_heads(shapes_root, tmp_path):
    four = ["circle", "square", "triangle", "star"]
    with pytest.raises(ValueError, match=r"trained for classes \['circle', 'square', 'triangle'\]"
                                         r".*give --reset-heads"):
        quiet(tiny(shapes_root, tmp_path, init=SHIPPED, classes=four))
    trainer = quiet(tiny(shapes_root, tmp_path, init=SHIPPED, classes=four, reset_heads=True))
    shipped, fresh = load_model(SHIPPED)[0].state_dict(), params(SSD(trainer.cfg, 4, seed=0))
    for k, v in trainer.model.state_dict().items():       # conf heads fresh, the rest shipped
        np.testing.assert_array_equal(v, fresh[k] if k.startswith("conf.") else shipped[k], err_msg=k)
    assert any(k.startswith("conf.") for k in fresh) and any(k.startswith("loc.") for k in fresh)
    trainer.fit(epochs=1)
    assert read_checkpoint(tmp_path / "last.npz")[1]["class_names"] == four


def test_init_moves_the_weights_to_the_same_layers_on_a_larger_input(shapes_root, tmp_path):
    """Progressive resizing: ssd-cpu-160's weights continue as ssd-cpu-256 (the same layers,
    default boxes rebuilt for the larger maps); a config with other layers is refused, naming both."""
    small = quiet(tiny(shapes_root, tmp_path / "160", config="ssd-cpu-160", epochs=1, seed=3))
    small.save(tmp_path / "160.npz")
    fresh = params(SSD(small.cfg, 3, seed=0))                          # a seed-0 init
    assert not np.array_equal(fresh["vgg.conv1_1.weight"], small.model.state_dict()["vgg.conv1_1.weight"])
    large = quiet(tiny(shapes_root, tmp_path / "256", config="ssd-cpu-256", epochs=1,
                       init=str(tmp_path / "160.npz")))                  # its own init: seed 0
    for k, v in small.model.state_dict().items():
        np.testing.assert_array_equal(large.model.state_dict()[k], v, err_msg=k)
    assert large.priors.shape == (8144, 4) and small.priors.shape == (3190, 4)
    assert large.train_step(next(iter(large.loader)))[0] > 0         # it trains at 256 px
    with pytest.raises(ValueError, match=r"160.npz: the weights of config 'ssd-cpu-160' do not "
                                         r"fit --config 'ssd-tiny'"):
        quiet(tiny(shapes_root, tmp_path / "tiny", init=str(tmp_path / "160.npz")))


def test_resume_from_an_exported_model_points_to_init(shapes_root, tmp_path):
    with pytest.raises(ValueError, match=r"ssd-tiny-shapes.npz: an exported model \(no optimiser "
                                         r"state\) cannot be resumed; to fine-tune from it, use --init"):
        quiet(tiny(shapes_root, tmp_path, resume=SHIPPED))


# --------------------------------------------------------------------------- #
# Runs are never destroyed silently
# --------------------------------------------------------------------------- #
def test_a_new_run_into_a_folder_holding_a_run_is_refused(shapes_root, tmp_path):
    quiet(tiny(shapes_root, tmp_path, epochs=1)).fit()
    (tmp_path / "pr_curves.png").write_bytes(b"old plot")
    before = files(tmp_path)
    second = quiet(tiny(shapes_root, tmp_path, epochs=1, seed=5))
    with pytest.raises(RunExistsError, match=rf"--out {tmp_path} holds a run \(last.npz, "
                                             r"train_log.jsonl\): continue it with --resume"):
        second.fit()
    assert files(tmp_path) == before                         # byte for byte
    os.unlink(tmp_path / "last.npz")                          # a log alone is a run too
    with pytest.raises(RunExistsError, match=r"holds a run \(train_log.jsonl\)"):
        quiet(tiny(shapes_root, tmp_path, epochs=1)).fit()
    quiet(tiny(shapes_root, tmp_path, epochs=1, seed=5, overwrite=True)).fit()
    assert sorted(os.listdir(tmp_path)) == ["last.json", "last.npz", "train_log.jsonl"]
    assert read_checkpoint(tmp_path / "last.npz")[1]["train_config"]["seed"] == 5


def test_out_that_is_a_file_is_named(shapes_root, tmp_path):
    (tmp_path / "f").write_text("x")
    for out, message in [(tmp_path / "f", "is a file, not a folder"),
                         (tmp_path / "f" / "run", "cannot create")]:
        with pytest.raises(ValueError, match=rf"TrainConfig.out \(--out\): .*{message}"):
            quiet(tiny(shapes_root, out)).fit()


def test_resume_refuses_changed_settings_unless_override_which_is_recorded(shapes_root, tmp_path):
    quiet(tiny(shapes_root, tmp_path)).fit(epochs=1)
    ckpt = str(tmp_path / "last.npz")
    for change, said in [(dict(batch_size=2), "--batch-size 4 -> 2"), (dict(lr=0.01), "--lr 0.001 -> 0.01"),
                         (dict(seed=3), "--seed 0 -> 3"), (dict(augment="flip"), "--augment 'ssd' -> 'flip'"),
                         (dict(epochs=3), "--epochs 2 -> 3")]:
        with pytest.raises(ValueError, match=rf"other settings \({re.escape(said)}\).*--override"):
            quiet(tiny(shapes_root, tmp_path, resume=ckpt, **change))
    same = quiet(tiny(shapes_root, tmp_path, resume=ckpt, workers=0, log_every=1, max_minutes=5.0))
    assert same.overridden == {} and same.step == 2          # run-control options may change
    resumed = quiet(tiny(shapes_root, tmp_path, resume=ckpt, lr=0.01, override=True))
    assert resumed.overridden == {"lr": [0.001, 0.01]}
    resumed.fit()
    _, meta = read_checkpoint(ckpt)
    assert meta["overrides"] == [{"step": 2, "epoch": 1, "changed": {"lr": [0.001, 0.01]}}]
    assert meta["train_config"]["lr"] == 0.01
    log = [json.loads(l) for l in open(tmp_path / "train_log.jsonl")]
    assert [r.get("override") for r in log] == [None, None, {"lr": [0.001, 0.01]}, None]


def test_a_setting_an_older_checkpoint_lacks_is_compared_as_its_default(shapes_root, tmp_path):
    old = quiet(tiny(shapes_root, tmp_path))
    meta = old.meta

    def before_schedule_existed():
        record = meta()
        del record["train_config"]["schedule"]
        return record
    old.meta = before_schedule_existed
    old.fit(epochs=1)
    ckpt = str(tmp_path / "last.npz")
    assert "schedule" not in read_checkpoint(ckpt)[1]["train_config"]
    with pytest.raises(ValueError, match=re.escape("other settings (--schedule 'step' -> 'cosine')")):
        quiet(tiny(shapes_root, tmp_path, resume=ckpt, schedule="cosine"))
    same = quiet(tiny(shapes_root, tmp_path, resume=ckpt))
    assert same.overridden == {} and same.step == 2


def test_resume_with_no_epochs_left_says_so(shapes_root, tmp_path):
    quiet(tiny(shapes_root, tmp_path)).fit()
    for epochs in (1, 2):
        with pytest.raises(ValueError, match=rf"has done 2 epoch\(s\); --epochs {epochs} leaves "
                                             r"nothing to train"):
            quiet(tiny(shapes_root, tmp_path, resume=str(tmp_path / "last.npz"), epochs=epochs,
                       override=True))


# --------------------------------------------------------------------------- #
# Logs continue exactly
# --------------------------------------------------------------------------- #
def test_log_after_an_interrupted_run_and_resume_has_each_step_once(shapes_root, tmp_path,
                                                                    monkeypatch):
    straight = quiet(tiny(shapes_root, tmp_path / "straight", epochs=3)).fit()
    run = tmp_path / "run"
    trainer = quiet(tiny(shapes_root, run, epochs=3))
    step = trainer.train_step

    def interrupted(batch):                                  # Ctrl-C in step 4, epoch 2
        if trainer.step == 3:
            raise KeyboardInterrupt
        return step(batch)
    monkeypatch.setattr(trainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    with open(run / "train_log.jsonl", "a") as f:
        f.write('{"step": 4, "epoch": 1, "lo')               # a line cut by a kill
    (run / "tmpk1ll.tmp.npz").write_bytes(b"\0" * 100)        # a save cut by a kill
    assert [json.loads(l)["step"] for l in open(run / "train_log.jsonl")
            if l.endswith("}\n")] == [1, 2, 3]                # step 3 is past the checkpoint's 2
    resumed = quiet(tiny(shapes_root, run, epochs=3, resume=str(run / "last.npz"))).fit()
    assert resumed.step == 6
    assert not [f for f in os.listdir(run) if ".tmp" in f]
    log = [json.loads(l) for l in open(run / "train_log.jsonl")]
    reference = [json.loads(l) for l in open(tmp_path / "straight" / "train_log.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in log] == [0, 0, 1, 1, 2, 2]
    assert [r["loss"] for r in log] == [r["loss"] for r in reference]   # the same run, exactly


def test_save_removes_orphan_temp_files_of_the_run_folder(shapes_root, tmp_path):
    trainer = quiet(tiny(shapes_root, tmp_path, epochs=1)).fit()
    (tmp_path / "tmpk1ll3d.tmp.npz").write_bytes(b"\0" * 1000)   # a save cut by a kill
    (tmp_path / "last.json.tmp").write_text("{")
    trainer.save(str(tmp_path / "last.npz"))
    assert sorted(os.listdir(tmp_path)) == ["last.json", "last.npz", "train_log.jsonl"]


def test_resume_into_a_folder_holding_another_run_is_refused(shapes_root, tmp_path):
    quiet(tiny(shapes_root, tmp_path / "a")).fit(epochs=1)
    quiet(tiny(shapes_root, tmp_path / "b", seed=7)).fit(epochs=1)
    before = files(tmp_path / "b")
    into_b = quiet(tiny(shapes_root, tmp_path / "b", resume=str(tmp_path / "a" / "last.npz")))
    with pytest.raises(RunExistsError, match=r"holds another run than .*a/last.npz's"):
        into_b.fit()
    assert files(tmp_path / "b") == before
    shutil.copy(tmp_path / "a" / "last.npz", tmp_path / "a-epoch1.npz")    # a copy of run a
    quiet(tiny(shapes_root, tmp_path / "a", resume=str(tmp_path / "a-epoch1.npz"))).fit()


def test_truncate_log_keeps_the_steps_up_to_the_checkpoint(tmp_path):
    path = tmp_path / "train_log.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": s / 10}) + "\n" for s in range(1, 6))
                    + '{"step": 6, "lo')
    truncate_log(str(path), 3)
    assert [json.loads(l)["step"] for l in open(path)] == [1, 2, 3]
    truncate_log(str(tmp_path / "missing.jsonl"), 3)           # nothing to cut
    assert not os.path.exists(tmp_path / "missing.jsonl")


# --------------------------------------------------------------------------- #
# TrainConfig: validated, one field at a time
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("change, message", [
    (dict(epochs=-3), r"TrainConfig.epochs \(--epochs\): must be an integer >= 1 or auto, got -3"),
    (dict(epochs=0), r"TrainConfig.epochs \(--epochs\): must be an integer >= 1 or auto, got 0"),
    (dict(epochs=2.5), r"TrainConfig.epochs \(--epochs\): must be an integer"),
    (dict(epochs="many"), r"TrainConfig.epochs \(--epochs\): must be an integer >= 1 or auto, "
                          r"got 'many'"),
    (dict(epochs="auto"), r"TrainConfig.epochs \(--epochs\): auto fills the time of --max-minutes"),
    (dict(epochs="auto", max_minutes=5, resume="b.npz"), r"TrainConfig.epochs \(--epochs\): auto "
                                                         r"plans a new run"),
    (dict(batch_size=0), r"TrainConfig.batch_size \(--batch-size\): must be an integer >= 1"),
    (dict(workers=-1), r"TrainConfig.workers \(--workers\): must be an integer >= 0, got -1"),
    (dict(max_minutes=float("nan")), r"TrainConfig.max_minutes \(--max-minutes\): must be a finite "
                                     r"number > 0, got nan"),
    (dict(max_minutes=0), r"TrainConfig.max_minutes \(--max-minutes\): must be a finite number > 0"),
    (dict(lr=float("inf")), r"TrainConfig.lr \(--lr\): must be a finite number > 0, got inf"),
    (dict(lr=-1e-3), r"TrainConfig.lr \(--lr\)"),
    (dict(momentum=1.0), r"TrainConfig.momentum \(--momentum\): must be a finite number >= 0 and < 1"),
    (dict(weight_decay=-1.0), r"TrainConfig.weight_decay \(--weight-decay\)"),
    (dict(ema=1.0), r"TrainConfig.ema \(--ema\): must be a finite number >= 0 and < 1, got 1.0"),
    (dict(warmup_steps=-1), r"TrainConfig.warmup_steps \(--warmup-steps\): must be an integer >= 0"),
    (dict(decay_at=(0.8, 0.5)), r"TrainConfig.decay_at \(--decay-at\): must be increasing fractions"),
    (dict(decay_at=(0.5, 1.5)), r"TrainConfig.decay_at \(--decay-at\)"),
    (dict(seed=-1), r"TrainConfig.seed \(--seed\): must be an integer >= 0"),
    (dict(schedule="poly"), r"TrainConfig.schedule \(--schedule\): must be 'step' or 'cosine'"),
    (dict(optimizer="adam"), r"TrainConfig.optimizer \(--optimizer\): must be 'sgd' or 'adamw'"),
    (dict(log_every=0), r"TrainConfig.log_every \(--log-every\)"),
    (dict(augment="mixup"), r"TrainConfig.augment \(--augment\): must be 'ssd', 'flip' or 'none'"),
    (dict(loader="fork"), r"TrainConfig.loader \(--loader\): must be 'threads' or 'processes'"),
    (dict(zoom_out=0.5), r"TrainConfig.zoom_out \(--zoom-out\): must be a finite number >= 1"),
    (dict(match_iou=0.0), r"TrainConfig.match_iou \(--match-iou\): must be a finite number > 0 and <= 1"),
    (dict(focal=-1.0), r"TrainConfig.focal \(--focal\): must be a finite number >= 0"),
    (dict(ignore_iou=0.35, match_iou=0.35), r"TrainConfig.ignore_iou \(--ignore-iou\): must be a finite "
                                            r"number >= 0 and < 0.35, got 0.35"),
    (dict(match_topk=-1), r"TrainConfig.match_topk \(--match-topk\): must be an integer >= 0"),
    (dict(match_topk=1.5), r"TrainConfig.match_topk \(--match-topk\): must be an integer >= 0"),
    (dict(match_topk=16, match_floor=0.4, match_iou=0.35), r"TrainConfig.match_floor \(--match-floor\): "
                                                           r"must be at most --match-iou \(0.35\) with "
                                                           r"--match-topk, got 0.4"),
    (dict(match_floor=0.0), r"TrainConfig.match_floor \(--match-floor\): must be a finite number > 0 "
                            r"and <= 1"),
    (dict(background_maxout=0), r"TrainConfig.background_maxout \(--background-maxout\): must be an integer >= 1"),
    (dict(maxout_maps=0), r"TrainConfig.maxout_maps \(--maxout-maps\): must be an integer >= 1"),
    (dict(maxout_maps=2), r"TrainConfig.maxout_maps \(--maxout-maps\): only applies with "
                          r"--background-maxout 2 or more"),
    (dict(top_down=1), r"TrainConfig.top_down \(--top-down\): must be true or false, got 1"),
    (dict(mosaic=1.5), r"TrainConfig.mosaic \(--mosaic\): must be a finite number >= 0 and <= 1"),
    (dict(mosaic=0.5, augment="flip"), r"TrainConfig.mosaic \(--mosaic\): only applies with "
                                       r"--augment ssd \(not flip\)"),
    (dict(mixup=-0.1), r"TrainConfig.mixup \(--mixup\): must be a finite number >= 0 and <= 1"),
    (dict(split=""), r"TrainConfig.split \(--split\): must be a non-empty string"),
    (dict(out=""), r"TrainConfig.out \(--out\): must be a non-empty string"),
    (dict(classes=["a", "b", "a"]), r"TrainConfig.classes \(--classes\): lists a more than once"),
    (dict(classes=[]), r"TrainConfig.classes \(--classes\): must be a non-empty list"),
    (dict(init="a.npz", resume="b.npz"), r"TrainConfig.init \(--init\): .*give one"),
    (dict(reset_heads=True), r"TrainConfig.reset_heads \(--reset-heads\): only applies with --init"),
    (dict(override=True), r"TrainConfig.override \(--override\): only applies with --resume"),
    (dict(overwrite=True, resume="b.npz"), r"TrainConfig.overwrite \(--overwrite\)"),
])
def test_train_config_validate_names_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**dict(dict(data=["x"]), **change)).validate()


def test_train_config_defaults_are_valid_and_round_trip():
    tc = TrainConfig(data=["x"]).validate()
    assert TrainConfig.from_dict(json.loads(json.dumps(tc.to_dict()))) == tc
    assert TrainConfig.from_dict({"epochs": 3, "not_a_field": 1}).epochs == 3   # an older record
    assert "batch_size" in tc.same_on_resume() and "workers" not in tc.same_on_resume()


def test_trainer_names_an_empty_split_and_a_too_small_one(shapes_root, tmp_path):
    with open(os.path.join(shapes_root, "ImageSets", "Main", "empty.txt"), "w"):
        pass
    with pytest.raises(ValueError, match=r"split 'empty' is empty: ImageSets/Main/empty.txt of "
                                         rf"{re.escape(str(shapes_root))} lists no images"):
        Trainer(tiny(shapes_root, tmp_path, split="empty", batch_size=1))
    with pytest.raises(ValueError, match=r"split 'test' has 4 image\(s\), fewer than --batch-size 8: "
                                         r"give --batch-size 4 or less"):
        Trainer(tiny(shapes_root, tmp_path, split="test", batch_size=8))


# --- --epochs auto: the epochs --max-minutes holds ----------------------------------------
def test_epochs_for_budget_counts_whole_epochs_in_the_margin():
    assert epochs_for_budget(3600, 15) == 232            # 0.97 * 3600 / 15 = 232.8
    assert epochs_for_budget(3600, 15, margin=1.0) == 240
    assert epochs_for_budget(60, 100) == 0


def test_timing_steps_leaves_the_run_untouched(shapes_root, tmp_path):
    straight = quiet(tiny(shapes_root, tmp_path / "a")).fit()
    timed = quiet(tiny(shapes_root, tmp_path / "b"))
    seconds, steps = timed.time_steps(min_seconds=0.0, min_steps=5)
    assert seconds > 0 and steps == 1                    # 2 steps an epoch: the first is not timed
    assert timed.step == 0
    timed.fit()
    for k, v in params(straight.model).items():
        np.testing.assert_array_equal(timed.model.state_dict()[k], v, err_msg=k)
    one_batch = quiet(tiny(shapes_root, tmp_path / "c", batch_size=8))
    assert one_batch.time_steps(min_seconds=0.0)[1] == 1    # a one-step epoch: that step, timed


def test_epochs_auto_plans_from_the_timing_and_replans_from_the_run_s_speed(shapes_root, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(Trainer, "time_steps", lambda self: (0.5, 3))   # 2 steps: 1 s an epoch
    messages = []
    trainer = Trainer(tiny(shapes_root, tmp_path / "auto", epochs="auto", max_minutes=0.1),
                      log=messages.append)
    assert trainer.tc.epochs == 5                        # 0.97 * 6 s // 1 s
    assert trainer.total_steps == 10 and trainer.schedule.milestones == (6, 8)
    assert messages[0].startswith("--epochs auto: 3 steps timed at 0.500 s each, about 1.0 s an "
                                  "epoch: 5 epochs fill 97% of 0.1 min; warm-up 2 steps")
    trainer.clock = lambda: 1.0 * trainer.step            # the run is slower: 1 s a step
    trainer.fit()
    # after epoch 1 (2 s): 1 + 0.97 * 4 s // 2 s = 2 epochs; its first decay (step 2) is not past
    assert "2.0 s an epoch lately: 2 epochs in all (was 5)" in " ".join(messages)
    assert (trainer.epoch, trainer.step, trainer.schedule.milestones) == (2, 4, (2, 3))
    records = [json.loads(line) for line in open(tmp_path / "auto" / "train_log.jsonl")]
    assert records[0]["plan"] == {"epochs": 5, "warmup_steps": 2, "seconds_per_step": 0.5,
                                  "steps_timed": 3, "seconds_per_epoch": 1.0,
                                  "budget_minutes": 0.1, "margin": 0.97,
                                  "timing_seconds": records[0]["plan"]["timing_seconds"]}
    assert records[2]["replan"] == {"epochs": 2, "seconds_per_epoch": 2.0}
    assert [r["step"] for r in records if "plan" in r or "replan" in r] == [1, 3]
    saved = read_checkpoint(tmp_path / "auto" / "last.npz")[1]["train_config"]
    assert (saved["epochs"], saved["warmup_steps"]) == (2, 2)
    rerun = quiet(tiny(shapes_root, tmp_path / "rerun", epochs=2, warmup_steps=2)).fit()
    assert [r["lr"] for r in records] == [json.loads(line)["lr"] for line in
                                          open(tmp_path / "rerun" / "train_log.jsonl")]
    for k, v in params(rerun.model).items():             # --epochs 2 --warmup-steps 2 reruns it
        np.testing.assert_array_equal(trainer.model.state_dict()[k], v, err_msg=k)


def test_replan_keeps_a_plan_once_a_decay_is_or_would_be_past(shapes_root, tmp_path, monkeypatch):
    monkeypatch.setattr(Trainer, "time_steps", lambda self: (0.5, 3))
    trainer = quiet(tiny(shapes_root, tmp_path, epochs="auto", max_minutes=0.1))   # 5 epochs
    trainer.epoch, trainer.step = 2, 4
    assert trainer.replan(elapsed=2.0, epoch_s=0.5) == 9         # faster: 2 + 0.97 * 4 // 0.5
    assert trainer.schedule.milestones == (12, 15)
    trainer.epoch, trainer.step = 3, 6
    assert trainer.replan(elapsed=4.0, epoch_s=1.0) == 9         # 4 epochs: first decay (5) past
    trainer.epoch, trainer.step = 7, 14
    assert trainer.replan(elapsed=5.0, epoch_s=0.1) == 9         # decayed at 12: fixed
    assert trainer.schedule.milestones == (12, 15) and trainer.total_steps == 18
    cosine = quiet(tiny(shapes_root, tmp_path / "cos", epochs="auto", max_minutes=0.1,
                        schedule="cosine"))
    assert cosine.replan(elapsed=0.0, epoch_s=0.1) == 5          # the cosine keeps its length


def test_epochs_auto_times_a_copy_and_plans_before_the_schedule(shapes_root, tmp_path):
    planned = quiet(tiny(shapes_root, tmp_path / "a", epochs="auto", max_minutes=0.5))
    epochs = planned.tc.epochs
    assert epochs == planned.plan["epochs"] >= 1 and planned.plan["steps_timed"] == 1
    assert planned.total_steps == 2 * epochs and planned.step == 0
    fixed = quiet(tiny(shapes_root, tmp_path / "b", epochs=epochs))
    assert planned.schedule == fixed.schedule
    for k, v in params(fixed.model).items():           # the timing trained a copy, not the model
        np.testing.assert_array_equal(planned.model.state_dict()[k], v, err_msg=k)


def test_epochs_auto_refuses_a_folder_holding_a_run_before_timing(shapes_root, tmp_path,
                                                                   monkeypatch):
    quiet(tiny(shapes_root, tmp_path, epochs=1)).fit()
    def timed(self):
        raise AssertionError("timed the steps before checking --out")
    monkeypatch.setattr(Trainer, "time_steps", timed)
    with pytest.raises(RunExistsError, match=r"holds a run \(last.npz, train_log.jsonl\)"):
        quiet(tiny(shapes_root, tmp_path, epochs="auto", max_minutes=1))


def test_epochs_auto_names_a_budget_shorter_than_one_epoch(shapes_root, tmp_path, monkeypatch):
    monkeypatch.setattr(Trainer, "time_steps", lambda self: (60.0, 3))  # 2 min an epoch
    with pytest.raises(ValueError, match=r"--epochs auto\): one epoch of 2 steps takes about 2.0 "
                                         r"min here, more than --max-minutes 1"):
        Trainer(tiny(shapes_root, tmp_path, epochs="auto", max_minutes=1), log=lambda *_: None)


# --------------------------------------------------------------------------- #
# --ema: a moving average of the weights beside the run
# --------------------------------------------------------------------------- #
def test_ema_is_kept_checkpointed_and_is_the_model_that_is_evaluated_and_exported(shapes_root,
                                                                                   tmp_path,
                                                                                   monkeypatch):
    from minissd.datasets.voc import VOCDataset
    from minissd.evaluation import inference
    from minissd.evaluation.inference import Detector, evaluate_dataset
    scored = []                                          # the weights each evaluation scored
    monkeypatch.setattr(inference, "evaluate_dataset", lambda detector, *a, **k: (
        scored.append(params(detector.model)) or evaluate_dataset(detector, *a, **k)))
    plain = quiet(tiny(shapes_root, tmp_path / "plain", epochs=3, lr=1e-2)).fit()
    tc = tiny(shapes_root, tmp_path / "ema", epochs=3, lr=1e-2, ema=0.5, eval_every=3,
              eval_split="test")
    trainer = quiet(tc).fit()
    own = params(trainer.model)
    for k, v in params(plain.model).items():            # the average never feeds back
        np.testing.assert_array_equal(own[k], v, err_msg=k)
    average = {k: np.asarray(v) for k, v in trainer.average.state_dict()[0].items()}
    assert trainer.average.updates == trainer.step == 6
    assert any(not np.array_equal(average[k], own[k]) for k in own)
    arrays, meta = read_checkpoint(tmp_path / "ema" / "last.npz")
    assert meta["ema"] == {"decay": 0.5, "updates": 6}
    for k in own:                                        # model.*: the run's own weights, to resume
        np.testing.assert_array_equal(arrays[f"model.{k}"], own[k], err_msg=k)
        np.testing.assert_array_equal(arrays[f"ema.{k}"], average[k], err_msg=k)
    model, _ = load_model(tmp_path / "ema" / "last.npz")  # evaluate, detect: the average
    export_model(tmp_path / "ema" / "last.npz", tmp_path / "shipped.npz")
    exported, exported_meta = load_model(tmp_path / "shipped.npz")
    assert "ema" not in exported_meta and not any(k.startswith("ema.")
                                                  for k in read_checkpoint(tmp_path / "shipped.npz")[0])
    for k in own:
        np.testing.assert_array_equal(model.state_dict()[k], average[k], err_msg=k)
        np.testing.assert_array_equal(exported.state_dict()[k], average[k], err_msg=k)
    assert len(scored) == 1                              # --eval-every 3: after the last epoch
    for k in own:
        np.testing.assert_array_equal(scored[0][k], average[k], err_msg=k)
    logged = [json.loads(l) for l in open(tmp_path / "ema" / "train_log.jsonl") if "eval_map" in l]
    result, _ = evaluate_dataset(Detector(model), VOCDataset([(shapes_root, "test")],
                                                              keep_difficult=True))
    assert logged[-1]["eval_map"] == pytest.approx(result["map"], abs=1e-9)
    for k, v in params(trainer.model).items():           # the evaluation gave the weights back
        np.testing.assert_array_equal(v, own[k], err_msg=k)
    tuned = quiet(tiny(shapes_root, tmp_path / "ft", init=str(tmp_path / "ema" / "last.npz"),
                       epochs=1))
    for k in own:                                        # --init starts from the average too
        np.testing.assert_array_equal(tuned.model.state_dict()[k], average[k], err_msg=k)


def test_ema_resumes_exactly_and_is_untouched_by_the_step_timing(shapes_root, tmp_path):
    straight = quiet(tiny(shapes_root, tmp_path / "a", ema=0.9)).fit()
    first = quiet(tiny(shapes_root, tmp_path / "b", ema=0.9))
    first.time_steps(min_seconds=0.0, min_steps=1)
    assert first.average.updates == 0
    first.fit(epochs=1)
    resumed = quiet(tiny(shapes_root, tmp_path / "c", ema=0.9))
    resumed.resume(tmp_path / "b" / "last.npz")
    assert resumed.average.updates == 2
    resumed.fit()
    a, c = straight.average.state_dict()[0], resumed.average.state_dict()[0]
    for k in a:
        np.testing.assert_array_equal(c[k], a[k], err_msg=k)
    changed = quiet(tiny(shapes_root, tmp_path / "b", ema=0.99, override=True,
                         resume=str(tmp_path / "b" / "last.npz")))
    assert (changed.average.decay, changed.average.updates) == (0.99, 2)   # --override: the new decay
    quiet(tiny(shapes_root, tmp_path / "e")).fit(epochs=1)        # a run without --ema
    late = quiet(tiny(shapes_root, tmp_path / "e", ema=0.9, override=True,
                      resume=str(tmp_path / "e" / "last.npz")))
    assert late.overridden == {"ema": [0.0, 0.9]}            # --override turns it on: from here
    assert late.average.updates == 0
    for k, v in late.average.state_dict()[0].items():
        np.testing.assert_array_equal(v, late.model.state_dict()[k], err_msg=k)
