"""The ``LightningModule``: a BERT-family encoder with a classification head."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics.classification import MulticlassConfusionMatrix
from transformers import get_linear_schedule_with_warmup

from bertcls.model.bundled_tokenizer import TOKENIZER_CHECKPOINT_KEY, tokenizer_files
from bertcls.model.encoder import load_encoder, serializable_config
from bertcls.model.heads import Pooling, SingleLabelHead, balanced_class_weights
from bertcls.model.metrics import single_label_metrics
from bertcls.model.optimization import parameter_groups
from bertcls.reporting import classification_report, save_confusion_matrix

log = logging.getLogger(__name__)


class BertClassifier(L.LightningModule):
    """Fine-tune a BERT-family encoder for single-label text classification.

    Args:
        model_name: hub name (``bert-base-uncased``), local folder, or ``pkg://package/folder``.
        label_names: label order; filled in from the data module at ``fit`` and saved in checkpoints.
        pooling: ``cls`` ([CLS] state), ``pooler`` (BERT's tanh pooler) or ``mean`` (mean of real tokens).
        dropout: dropout before the classifier; defaults to the encoder's hidden dropout.
        class_weights: per-class loss weights in label order, or ``balanced`` (inverse frequency).
        label_smoothing: cross-entropy label smoothing.
        learning_rate, weight_decay, adam_epsilon: AdamW settings (no decay on biases and LayerNorm).
        warmup_ratio: share of all optimizer steps spent warming up linearly, before linear decay to 0.
        layerwise_lr_decay: layer i of L trains at ``lr * decay ** (L + 1 - i)`` (1.0 turns it off).
        encoder_config: the encoder's architecture, saved automatically so a checkpoint rebuilds it.
    """

    def __init__(
        self,
        model_name: str = "bert-base-uncased",
        label_names: list[str] | None = None,
        pooling: Pooling = "cls",
        dropout: float | None = None,
        class_weights: list[float] | Literal["balanced"] | None = None,
        label_smoothing: float = 0.0,
        learning_rate: float = 2e-5,
        weight_decay: float = 0.01,
        adam_epsilon: float = 1e-8,
        warmup_ratio: float = 0.1,
        layerwise_lr_decay: float = 1.0,
        encoder_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = load_encoder(model_name, encoder_config, keep_pooler=pooling == "pooler")
        self.hparams.encoder_config = serializable_config(self.encoder)
        self.head: SingleLabelHead | None = None
        if label_names:
            self._build_head(label_names)

    # --- construction -----------------------------------------------------------------------
    def _build_head(self, label_names: list[str]) -> None:
        self.hparams.label_names = list(label_names)
        num_labels = len(label_names)
        dropout = self.hparams.dropout
        if dropout is None:
            dropout = getattr(self.encoder.config, "hidden_dropout_prob", 0.1)
        self.head = SingleLabelHead(
            hidden_size=self.encoder.config.hidden_size,
            num_labels=num_labels,
            dropout=dropout,
            pooling=self.hparams.pooling,
            class_weights=self._initial_class_weights(num_labels),
            label_smoothing=self.hparams.label_smoothing,
        )
        self.val_metrics = single_label_metrics(num_labels, prefix="val/")
        self.test_metrics = single_label_metrics(num_labels, prefix="test/", label_names=label_names)
        self.test_confusion = MulticlassConfusionMatrix(num_classes=num_labels)

    def _initial_class_weights(self, num_labels: int) -> torch.Tensor | None:
        """Loss weights in label order; ``balanced`` ones are filled in by ``setup("fit")`` or a checkpoint."""
        weights = self.hparams.class_weights
        if weights is None:
            return None
        if weights == "balanced":
            return torch.ones(num_labels)
        if len(weights) != num_labels:
            raise ValueError(
                f"model.class_weights has {len(weights)} values but there are {num_labels} labels "
                f"{self.hparams.label_names}; give one weight per label, in that order."
            )
        return torch.tensor(weights, dtype=torch.float)

    def setup(self, stage: str) -> None:
        """Build the head from the data module's labels (fit), or check they match the checkpoint's."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            if self.head is None:
                raise ValueError("The model has no labels: give model.label_names or a data module.")
            return
        data_labels = datamodule.label_names
        if self.head is None:
            self._build_head(data_labels)
        elif list(data_labels) != list(self.hparams.label_names):
            raise ValueError(
                f"The data's labels {data_labels} differ from the model's {self.hparams.label_names}. "
                "Set model.label_names to the model's labels (the CLI does this from a checkpoint)."
            )
        if stage == "fit" and self.hparams.class_weights == "balanced":
            self.head.class_weights.copy_(balanced_class_weights(torch.as_tensor(datamodule.label_counts)))

    # --- forward and steps ------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return self.head(outputs.last_hidden_state, attention_mask, getattr(outputs, "pooler_output", None))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["input_ids"], batch["attention_mask"])
        loss = self.head.loss(logits, batch["labels"])
        mask = batch["attention_mask"]
        self.log("train/loss", loss, prog_bar=True, batch_size=len(mask))
        # Real / padded tokens over the epoch: the mean of per-batch ratios weighted by each batch's padded size.
        self.log(
            "train/padding_efficiency",
            mask.sum() / mask.numel(),
            on_step=False,
            on_epoch=True,
            batch_size=mask.numel(),
            sync_dist=True,
        )
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch["input_ids"], batch["attention_mask"])
        self.log("val/loss", self.head.loss(logits, batch["labels"]), batch_size=len(logits), sync_dist=True)
        self.val_metrics.update(logits, batch["labels"])
        self.log_dict(self.val_metrics, batch_size=len(logits), prog_bar=True)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch["input_ids"], batch["attention_mask"])
        self.test_metrics.update(logits, batch["labels"])
        self.test_confusion.update(logits, batch["labels"])

    def on_test_epoch_end(self) -> None:
        # compute() gathers the states of every rank; each example was seen exactly once (see the sampler).
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()
        confusion = self.test_confusion.compute().cpu().numpy()
        self.test_confusion.reset()
        if not self.trainer.is_global_zero:
            return
        label_names = self.hparams.label_names
        rank_zero_info("\nTest classification report\n" + classification_report(confusion, label_names))
        output_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        image = save_confusion_matrix(confusion, label_names, output_dir / "confusion_matrix_test.png")
        rank_zero_info(f"Confusion matrix saved to {image}")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        probabilities = self(batch["input_ids"], batch["attention_mask"]).float().softmax(dim=-1)
        return {"rows": batch["rows"], "probabilities": probabilities}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "tokenizer"):
            checkpoint[TOKENIZER_CHECKPOINT_KEY] = tokenizer_files(datamodule.tokenizer)

    # --- optimization -----------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        groups = parameter_groups(
            self, self.encoder.config.num_hidden_layers, hp.learning_rate, hp.weight_decay, hp.layerwise_lr_decay
        )
        # The fused kernel (CPU and CUDA) steps all parameters at once: about 7x faster than foreach on a CPU.
        optimizer = torch.optim.AdamW(groups, lr=hp.learning_rate, eps=hp.adam_epsilon, fused=True)
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(hp.warmup_ratio * total_steps), total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
