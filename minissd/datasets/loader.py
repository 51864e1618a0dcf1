"""Batches for training and evaluation: decode + augment in background threads (or processes).

    loader = DataLoader(dataset, train_transform(300), batch_size=32, num_workers=4)
    for epoch in range(10):
        for batch in loader:          # batch.images (32, 3, 300, 300) float32
            ...

Workers are threads: PIL decodes and resizes, and NumPy computes, with the GIL
released, so threads run in parallel without copying images between processes
(benchmarks/bench_data.py measures it). While the consumer trains on batch k the
pool is already working on batches k+1 .. k+prefetch, so a GPU is not left waiting.

Threads still take turns at the interpreter lock for the Python between the PIL and
NumPy calls, and so does the training thread that launches the GPU's kernels: on a
GPU one process then trains at about 120 images/s however many threads load
(benchmarks/README "GPU"). ``processes=True`` runs the same ``load_sample`` in worker
processes instead (forked, as PyTorch's DataLoader does on Linux), each with its own
lock; the samples come back pickled. Same batches either way.

Reproducible: sample i of epoch e is augmented with its own Generator seeded by
(seed, e, i), and the shuffle order by (seed, e), so a run gives the same batches
whatever the number of workers.

Epochs: each ``iter(loader)`` (each ``for`` loop) uses ``loader.epoch`` and then adds
one to it, so consecutive loops give new orders and new augmentations. Call
``loader.set_epoch(e)`` to choose the next one (e.g. when resuming a run).

Stopping: an error in a worker is re-raised in the consumer as a DataLoaderError that
names the image id; breaking out of the loop, Ctrl-C or any other exception cancels
the queued work and joins the workers before returning.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from minissd.errors import UserError

# Third word of the seed: separate random streams for the shuffle and for each sample.
_SHUFFLE_STREAM, _SAMPLE_STREAM, _MOSAIC_STREAM, _MIXUP_STREAM = 0, 1, 2, 3
DEFAULT_MAX_WORKERS = 8


class Batch(NamedTuple):
    """One batch: images (B, 3, S, S) float32; per image boxes (n_i, 4) [0, 1] xyxy and labels."""
    images: np.ndarray
    boxes: list      # B arrays (n_i, 4) float32 xyxy in [0, 1]
    labels: list     # B arrays (n_i,) int64 in 1..C
    ids: list        # B image ids (str)


class DataLoaderError(RuntimeError):
    """Loading or augmenting one image failed; the message names the image id."""


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The Generator that augments dataset item ``index`` in ``epoch``."""
    return np.random.default_rng([seed, epoch, _SAMPLE_STREAM, index])


def mosaic_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The Generator of the mosaic choices (augment.Mosaic.draw) for item ``index`` in ``epoch``."""
    return np.random.default_rng([seed, epoch, _MOSAIC_STREAM, index])


def mixup_rngs(seed: int, epoch: int, index: int) -> tuple[np.random.Generator, ...]:
    """The Generators of item ``index``'s mixup in ``epoch``: its choices (augment.MixUp.draw),
    then the second sample's mosaic choices and augmentation (two children of the same seed)."""
    seeds = np.random.SeedSequence([seed, epoch, _MIXUP_STREAM, index])
    return (np.random.default_rng(seeds), *(np.random.default_rng(s) for s in seeds.spawn(2)))


def collate(samples, ids) -> Batch:
    """Stack transformed samples [(image (3, S, S), boxes, labels), ...] into a Batch."""
    shapes = {s[0].shape for s in samples}
    if len(shapes) != 1:
        raise DataLoaderError(f"images of one batch differ in shape {sorted(shapes)} "
                              f"(ids {ids}): does the transform end with Resize and ToCHW?")
    images = np.stack([s[0] for s in samples]).astype(np.float32, copy=False)   # (B, 3, S, S)
    boxes = [np.asarray(s[1], dtype=np.float32).reshape(-1, 4) for s in samples]
    labels = [np.asarray(s[2], dtype=np.int64).reshape(-1) for s in samples]
    return Batch(images, boxes, labels, list(ids))


