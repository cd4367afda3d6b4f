"""One vector per sequence from the encoder's token states (for the sequence-level heads)."""

from __future__ import annotations

from typing import Literal

import torch

Pooling = Literal["cls", "pooler", "mean"]


def pool(
    pooling: Pooling, hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooler_output: torch.Tensor | None
) -> torch.Tensor:
    """The [CLS] state, BERT's pooler output, or the mean of real tokens."""
    if pooling == "cls":
        return hidden_states[:, 0]
    if pooling == "pooler":
        if pooler_output is None:
            raise ValueError("pooling='pooler' needs an encoder with a pooler layer; use 'cls' or 'mean'.")
        return pooler_output
    mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
    return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
