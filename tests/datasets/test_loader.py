"""DataLoader: every image once per epoch, same batches for any worker count, clean stops."""
import multiprocessing
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from minissd.datasets.augment import MixUp, Mosaic, train_transform
from minissd.datasets.voc import VOCDataset
from minissd.datasets.loader import (Batch, DataLoader, DataLoaderError, collate, mixup_rngs,
                                     mosaic_rng, sample_rng)
from minissd.errors import UserError

VOC5 = Path(__file__).resolve().parents[1] / "data" / "voc5"


class FakeDataset:
    """n tiny images; image i is filled with the value i and has i % 3 boxes. Counts loads."""

    def __init__(self, n=23, fail_at=None, delay=0.0):
        self.ids = [f"img{i:02d}" for i in range(n)]
        self.fail_at, self.delay, self.loads = fail_at, delay, 0

    def __len__(self):
        return len(self.ids)

    def load(self, i):
        self.loads += 1
        time.sleep(self.delay)
        if i == self.fail_at:
            raise ValueError(f"/data/{self.ids[i]}.jpg: cannot decode image")
        boxes = np.tile(np.array([[1, 2, 5, 6]], np.float32), (i % 3, 1))
        return np.full((8, 8, 3), i, np.uint8), boxes, np.full(i % 3, 1 + i % 2, np.int64)


def noisy_transform(image, boxes, labels, rng):
    """Adds the rng's first draw, so the batches show which Generator each sample got."""
    chw = image.astype(np.float32).transpose(2, 0, 1) + rng.random()
    return chw, boxes / 8, labels


def loader_threads():
    return [t for t in threading.enumerate() if t.name.startswith("minissd-loader")]


def test_every_image_once_per_epoch_with_several_workers():
    ds = FakeDataset(23)
    loader = DataLoader(ds, noisy_transform, batch_size=4, num_workers=3, prefetch=2)
    assert len(loader) == 6
    orders = []
    for _ in range(2):
        batches = list(loader)
        assert [len(b.ids) for b in batches] == [4, 4, 4, 4, 4, 3]
        ids = [i for b in batches for i in b.ids]
        assert sorted(ids) == ds.ids                          # every image exactly once
        for b in batches:                                     # images and ids stay together
            assert isinstance(b, Batch) and b.images.shape[1:] == (3, 8, 8)
            np.testing.assert_array_equal(np.floor(b.images[:, 0, 0, 0]), [int(i[3:]) for i in b.ids])
            assert all(bx.shape == (int(i[3:]) % 3, 4) and bx.dtype == np.float32 for bx, i in zip(b.boxes, b.ids))
            assert all(lb.dtype == np.int64 for lb in b.labels)
        orders.append(ids)
    assert orders[0] != orders[1] and loader.epoch == 2       # the epoch advances per loop
    assert not loader_threads()


def assert_same_batches(runs):
    """Each run (a list of batches) has the first run's ids and images, batch by batch."""
    for run in runs[1:]:
        assert len(run) == len(runs[0])
        for a, b in zip(runs[0], run):
            assert a.ids == b.ids
            np.testing.assert_array_equal(a.images, b.images)


def test_same_batches_whatever_the_number_of_workers():
    ds, runs = FakeDataset(10), []
    for workers in (0, 1, 4):
        loader = DataLoader(ds, noisy_transform, batch_size=3, seed=7, num_workers=workers)
        loader.set_epoch(5)
        runs.append(list(loader))
    assert_same_batches(runs)
    index = ds.ids.index(runs[0][0].ids[0])                  # each sample got rng (seed, epoch, index)
    expected = noisy_transform(*ds.load(index), sample_rng(7, 5, index))[0]
    np.testing.assert_array_equal(runs[0][0].images[0], expected)


def test_set_epoch_replays_an_epoch_and_shuffle_false_keeps_order():
    loader = DataLoader(FakeDataset(9), noisy_transform, batch_size=2, num_workers=2)
    first = [b.ids for b in loader]
    loader.set_epoch(0)
    assert [b.ids for b in loader] == first
    ordered = DataLoader(FakeDataset(9), noisy_transform, batch_size=2, shuffle=False, drop_last=True)
    assert len(ordered) == 4 and [i for b in ordered for i in b.ids] == FakeDataset(9).ids[:8]