class DataLoader:
    """Iterate over a data set in shuffled, augmented batches.

    dataset: has ``len``, ``ids`` and ``load(i) -> (image uint8 (H, W, 3), boxes, labels)``.
    transform: ``t(image, boxes, labels, rng)`` ending in (3, S, S) images, e.g. train_transform(S).
    num_workers: background workers (None: min(cpu count, 8)); 0 loads in the consumer's thread.
    prefetch: batches prepared ahead of the one being consumed.
    drop_last: skip the last batch if it is smaller than batch_size.
    processes: the num_workers workers are processes, not threads (each epoch forks them
        anew where the platform can fork; else spawns them, and then dataset and transform
        must pickle).
    mosaic: an augment.Mosaic, or None: with its probability an item is a mosaic of its photo
        and three others, transformed by the mosaic's own pipeline.
    mixup: an augment.MixUp, or None: with its probability an item is blended with a second
        sample, made as any item is (a mosaic or not) from another photo.
    """

    def __init__(self, dataset, transform, batch_size: int, shuffle: bool = True, seed: int = 0,
                 num_workers: int | None = None, prefetch: int = 2, drop_last: bool = False,
                 processes: bool = False, mosaic=None, mixup=None):
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        if prefetch < 1:
            raise UserError(f"prefetch must be >= 1, got {prefetch}")
        if num_workers is not None and num_workers < 0:
            raise UserError(f"num_workers must be >= 0 (0: load in this thread), got {num_workers}")
        self.dataset = dataset
        self.transform = transform
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_workers = (min(os.cpu_count() or 1, DEFAULT_MAX_WORKERS)
                            if num_workers is None else num_workers)
        self.prefetch = prefetch
        self.drop_last = drop_last
        self.processes = processes
        self.mosaic = mosaic
        self.mixup = mixup
        self.epoch = 0

    def __len__(self) -> int:
        """The number of batches per epoch."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``for`` loop run epoch ``epoch`` (its order and augmentations)."""
        self.epoch = epoch

    def batch_indices(self, epoch: int) -> list[np.ndarray]:
        """The data set indices of each batch of ``epoch``."""
        n = len(self.dataset)
        order = (np.random.default_rng([self.seed, epoch, _SHUFFLE_STREAM]).permutation(n)
                 if self.shuffle else np.arange(n))
        return [order[k:k + self.batch_size] for k in range(0, len(self) * self.batch_size,
                                                            self.batch_size)]

    def load_sample(self, epoch: int, index: int):
        """Decode and transform one item: (image (3, S, S), boxes (n, 4), labels (n,)).

        Runs in a worker thread; any error comes back as a DataLoaderError naming the image.
        """
        try:
            sample = self.make_sample(index, mosaic_rng(self.seed, epoch, index),
                                      sample_rng(self.seed, epoch, index))
            if self.mixup is not None:
                choices, *second = mixup_rngs(self.seed, epoch, index)
                plan = self.mixup.draw(len(self.dataset), choices)
                if plan is not None:                    # else: no mixup this time
                    other, r = plan
                    sample = self.mixup.blend(sample, self.make_sample(other, *second), r)
            return sample
        except Exception as e:
            raise DataLoaderError(f"DataLoader: image {self.dataset.ids[index]!r} (index {index}) "
                                  f"failed: {type(e).__name__}: {e}") from e

    def make_sample(self, index: int, mosaic_rng, sample_rng):
        """Photo ``index`` transformed: a mosaic if the mosaic's draw says so, else alone."""
        image, boxes, labels = self.dataset.load(index)
        if self.mosaic is not None:
            sample = self.mosaic(self.dataset, index, mosaic_rng, sample_rng,
                                 photo=(image, boxes, labels))
            if sample is not None:                      # else: no mosaic this time
                return sample
        return self.transform(image, boxes, labels, sample_rng)

    def _collate(self, indices, samples) -> Batch:
        return collate(samples, [self.dataset.ids[i] for i in indices])

    def __iter__(self):
        epoch = self.epoch          # taken now, so iter() itself moves to the next epoch
        self.epoch += 1
        if self.num_workers == 0:
            return self._iter_serial(epoch)
        if self.processes:
            return self._iter_pool(epoch, self._process_pool, _load_in_worker)
        return self._iter_pool(epoch, self._thread_pool, self.load_sample)

    def _thread_pool(self):
        return ThreadPoolExecutor(self.num_workers, thread_name_prefix="minissd-loader")

    def _process_pool(self):
        """num_workers processes, each holding this loader (forked, or pickled once)."""
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        return ProcessPoolExecutor(self.num_workers, mp_context=context,
                                   initializer=_start_worker, initargs=(self,))

    def _iter_pool(self, epoch, make_pool, load):
        """The workers (threads or processes) run ``load(epoch, index)``; batches in order."""
        pool = make_pool()
        in_flight = deque()                  # (indices, futures) of the batches queued
        try:
            for indices in self.batch_indices(epoch):
                in_flight.append((indices, [pool.submit(load, epoch, int(i))
                                            for i in indices]))
                if len(in_flight) > self.prefetch:
                    yield self._collect(*in_flight.popleft())
            while in_flight:
                yield self._collect(*in_flight.popleft())
        finally:  # normal end, worker error, consumer break (GeneratorExit) or Ctrl-C:
            pool.shutdown(wait=True, cancel_futures=True)   # drop queued work, join workers

    def _collect(self, indices, futures) -> Batch:
        """Wait for one batch; .result() re-raises a worker's DataLoaderError here."""
        return self._collate(indices, [f.result() for f in futures])

    def _iter_serial(self, epoch):
        """num_workers == 0: everything in the consumer's thread (easiest to debug)."""
        for indices in self.batch_indices(epoch):
            yield self._collate(indices, [self.load_sample(epoch, int(i)) for i in indices])


# --------------------------------------------------------------------------- #
# Worker processes (processes=True): each holds the loader, set once as it starts.
# --------------------------------------------------------------------------- #
_WORKER_LOADER = None


def _start_worker(loader: DataLoader) -> None:
    """A worker process's start: keep the loader; leave Ctrl-C to the training process,
    which then shuts the pool down (the workers would otherwise each print a traceback)."""
    global _WORKER_LOADER
    _WORKER_LOADER = loader
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _load_in_worker(epoch: int, index: int):
    """``load_sample`` in a worker process: the task is two ints, the sample is pickled back."""
    return _WORKER_LOADER.load_sample(epoch, index)
