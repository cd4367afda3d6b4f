"""Task heads: pooling of the encoder's token states, then a classifier and its loss."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Pooling = Literal["cls", "pooler", "mean"]


def pool(
    pooling: Pooling, hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooler_output: torch.Tensor | None
) -> torch.Tensor:
    """One vector per sequence: the [CLS] state, BERT's pooler output, or the mean of real tokens."""
    if pooling == "cls":
        return hidden_states[:, 0]
    if pooling == "pooler":
        if pooler_output is None:
            raise ValueError("pooling='pooler' needs an encoder with a pooler layer; use 'cls' or 'mean'.")
        return pooler_output
    mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
    return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def balanced_class_weights(label_counts: torch.Tensor) -> torch.Tensor:
    """Inverse-frequency weights, ``total / (num_labels * count)`` (scikit-learn's "balanced")."""
    counts = label_counts.float().clamp(min=1)
    return counts.sum() / (len(counts) * counts)


class SingleLabelHead(nn.Module):
    """One label per text: dropout, linear, cross-entropy (optional class weights, label smoothing)."""

    def __init__(
        self,
        hidden_size: int,
        num_labels: int,
        dropout: float,
        pooling: Pooling,
        class_weights: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)
        # Persistent: weights computed from the training data ("balanced") travel with the checkpoint.
        self.register_buffer("class_weights", class_weights)
        self.label_smoothing = label_smoothing

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooler_output: torch.Tensor | None
    ) -> torch.Tensor:
        pooled = pool(self.pooling, hidden_states, attention_mask, pooler_output)
        return self.classifier(self.dropout(pooled))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(
            logits.float(), labels, weight=self.class_weights, label_smoothing=self.label_smoothing
        )
