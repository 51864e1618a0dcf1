"""Training: checkpoints (atomic, resumable), the NaN guard and the log, on a tiny shapes set."""
import json
import os

import numpy as np
import pytest

from minissd.nn.module import load_npz
from minissd.datasets.synthetic import write_shapes_dataset
from minissd.checkpoint import load_model, read_checkpoint
from minissd.train import NonFiniteLossError, Progress, Trainer, TrainConfig


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
    early = Trainer(tiny(shapes_root, tmp_path / "b", epochs=1, eval_every=1))
    with pytest.raises(ValueError, match="eval_every needs eval_split"):
        early.fit()
    assert early.step == 0                                   # refused before any training


def test_resume_continues_exactly(shapes_root, tmp_path):
    straight = Trainer(tiny(shapes_root, tmp_path / "a"), log=lambda *_: None).fit()
    Trainer(tiny(shapes_root, tmp_path / "b"), log=lambda *_: None).fit(epochs=1)
    resumed = Trainer(tiny(shapes_root, tmp_path / "c"), log=lambda *_: None)
    resumed.resume(tmp_path / "b" / "last.npz")
    assert (resumed.epoch, resumed.step) == (1, 2)
    resumed.fit()
    assert resumed.step == straight.step == 4
    a, c = params(straight.model), params(resumed.model)
    for k in a:
        np.testing.assert_allclose(c[k], a[k], rtol=1e-6, atol=1e-7, err_msg=k)
    for k, buf in straight.optimizer.buffers.items():
        np.testing.assert_allclose(resumed.optimizer.buffers[k], buf, rtol=1e-6, atol=1e-7)


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
    with pytest.raises(NonFiniteLossError, match=r"step 0 .*images in the batch: \d{6}"):
        trainer.fit()
    assert not os.path.exists(tmp_path / "last.npz")     # nothing trained on NaN was saved


def test_checkpoint_write_is_atomic(shapes_root, tmp_path, monkeypatch):
    trainer = Trainer(tiny(shapes_root, tmp_path, epochs=1), log=lambda *_: None).fit()
    path = tmp_path / "last.npz"
    good = load_npz(path)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")
    monkeypatch.setattr(np, "savez", killed)
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


def test_progress_prints_every_n_steps(capsys):
    import sys
    p = Progress(5, "epoch 1/1", every=2, stream=sys.stdout)
    for i in range(1, 6):
        p.update(i, f"loss {i}")
    out = capsys.readouterr().out.splitlines()
    assert [l.split("] ")[1] for l in out] == ["2/5 loss 2", "4/5 loss 4", "5/5 loss 5"]


def test_training_and_detection_on_fake_cupy(shapes_root, tmp_path, monkeypatch):
    """device='cuda' end to end on tests/fake_cupy (NumPy under CuPy's rules): every host/device
    hand-over of the loop -- batches, matching, loss, SGD, checkpoints, resume, detect, mAP -- is
    explicit, and the numbers agree with the NumPy run."""
    import fake_cupy
    from minissd.nn import backend
    from minissd.datasets.voc import VOCDataset
    from minissd.evaluation.inference import Detector, evaluate_dataset

    on_cpu = Trainer(tiny(shapes_root, tmp_path / "cpu"), log=lambda *_: None).fit()
    monkeypatch.setattr(backend, "_cupy", fake_cupy)
    on_gpu = Trainer(tiny(shapes_root, tmp_path / "gpu", device="cuda"), log=lambda *_: None)
    on_gpu.fit(epochs=1)
    assert isinstance(next(on_gpu.model.parameters()), fake_cupy.ndarray)
    resumed = Trainer(tiny(shapes_root, tmp_path / "gpu2", device="cuda"), log=lambda *_: None)
    resumed.resume(tmp_path / "gpu" / "last.npz")
    resumed.fit()
    a, b = params(on_cpu.model), {k: backend.to_numpy(v) for k, v in params(resumed.model).items()}
    for k in a:                    # the CuPy paths cut and sum in another order: rounding only
        np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-5, err_msg=k)

    test_set = VOCDataset([(shapes_root, "test")])
    results = {}
    for device in ("cpu", "cuda"):
        model, _ = load_model(tmp_path / "gpu2" / "last.npz", device=device)
        results[device] = evaluate_dataset(Detector(model, conf_threshold=0.05), test_set)
    (res_cpu, det_cpu), (res_gpu, det_gpu) = results["cpu"], results["cuda"]
    assert all(isinstance(arr, np.ndarray) for d in det_gpu for arr in d)   # back on the host
    assert [len(d[0]) for d in det_gpu] == [len(d[0]) for d in det_cpu]
    assert res_gpu["map"] == pytest.approx(res_cpu["map"], abs=1e-6)
