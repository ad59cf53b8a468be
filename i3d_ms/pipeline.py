"""MindSpore's GeneratorDatasets over the training and evaluation samples (`recipe.samples`):
worker threads decode ahead of the network, `PREFETCH` batches deep."""
from __future__ import annotations

from recipe.samples import PREFETCH, EvalSource, TrainSource


def _pipeline(source, columns, workers: int):
    import mindspore.dataset as ds

    ds.config.set_prefetch_size(PREFETCH)
    return ds.GeneratorDataset(source, columns, shuffle=False, num_parallel_workers=workers,
                               python_multiprocessing=False)


def train_dataset(source: TrainSource, workers: int):
    return _pipeline(source, ["clip", "label", "flip"], workers).batch(source.batch,
                                                                       drop_remainder=True)


def eval_dataset(source: EvalSource, workers: int, batch_clips: int = 32):
    """Batches of `source.rows_per_batch(batch_clips)` rows (the last may be short)."""
    return _pipeline(source, ["clips", "label", "index", "valid"], workers).batch(
        source.rows_per_batch(batch_clips))
