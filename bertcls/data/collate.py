"""The dynamic-padding collate function: a batch padded to its longest example."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from bertcls.data.dataset import Example


@dataclass(frozen=True)
class DynamicPaddingCollator:
    """Pad a batch to its longest example (rounded up to ``pad_to_multiple_of``, e.g. 8 for tensor cores).

    ``input_ids`` (with ``pad_token_id``), ``token_type_ids`` (with 0) and the task's ``padded_columns``
    (e.g. token labels with -100) are padded; every other column is stacked as it is.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = 8
    padded_columns: dict[str, int] = field(default_factory=dict)

    def __call__(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        longest = max(len(example["input_ids"]) for example in examples)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        padding = {"input_ids": self.pad_token_id, "token_type_ids": 0, **self.padded_columns}
        batch: dict[str, torch.Tensor] = {}
        for name, value in padding.items():
            if name in examples[0]:
                batch[name] = _pad([example[name] for example in examples], longest, value)
        lengths = torch.tensor([len(example["input_ids"]) for example in examples])
        batch["attention_mask"] = (torch.arange(longest) < lengths[:, None]).long()
        for name in examples[0]:
            if name not in batch:
                batch[name] = torch.as_tensor(np.stack([np.asarray(example[name]) for example in examples]))
        return batch


def _pad(sequences: list[np.ndarray], length: int, value: int) -> torch.Tensor:
    padded = torch.full((len(sequences), length), value, dtype=torch.long)
    for position, sequence in enumerate(sequences):
        padded[position, : len(sequence)] = torch.from_numpy(sequence.astype(np.int64, copy=False))
    return padded