@pytest.mark.parametrize("workers, processes", [(0, False), (2, False), (2, True)])
def test_worker_error_names_the_image_and_stops_the_workers(workers, processes):
    ds = FakeDataset(40, fail_at=13, delay=0.002)
    loader = DataLoader(ds, noisy_transform, batch_size=4, shuffle=False, num_workers=workers,
                        processes=processes)
    seen = []
    with pytest.raises(DataLoaderError, match=r"image 'img13' \(index 13\) failed: ValueError: "
                                              r"/data/img13\.jpg: cannot decode image"):
        for batch in loader:
            seen += batch.ids
    assert seen == ds.ids[:12]
    assert not loader_threads() and not multiprocessing.active_children()
    if not processes:                    # (worker processes count their loads in their copies)
        loads = ds.loads
        time.sleep(0.05)
        assert ds.loads == loads and loads < 40               # queued work was cancelled


@pytest.mark.parametrize("processes", [False, True])
def test_consumer_breaking_early_stops_the_workers(processes):
    ds = FakeDataset(200, delay=0.002)
    loader = DataLoader(ds, noisy_transform, batch_size=4, num_workers=2, prefetch=2,
                        processes=processes)
    for k, _ in enumerate(loader):
        if k == 1:
            break
    assert not loader_threads() and not multiprocessing.active_children()
    if not processes:                    # (worker processes count their loads in their copies)
        loads = ds.loads
        time.sleep(0.05)
        assert ds.loads == loads and loads <= 4 * 4          # batches 0, 1 and 2 prefetched
    assert len(list(loader)) == 50                            # the next epoch starts new workers


def test_ctrl_c_in_the_consumer_stops_the_threads():
    loader = DataLoader(FakeDataset(100, delay=0.002), noisy_transform, batch_size=4, num_workers=2)
    batches = iter(loader)
    next(batches)
    with pytest.raises(KeyboardInterrupt):
        batches.throw(KeyboardInterrupt)                      # as if Ctrl-C hit at the yield
    assert not loader_threads()


@pytest.mark.parametrize("kwargs, words", [
    (dict(batch_size=0), "batch_size must be >= 1, got 0"),
    (dict(prefetch=0), "prefetch must be >= 1, got 0"),
    (dict(num_workers=-1), "num_workers must be >= 0"),
])
def test_bad_settings_are_user_errors(kwargs, words):
    with pytest.raises(UserError, match=words):
        DataLoader(FakeDataset(), noisy_transform, **dict(dict(batch_size=4), **kwargs))


def test_collate_rejects_images_of_different_sizes():
    samples = [(np.zeros((3, 4, 4), np.float32), np.zeros((0, 4)), np.zeros(0)),
               (np.zeros((3, 5, 5), np.float32), np.zeros((0, 4)), np.zeros(0))]
    with pytest.raises(DataLoaderError, match=r"differ in shape .*\['a', 'b'\]"):
        collate(samples, ["a", "b"])


def test_worker_processes_give_the_same_batches_as_threads():
    ds, runs = FakeDataset(10), []
    for workers, processes in ((2, False), (2, True), (3, True)):
        loader = DataLoader(ds, noisy_transform, batch_size=3, seed=7, num_workers=workers,
                            processes=processes)
        loader.set_epoch(5)
        runs.append(list(loader))
    for run in runs[1:]:
        assert len(run) == len(runs[0])
        for a, b in zip(runs[0], run):
            assert a.ids == b.ids
            np.testing.assert_array_equal(a.images, b.images)
            for x, y in zip(a.boxes + a.labels, b.boxes + b.labels):
                np.testing.assert_array_equal(x, y)
    assert ds.loads == 10                             # the processes loaded their own copies
    assert not multiprocessing.active_children()      # each epoch's workers joined


def mosaic_transform(image, boxes, labels, rng):
    """A mosaic's pipeline for the fake photos: the canvas's corner, marked 1000 + the draw."""
    chw, boxes, labels = noisy_transform(image[:8, :8], boxes / 2, labels, rng)
    return chw + 1000, boxes, labels


