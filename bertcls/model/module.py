"""The ``LightningModule``: a BERT-family encoder with the head of a task (see ``bertcls.tasks``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, Strategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from transformers import get_linear_schedule_with_warmup

from bertcls.callbacks.int8 import Int8Inference
from bertcls.deepspeed_strategy import refuse_drifting_accumulation
from bertcls.errors import InputError
from bertcls.inference.quantization import Quantization
from bertcls.lightning_internals import logs_this_step
from bertcls.model.bundled_tokenizer import TOKENIZER_CHECKPOINT_KEY, tokenizer_files
from bertcls.model.encoder import load_encoder, serializable_config
from bertcls.model.nonfinite import (
    MAX_SKIPPED_IN_A_ROW,
    NonFiniteAction,
    NonFiniteLossError,
    describe_non_finite,
    stop_message,
)
from bertcls.model.optimization import (
    adamw,
    clip_gradients,
    gradient_norm,
    parameter_groups,
    total_optimizer_steps,
)
from bertcls.model.pooling import Pooling
from bertcls.step_agreement import StepAgreement
from bertcls.tasks import HeadOptions, Task, TaskHead, TaskName, get_task


def refuse_unsupported_skip(nonfinite_loss: NonFiniteAction, strategy: Strategy, world_size: int) -> None:
    """``skip`` returns None from ``training_step``, which Lightning refuses at the first bad batch under DeepSpeed
    and in any run of several processes; FSDP is refused as well (not shown to work)."""
    if nonfinite_loss == "skip" and (isinstance(strategy, DeepSpeedStrategy | FSDPStrategy) or world_size > 1):
        raise InputError(
            f"model.nonfinite_loss: skip works only in a single-process run without DeepSpeed or FSDP, and this run "
            f"uses {type(strategy).__name__} with {world_size} process(es): Lightning cannot skip a batch's backward "
            "pass there. Use --model.nonfinite_loss stop (the default: the run stops naming the batch; fix the cause "
            "and resume with --ckpt_path last)."
        )


class BertClassifier(L.LightningModule):
    """Fine-tune a BERT-family encoder with a task head: single-label, pair, multi-label or token (NER).

    Args:
        model_name: hub name (``bert-base-uncased``), local folder, or ``pkg://package/folder``.
        task: taken from the data module at ``fit`` (``data.task``) and saved in checkpoints.
        label_names: label order; filled in from the data module at ``fit`` and saved in checkpoints.
        pooling: ``cls`` ([CLS] state), ``pooler`` (BERT's tanh pooler) or ``mean`` (mean of real tokens);
            not used by the token task.
        dropout: dropout before the classifier; defaults to the encoder's hidden dropout.
        class_weights: per-label loss weights in label order, or ``balanced`` (from the training labels); for
            multi-label these are the positive-class weights of the binary losses.
        label_smoothing: cross-entropy label smoothing (single-label, pair).
        threshold: multi-label decision threshold, for every label until tuning replaces it.
        tune_thresholds: multi-label: after each validation epoch, set each label's threshold to the one
            that maximises its F1 on the validation split (saved in the checkpoint, used by test and predict).
        learning_rate, weight_decay, adam_epsilon: AdamW settings (no decay on biases and LayerNorm).
        warmup_ratio: share of all optimizer steps spent warming up linearly, before linear decay to 0.
        layerwise_lr_decay: layer i of L trains at ``lr * decay ** (L + 1 - i)`` (1.0 turns it off).
        gradient_checkpointing: recompute the encoder layers' activations in the backward pass instead of
            keeping them: same loss and gradients, far less activation memory, about a third more compute.
        nonfinite_loss: a NaN or infinite training loss ``stop``s the run with the step and the batch's rows,
            or ``skip``s that batch (no backward, no optimizer step; counted in ``train/skipped_batches``; 10 in
            a row stop the run; single-process runs only, not DeepSpeed or FSDP). Not saved in checkpoints, so a resumed
            run can choose again.
        trust_remote_code: run the Python code that comes with a model whose config has an ``auto_map`` (an
            architecture transformers does not ship; read that code first); off, such a model is refused. Only the
            user turns it on: it is not saved in checkpoints, and the CLI keeps the command line's value over a
            checkpoint's hyperparameters (which Lightning otherwise applies over the command line's), so a
            checkpoint from elsewhere cannot run code by itself. A checkpoint of such a model keeps the ``auto_map``
            in its ``encoder_config`` and is rebuilt with the code of its ``model_name`` folder: every command that
            loads it needs the option (and that folder) again. In Python, pass ``trust_remote_code=False`` to
            ``BertClassifier.load_from_checkpoint`` to ignore what a file says.
        quantize: ``int8`` runs ``predict``, ``test`` and ``validate`` with the linear layers quantized to int8
            (CPU only; see ``bertcls.callbacks.int8``). Not saved in checkpoints: each command chooses.
        encoder_config: the encoder's architecture, saved automatically so a checkpoint rebuilds it.
    """

    def __init__(
        self,
        model_name: str = "bert-base-uncased",
        task: TaskName | None = None,
        label_names: list[str] | None = None,
        pooling: Pooling = "cls",
        dropout: float | None = None,
        class_weights: list[float] | Literal["balanced"] | None = None,
        label_smoothing: float = 0.0,
        threshold: float = 0.5,
        tune_thresholds: bool = True,
        learning_rate: float = 2e-5,
        weight_decay: float = 0.01,
        adam_epsilon: float = 1e-8,
        warmup_ratio: float = 0.1,
        layerwise_lr_decay: float = 1.0,
        gradient_checkpointing: bool = False,
        encoder_config: dict[str, Any] | None = None,
        nonfinite_loss: NonFiniteAction = "stop",
        trust_remote_code: bool = False,
        quantize: Quantization | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["nonfinite_loss", "trust_remote_code", "quantize"])
        self.nonfinite_loss = nonfinite_loss
        self.quantize = quantize
        self.skipped_batches = 0
        self.skipped_in_a_row = 0
        self._step_gradient_norm: torch.Tensor | None = None  # this step's, where logged (clipping reuses it)
        self.step_agreement = StepAgreement()  # callbacks add their flags (see bertcls.step_agreement)
        self.encoder = load_encoder(
            model_name,
            encoder_config,
            keep_pooler=pooling == "pooler",
            gradient_checkpointing=gradient_checkpointing,
            trust_remote_code=trust_remote_code,
        )
        self.hparams.encoder_config = serializable_config(self.encoder)
        self.task: Task | None = get_task(task) if task else None
        self.head: TaskHead | None = None
        if self.task is not None and label_names:
            self._build_head(label_names)

    # --- construction -----------------------------------------------------------------------
    def _build_head(self, label_names: list[str]) -> None:
        self.hparams.label_names = list(label_names)
        num_labels = len(label_names)
        dropout = self.hparams.dropout
        if dropout is None:
            dropout = getattr(self.encoder.config, "hidden_dropout_prob", 0.1)
        options = HeadOptions(
            dropout=dropout,
            pooling=self.hparams.pooling,
            loss_weights=self._initial_loss_weights(num_labels),
            label_smoothing=self.hparams.label_smoothing,
            threshold=self.hparams.threshold,
            tune_thresholds=self.hparams.tune_thresholds,
        )
        self.head = self.task.build_head(self.encoder.config.hidden_size, num_labels, options)
        self.val_evaluator = self.task.evaluator(list(label_names), prefix="val/", detailed=False)
        self.test_evaluator = self.task.evaluator(list(label_names), prefix="test/", detailed=True)

    def _initial_loss_weights(self, num_labels: int) -> torch.Tensor | None:
        """Loss weights in label order; ``balanced`` ones are filled in by ``setup("fit")`` or a checkpoint."""
        weights = self.hparams.class_weights
        if weights is None:
            return None
        if weights == "balanced":
            return torch.ones(num_labels)
        if len(weights) != num_labels:
            raise InputError(
                f"model.class_weights has {len(weights)} values but there are {num_labels} labels "
                f"{self.hparams.label_names}; give one weight per label, in that order."
            )
        return torch.tensor(weights, dtype=torch.float)

    def setup(self, stage: str) -> None:
        """Build the head from the data module's task and labels (fit), or check they match the checkpoint's."""
        if stage == "fit":
            refuse_unsupported_skip(self.nonfinite_loss, self.trainer.strategy, self.trainer.world_size)
            refuse_drifting_accumulation(self.trainer.strategy, self.trainer.accumulate_grad_batches)
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            if self.head is None:
                raise InputError("The model has no task or labels: give model.task, model.label_names and data.")
            return
        if self.task is None:
            self.task = datamodule.task
            self.hparams.task = datamodule.task.name
        elif self.task.name != datamodule.task.name:
            raise InputError(
                f"The data is for task '{datamodule.task.name}' but the model was trained for '{self.task.name}'. "
                "Set data.task to the model's task (the CLI does this from a checkpoint)."
            )
        data_labels = datamodule.label_names
        if self.head is None:
            self._build_head(data_labels)
        elif list(data_labels) != list(self.hparams.label_names):
            raise InputError(
                f"The data's labels {data_labels} differ from the model's {self.hparams.label_names}. "
                "Set model.label_names to the model's labels (the CLI does this from a checkpoint)."
            )
        if stage == "fit" and self.hparams.class_weights == "balanced":
            self.head.loss_weights.copy_(self.task.balanced_weights(*datamodule.label_statistics()))

    def configure_callbacks(self) -> list[L.Callback]:
        return [Int8Inference()] if self.quantize == "int8" else []

    # --- forward and steps ------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits for a collated batch (``input_ids``, ``attention_mask``, and ``token_type_ids`` for pairs)."""
        outputs = self.encoder(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch.get("token_type_ids"),
        )
        return self.head(outputs.last_hidden_state, batch["attention_mask"], getattr(outputs, "pooler_output", None))

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Seed dropout from (seed, epoch, batch, rank), so that a resumed run draws the masks it would have.

        Nothing else in training draws random numbers, so with the sampler's resume position this makes a
        run resumed from any checkpoint continue exactly as the uninterrupted run (on the same hardware).
        """
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        entropy = [seed, self.current_epoch, batch_idx, self.global_rank]
        torch.manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        loss = self.head.loss(self(batch), batch["labels"])
        # The step's one collective: the loss's finiteness, with the flags of callbacks (Preemption's signals).
        if self.step_agreement.agree(self.trainer.strategy, nonfinite_loss=~torch.isfinite(loss.detach()))[
            "nonfinite_loss"
        ]:
            return self._skip_or_stop(loss, batch, batch_idx)
        self.skipped_in_a_row = 0
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

    def _skip_or_stop(self, loss: torch.Tensor, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Returning None skips the backward pass and the optimizer step (on every rank: they agreed)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        source = datamodule.sources["train"].describe() if datamodule is not None else "the training data"
        where = describe_non_finite(loss, batch["rows"], self.global_step, self.current_epoch, batch_idx, source)
        if self.nonfinite_loss == "stop" or self.skipped_in_a_row + 1 >= MAX_SKIPPED_IN_A_ROW:
            raise NonFiniteLossError(stop_message(where, self.skipped_in_a_row))
        self.skipped_batches += 1
        self.skipped_in_a_row += 1
        rank_zero_warn(f"{where} Skipped ({self.skipped_batches} so far).")
        self.log("train/skipped_batches", float(self.skipped_batches), on_step=True, on_epoch=False)
        return None

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Only on the steps that reach the loggers; clipping then reuses the norm instead of taking it again.
        self._step_gradient_norm = gradient_norm(self, self.trainer.strategy) if logs_this_step(self.trainer) else None
        if self._step_gradient_norm is not None:
            self.log("train/grad_norm", self._step_gradient_norm, on_step=True, on_epoch=False)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm=None
    ) -> None:
        norm = self._step_gradient_norm
        if not clip_gradients(self, self.trainer.strategy, gradient_clip_val, gradient_clip_algorithm, norm):
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_train_batch_end(self, outputs: Any, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # DeepSpeed keeps the gradients itself; its engine reports the norm of its last optimizer step. Read only
        # when logged: under ZeRO it can be a device tensor, and reading it as a number waits for the device.
        engine = getattr(self.trainer.strategy, "deepspeed_engine", None)
        if engine is None or not logs_this_step(self.trainer):
            return
        norm = engine.get_global_grad_norm()
        if norm is not None:
            self.log("train/grad_norm", torch.as_tensor(norm, dtype=torch.float32), on_step=True, on_epoch=False)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch)
        self.log("val/loss", self.head.loss(logits, batch["labels"]), batch_size=len(logits), sync_dist=True)
        self.val_evaluator.update(logits, batch, self.head)

    def on_validation_epoch_end(self) -> None:
        # compute() gathers the states of every rank; each example was seen exactly once (see the sampler).
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self.val_evaluator.adapt_head(self.head)
        values = self.val_evaluator.compute(self.head)
        self.val_evaluator.reset()
        for name, value in values.items():  # the progress bar shows the checkpoint's metric only
            self.log(name, value, prog_bar=name == self.task.monitor, sync_dist=True)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.test_evaluator.update(self(batch), batch, self.head)

    def on_test_epoch_end(self) -> None:
        values = self.test_evaluator.compute(self.head)
        self.log_dict(values, sync_dist=True)
        # On every rank: under DDP ``trainer.log_dir`` is a broadcast (rank 0 alone would wait on it forever).
        output_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        if self.trainer.is_global_zero:
            from bertcls.reporting.publish import publish_report  # matplotlib and the loggers: only when testing

            report = self.test_evaluator.report()
            if report is not None:
                files = publish_report(report, output_dir, self.trainer.loggers, self.global_step)
                written = ", ".join(path.name for path in files)
                rank_zero_info(f"\n{report.title}\n{report.text}\nReport files in {output_dir}: {written}")
        self.test_evaluator.reset()

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return self.head.predict(self(batch), batch)

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
        optimizer = adamw(groups, hp.learning_rate, hp.adam_epsilon, self.trainer.strategy)
        total_steps = total_optimizer_steps(self.trainer)  # accumulate_grad_batches and devices included
        scheduler = get_linear_schedule_with_warmup(optimizer, int(hp.warmup_ratio * total_steps), total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
