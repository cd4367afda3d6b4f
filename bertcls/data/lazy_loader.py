"""A ``DataLoader`` whose pass starts at its first batch, for training loaders that may be resumed mid-epoch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader


class LazyStartDataLoader(DataLoader):
    """Starts a pass (and its worker processes' prefetching) when the first batch is asked for, not at ``iter()``.

    Lightning calls ``iter()`` on the training loader as soon as it builds it, and under DeepSpeed and FSDP that is
    before the checkpoint restore gives the sampler its epoch and resume position. Without workers the sampler reads
    both at the first batch anyway (``LengthBucketBatchSampler.__iter__``); worker processes, though, take the first
    batches' indices as soon as the pass starts.
    """

    def __iter__(self) -> Iterator[Any]:
        return _StartsAtFirstNext(super().__iter__)


class _StartsAtFirstNext(Iterator[Any]):
    def __init__(self, start: Callable[[], Iterator[Any]]) -> None:
        self._start = start
        self._iterator: Iterator[Any] | None = None

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = self._start()
        return next(self._iterator)
