"""Length-bucketed, DDP-aware batch sampler.

Each epoch, examples are shuffled, cut into pools, sorted by length inside each pool and cut into
batches, so a batch holds examples of similar length and dynamic padding wastes little. Batches are
then dealt to ranks so that:

* every example is used exactly once per epoch across all ranks (no padding with repeats, no drops);
* every rank gets the same number of batches (no rank waits forever on a collective);
* the batches of one optimizer step have similar lengths on every rank (no rank idles on a short one);
* the order depends only on ``seed``, the epoch and the global batch size (``R * max_batch_size``),
  never on the number of workers, nor on how ranks share it: the examples of optimizer step ``k`` are the
  same with one process at batch 32 as with four at batch 8;
* a run resumed mid-epoch continues with the next unseen batch (``resume_at``, ``ResumePosition``), however many
  times and whenever the loader was built: the position is read when an epoch's pass starts.

Batch sizes are balanced: with ``n`` examples each of the ``ceil(n / (R * max_batch_size))`` steps holds
``n / steps`` examples give or take one, shared by the ``R`` ranks give or take one, never exceeding
``max_batch_size`` per rank.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from bertcls.errors import InputError


class BatchingError(InputError):
    """A split that cannot be cut into batches with this batch size and number of processes.

    The message states the problem in the sampler's terms; ``shuffle`` (true for the training split),
    ``batch_size`` and ``processes`` let the caller name the settings behind them (``bertcls.cli`` does).
    """

    def __init__(self, message: str, *, shuffle: bool, batch_size: int, processes: int) -> None:
        super().__init__(message)
        self.shuffle = shuffle
        self.batch_size = batch_size
        self.processes = processes


class ResumePosition:
    """Where a resumed run stands in an epoch: the batches of it trained before the restart.

    Shared by a data module and every training sampler it builds, because the position may arrive after the
    samplers exist: under DeepSpeed and FSDP, Lightning builds the training loader (for
    ``estimated_stepping_batches``, and DeepSpeed once more for its batch size) before it restores the checkpoint.
    The first pass that starts after ``set`` takes the position, whichever sampler makes it: one restore skips once.
    """

    def __init__(self) -> None:
        self._position: tuple[int, int] | None = None  # (epoch, batches already trained in it)

    def set(self, epoch: int, batches_done: int) -> None:
        self._position = (epoch, batches_done)

    def clear(self) -> None:
        self._position = None

    def take(self, epoch: int) -> int:
        """How many batches a pass over ``epoch`` starting now skips (none for another epoch); clears the position."""
        position, self._position = self._position, None
        return position[1] if position is not None and position[0] == epoch else 0


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Yield this rank's batches of example indices, grouped by length.

    Arguments are keyword-only on purpose: Lightning must not try to rebuild this sampler around its
    own ``DistributedSampler`` (it fails loudly instead); sharding across ranks happens here. ``resume``: a
    position shared with the data module, which restores it from a checkpoint (default: this sampler's own,
    set by ``resume_at``).
    """

    def __init__(
        self,
        *,
        lengths: Sequence[int] | np.ndarray,
        max_batch_size: int,
        shuffle: bool,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        pool_batches: int = 64,
        resume: ResumePosition | None = None,
    ) -> None:
        self.lengths = np.asarray(lengths)

        def refused(problem: str) -> BatchingError:
            return BatchingError(problem, shuffle=shuffle, batch_size=max_batch_size, processes=num_replicas)

        if max_batch_size < 1:
            raise refused(f"the batch size must be at least 1, got {max_batch_size}.")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        if len(self.lengths) < num_replicas:
            examples = f"{len(self.lengths)} example{'' if len(self.lengths) == 1 else 's'}"
            raise refused(
                f"{examples} cannot be shared across {num_replicas} processes (each needs at least one); use fewer "
                "devices or more data."
            )
        self.max_batch_size = max_batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.pool_size = max_batch_size * num_replicas * pool_batches
        self.epoch = 0
        self._resume = resume if resume is not None else ResumePosition()
        self.steps = math.ceil(len(self.lengths) / (num_replicas * max_batch_size))
        if self.steps * num_replicas > len(self.lengths):  # only possible with batches of one
            raise refused(
                f"{len(self.lengths)} examples in batches of {max_batch_size} cannot give {num_replicas} "
                "processes the same number of non-empty batches; use a batch size of at least 2."
            )

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch; changes the shuffle."""
        self.epoch = epoch

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Skip the first ``batches_done`` batches of ``epoch`` (once): they were trained before a restart.

        ``len()`` stays the full epoch, as Lightning counts the skipped batches as already seen.
        """
        self._resume.set(epoch, batches_done)

    @property
    def batch_size(self) -> int:
        """The largest batch; Lightning's DeepSpeed strategy reads it for its throughput logging."""
        return self.max_batch_size

    @property
    def sampler(self) -> LengthBucketBatchSampler:
        """Lightning calls ``set_epoch`` on ``batch_sampler.sampler``, never on the batch sampler itself."""
        return self

    def __len__(self) -> int:
        return self.steps

    def _ordered_indices(self, rng: np.random.Generator | None) -> np.ndarray:
        if rng is None:  # evaluation: one global sort gives the least padding
            return np.argsort(self.lengths, kind="stable")
        order = rng.permutation(len(self.lengths))
        pools = [order[start : start + self.pool_size] for start in range(0, len(order), self.pool_size)]
        return np.concatenate([pool[np.argsort(self.lengths[pool], kind="stable")] for pool in pools])

    def global_batches(self) -> list[list[np.ndarray]]:
        """All ranks' batches for this epoch, as steps: ``steps[k][r]`` is rank r's k-th batch."""
        rng = np.random.default_rng([self.seed, self.epoch]) if self.shuffle else None
        order = self._ordered_indices(rng)
        steps = [np.array_split(step, self.num_replicas) for step in np.array_split(order, self.steps)]
        if rng is not None:
            steps = [steps[k] for k in rng.permutation(self.steps)]
        return steps

    def __iter__(self) -> Iterator[list[int]]:
        # A generator: the epoch and the resume position are read at the first batch, not when iter() is called.
        skip = self._resume.take(self.epoch)
        for step in self.global_batches()[skip:]:
            yield step[self.rank].tolist()
