"""The plain PyTorch fine-tuning loop of the tutorials: the baseline every fine-tuning script starts from.

A ``Dataset`` that tokenizes each text when it is fetched, with the slow (pure-Python) ``BertTokenizer``, padded to
a fixed 128 word pieces; a shuffled ``DataLoader``; ``AutoModelForSequenceClassification``; AdamW with a linear
schedule; fp32. The rows, label ids, weights and hyperparameters are those of the benchmark config (read by
``hf_trainer.load_recipe``), and its metrics are scored by ``hf_trainer.score``. Runs inside a child process of
``suite.py``; sentence heads only (single-label and pair).
"""

from __future__ import annotations

from typing import Any

from harness import SEED, BatchMeter, Job, TrainClock, describe_optimizer, peak_device_mb, rows_digest
from hf_trainer import load_recipe, require, score

FIXED_LENGTH = 128


def run_tutorial_loop(job: Job) -> dict[str, Any]:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset
    from transformers import AutoModelForSequenceClassification, BertTokenizer, get_linear_schedule_with_warmup

    from bertcls.paths import resolve_location

    recipe = load_recipe(job)
    require(recipe.head in ("single_label", "pair"), f"the tutorial loop is for sentence heads, not {recipe.head}")
    require(not recipe.bf16, "bf16 (the tutorial loop is fp32)")
    model_path = resolve_location(recipe.model["model_name"])
    tokenizer = BertTokenizer.from_pretrained(model_path)  # the slow, pure-Python WordPiece tokenizer

    class Texts(Dataset):
        def __init__(self, split: Any) -> None:
            self.texts, self.pairs = split["text"], split["text_pair"] if "text_pair" in split.column_names else None
            self.labels = split["labels"]

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
            pair = self.pairs[index] if self.pairs else None
            encoded = tokenizer(
                self.texts[index], pair, truncation=True, max_length=FIXED_LENGTH, padding="max_length",
                return_tensors="pt",
            )  # fmt: skip
            return {name: values[0] for name, values in encoded.items()} | {"labels": torch.tensor(self.labels[index])}

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(SEED)
    names = recipe.names
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
    ).to(device)
    batch_size = job.batch_size or recipe.data.get("batch_size", 32)
    eval_batch_size = recipe.data.get("eval_batch_size") or 2 * batch_size
    train_loader = DataLoader(Texts(recipe.train), batch_size=batch_size, shuffle=True)
    eval_loader = DataLoader(Texts(recipe.evaluation), batch_size=eval_batch_size)
    epochs = job.epochs or recipe.trainer["max_epochs"]
    steps_per_epoch = min(job.max_train_batches or len(train_loader), len(train_loader))
    total_steps = epochs * steps_per_epoch
    hp = recipe.model
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias") and "LayerNorm" not in n]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": hp.get("weight_decay", 0.01)}, {"params": no_decay, "weight_decay": 0.0}],
        lr=hp["learning_rate"],
        eps=hp.get("adam_epsilon", 1e-8),
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(hp.get("warmup_ratio", 0.1) * total_steps), total_steps)
    clip = recipe.trainer.get("gradient_clip_val")

    def evaluate() -> dict[str, float]:
        model.eval()
        logits = []
        with torch.no_grad():
            for batch in eval_loader:
                batch = {name: values.to(device) for name, values in batch.items()}
                logits.append(model(**batch).logits.float().cpu().numpy())
        model.train()
        return score(recipe.head, np.concatenate(logits), np.asarray(recipe.gold["labels"]), recipe.gold, names)

    meter, clock, curve, step = BatchMeter(), TrainClock(), [], 0
    model.train()
    for _ in range(epochs):
        clock.restart()
        for number, batch in enumerate(train_loader):
            if number == steps_per_epoch:
                break
            meter.add(batch["attention_mask"])
            batch = {name: values.to(device) for name, values in batch.items()}
            loss = model(**batch).loss
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            clock.step_done()
            if job.eval_every and step % job.eval_every == 0:
                curve.append({"step": step, "seconds": clock.seconds, "metrics": evaluate()})
                clock.restart()
    if not curve or curve[-1]["step"] != step:  # the final model is a point of the curve too
        curve.append({"step": step, "seconds": clock.seconds, "metrics": evaluate()})
    metrics = curve[-1]["metrics"]
    return meter.figures() | {
        "steps": step,
        "train_seconds": clock.seconds,
        "train_rows": rows_digest(recipe.train_rows),
        "eval_rows": rows_digest(recipe.eval_rows),
        "train_count": len(set(recipe.train_rows)),
        "eval_count": len(set(recipe.eval_rows)),
        "optimizer": describe_optimizer(optimizer),
        "torch_threads": torch.get_num_threads(),
        "peak_device_mb": peak_device_mb(),
        "curve": curve,
        "metrics": metrics,
    }
