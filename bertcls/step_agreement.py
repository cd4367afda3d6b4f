"""What every rank must decide alike during training, agreed in the one all-reduce each training step makes.

The finite-loss check needs an all-reduce before every backward pass (all ranks must stop, or skip, together).
Flags that other parts raise at any moment on one rank (a scheduler's signal, Ctrl-C) ride along in the same
tensor instead of costing collectives and host synchronisations of their own: one wait per micro-batch in all.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class StepAgreement:
    """Named local flags, agreed across ranks (a flag raised on any rank counts) in one all-reduce.

    ``sources`` are read when ``agree`` runs; ``agreed`` holds the result of the latest agreement, the same on
    every rank, so decisions taken from it later in the step (at the step boundary) are taken alike.
    """

    def __init__(self) -> None:
        self.sources: dict[str, Callable[[], bool]] = {}
        self.agreed: dict[str, bool] = {}

    def add_source(self, name: str, raised: Callable[[], bool]) -> None:
        self.sources[name] = raised

    def agree(self, strategy: object, **values: torch.Tensor) -> dict[str, bool]:
        """Agree on ``values`` (device tensors, true where raised) and on every source; one all-reduce, one wait."""
        device = next(iter(values.values())).device if values else strategy.root_device
        local = [value.detach().reshape(-1).any().to(torch.float32) for value in values.values()]
        local += [torch.tensor(float(raised()), device=device) for raised in self.sources.values()]
        if not local:
            self.agreed = {}
            return self.agreed
        totals = strategy.reduce(torch.stack(local).to(device), reduce_op="sum").tolist()
        self.agreed = {name: total > 0 for name, total in zip([*values, *self.sources], totals, strict=True)}
        return self.agreed