def test_mosaic_samples_come_from_their_own_generators_the_same_for_any_workers():
    ds, runs = FakeDataset(10), []
    mosaic = Mosaic(mosaic_transform, p=0.5, side=8)
    for workers, processes in ((0, False), (3, False), (2, True)):
        loader = DataLoader(ds, noisy_transform, batch_size=5, seed=7, num_workers=workers,
                            processes=processes, mosaic=mosaic)
        loader.set_epoch(3)
        runs.append(list(loader))
    assert_same_batches(runs)
    kinds = set()
    for batch in runs[0]:
        for image, id_ in zip(batch.images, batch.ids):
            index = ds.ids.index(id_)
            made = mosaic(ds, index, mosaic_rng(7, 3, index), sample_rng(7, 3, index))
            expected = (made if made is not None
                        else noisy_transform(*ds.load(index), sample_rng(7, 3, index)))[0]
            np.testing.assert_array_equal(image, expected)
            kinds.add(made is not None)
    assert kinds == {True, False}                     # p = 0.5: some of each


def test_a_mosaic_without_boxes_falls_back_to_the_photo_decoded_once():
    ds = FakeDataset(1)                               # image 0 has no boxes: no mosaic keeps any
    loader = DataLoader(ds, noisy_transform, batch_size=1, seed=7,
                        mosaic=Mosaic(mosaic_transform, p=1.0, side=8))
    image, boxes, labels = loader.load_sample(3, 0)
    expected = noisy_transform(*FakeDataset(1).load(0), sample_rng(7, 3, 0))
    np.testing.assert_array_equal(image, expected[0])
    assert len(boxes) == len(labels) == 0
    assert ds.loads == 4                              # the photo and the mosaic's three others


def test_mixup_blends_a_second_sample_made_from_its_own_generators_for_any_workers():
    ds, runs = FakeDataset(10), []
    mosaic, mixup = Mosaic(mosaic_transform, p=0.5, side=8), MixUp(p=0.5)
    for workers, processes in ((0, False), (3, False), (2, True)):
        loader = DataLoader(ds, noisy_transform, batch_size=5, seed=7, num_workers=workers,
                            processes=processes, mosaic=mosaic, mixup=mixup)
        loader.set_epoch(3)
        runs.append(list(loader))
    assert_same_batches(runs)
    plain = DataLoader(ds, noisy_transform, batch_size=5, seed=7, mosaic=mosaic)
    mixed = set()
    for batch in runs[0]:
        for image, boxes, labels, id_ in zip(batch.images, batch.boxes, batch.labels, batch.ids):
            index = ds.ids.index(id_)
            first = plain.load_sample(3, index)          # the sample without mixup
            choices, second_mosaic, second_sample = mixup_rngs(7, 3, index)
            plan = mixup.draw(len(ds), choices)
            if plan is None:
                expected = first
            else:                                        # the other photo, made as any sample is
                other, r = plan
                second = plain.make_sample(other, second_mosaic, second_sample)
                assert not np.array_equal(second[0], plain.load_sample(3, other)[0])
                expected = (r * first[0] + (1 - r) * second[0], np.concatenate([first[1], second[1]]),
                            np.concatenate([first[2], second[2]]))
            np.testing.assert_allclose(image, expected[0], rtol=1e-6, atol=1e-4)
            np.testing.assert_array_equal(boxes, expected[1])
            np.testing.assert_array_equal(labels, expected[2])
            mixed.add(plan is not None)
    assert mixed == {True, False}                        # p = 0.5: some of each


@pytest.mark.parametrize("processes", [False, True])
def test_real_voc5_batches(processes):
    ds = VOCDataset([(VOC5, "trainval")])
    loader = DataLoader(ds, train_transform(64), batch_size=3, num_workers=2, processes=processes)
    batches = list(loader)
    assert len(batches) == 3 and sorted(i for b in batches for i in b.ids) == sorted(ds.ids)
    for b in batches:
        assert b.images.shape[1:] == (3, 64, 64) and b.images.dtype == np.float32
        for boxes, labels in zip(b.boxes, b.labels):
            assert boxes.shape == (len(labels), 4) and (boxes >= 0).all() and (boxes <= 1).all()
            assert set(labels) <= {1, 2, 3, 4, 5}
