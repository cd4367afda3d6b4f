"""The Hugging Face example-script equivalent of each bertcls head, on the same data with the same settings.

``transformers.Trainer`` with ``AutoModelForSequenceClassification`` (``single_label``, ``pair``; ``multi_label``
with ``problem_type="multi_label_classification"``) or ``AutoModelForTokenClassification`` (``token``, labels on
each word's first word piece as run_ner.py aligns them), dynamic padding with ``DataCollatorWithPadding`` /
``DataCollatorForTokenClassification``, and the hyperparameters of the bertcls config. The data is read
the way bertcls reads it (same rows, same label ids), but by code of its own. The evaluation split is
scored here with the same definitions as bertcls' metrics. Runs inside a child process of ``heads.py``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from harness import (
    BENCHMARKS,
    SEED,
    BatchMeter,
    Job,
    TrainClock,
    compose,
    describe_optimizer,
    evaluation_split,
    peak_device_mb,
    rows_digest,
)

IGNORED = -100  # the label of word pieces that are not in the loss (run_ner's label_pad_token_id)


# --- reading the data (as bertcls reads it: same rows, same label order) ------------------------------------
def read_table(path: str, data: dict[str, Any]) -> Any:
    """A CSV or TSV file as a DataFrame whose index is the source row; TSV fields are literal (GLUE)."""
    import pandas as pd

    from bertcls.paths import resolve_location

    resolved = resolve_location(path)
    options: dict[str, Any] = {"encoding": "utf-8-sig", "keep_default_na": False, "na_values": [""]}
    if Path(resolved).suffix in (".tsv", ".txt"):
        options |= {"sep": "\t", "quoting": csv.QUOTE_NONE}
    if data.get("column_names"):
        options |= {"header": None, "names": data["column_names"]}
    frame = pd.read_csv(resolved, **options)
    for column, accepted in (data.get("where") or {}).items():
        frame = frame[frame[column].isin(accepted if isinstance(accepted, list) else [accepted])]
    return frame


def read_conll(path: str) -> list[tuple[list[str], list[str]]]:
    """(words, tags) per sentence: the first and last column of each line; blank lines and -DOCSTART- end one."""
    sentences, words, tags = [], [], []
    for line in [*Path(path).read_text(encoding="utf-8").splitlines(), ""]:
        columns = line.split()
        if not columns or columns[0] == "-DOCSTART-":
            if words:
                sentences.append((words, tags))
                words, tags = [], []
            continue
        words.append(columns[0])
        tags.append(columns[-1])
    return sentences


def label_order(labels: list[str]) -> list[str]:
    """bertcls' label order: numeric labels sorted as numbers, others as text."""
    unique = sorted(set(labels))
    return sorted(unique, key=int) if all(label.lstrip("-").isdigit() for label in unique) else unique


def as_strings(values: Any) -> list[str]:
    """A label column as strings; integral floats (a column with gaps) as integers."""
    if values.dtype.kind == "f" and (values == values.round()).all():
        values = values.astype("int64")
    return values.astype(str).tolist()


def read_examples(head: str, path: str, data: dict[str, Any], names: list[str] | None) -> tuple[dict, list[str]]:
    """The columns of one split (``row``, the inputs and ``labels``) and the label names (given, or the training
    split's)."""
    if head == "token":
        sentences = read_conll(path)
        tags = [sentence_tags for _, sentence_tags in sentences]
        names = names or sorted({tag for sentence in tags for tag in sentence})
        ids = {name: index for index, name in enumerate(names)}
        columns = {
            "row": list(range(len(sentences))),
            "words": [words for words, _ in sentences],
            "tags": tags,
            "labels": [[ids[tag] for tag in sentence] for sentence in tags],
        }
        return columns, names
    frame = read_table(path, data)
    columns = {"row": frame.index.tolist(), "text": frame[data.get("text_column", "text")].astype(str).tolist()}
    if data.get("text_pair_column"):
        columns["text_pair"] = frame[data["text_pair_column"]].astype(str).tolist()
    labels = frame[data.get("label_column", "label")]
    if head == "multi_label":  # GoEmotions: "2,27", positions in the label names file
        names = names or read_label_names(data)
        multi_hot = np.zeros((len(frame), len(names)), dtype=np.float32)
        for index, cell in enumerate(labels.astype(str)):
            for label in cell.split(data.get("label_delimiter", ",")):
                if label.strip():
                    multi_hot[index, int(label)] = 1.0
        columns["labels"] = multi_hot.tolist()
        return columns, names
    strings = as_strings(labels)
    names = names or label_order(strings)
    ids = {name: index for index, name in enumerate(names)}
    columns["labels"] = [ids[label] for label in strings]
    return columns, names


def read_label_names(data: dict[str, Any]) -> list[str]:
    lines = Path(data["label_names_file"]).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


# --- tokenization ------------------------------------------------------------------------------------
def tokenize_texts(tokenizer: Any, max_length: int) -> Any:
    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(batch["text"], batch.get("text_pair"), truncation=True, max_length=max_length)

    return tokenize


def tokenize_words(tokenizer: Any, max_length: int) -> Any:
    """run_ner.py's tokenize_and_align_labels: a word's tag on its first word piece, -100 on the others and on
    the special tokens (``label_all_tokens=False``); sentences longer than ``max_length`` are truncated."""

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(batch["words"], is_split_into_words=True, truncation=True, max_length=max_length)
        aligned = []
        for index, tags in enumerate(batch["labels"]):
            previous, labels = None, []
            for word in encoded.word_ids(index):
                labels.append(tags[word] if word is not None and word != previous else IGNORED)
                previous = word
            aligned.append(labels)
        encoded["labels"] = aligned
        return encoded

    return tokenize


# --- scoring: the definitions of bertcls' metrics --------------------------------------------------------
def f1(true_positives: Any, false_positives: Any, false_negatives: Any) -> np.ndarray:
    """2 TP / (2 TP + FP + FN), 0 where nothing is predicted or present (scikit-learn's zero_division=0)."""
    numerator = 2.0 * np.asarray(true_positives, dtype=float)
    denominator = numerator + false_positives + false_negatives
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def score(head: str, logits: np.ndarray, label_ids: np.ndarray, gold: dict[str, list], names: list[str]) -> dict:
    """The metrics of the evaluation split's logits, under bertcls' metric names (without ``test/``)."""
    if head in ("single_label", "pair"):
        predicted, labels = logits.argmax(axis=-1), np.asarray(gold["labels"])
        metrics = {"accuracy": float((predicted == labels).mean())}
        if len(names) == 2:  # the F1 of the second label ("1" for MRPC), as GLUE reports it
            positive, truth = predicted == 1, labels == 1
            metrics["f1_positive"] = float(
                f1((positive & truth).sum(), (positive & ~truth).sum(), (~positive & truth).sum())
            )
        return metrics
    if head == "multi_label":
        import torch
        from torchmetrics.functional.classification import multilabel_average_precision

        scores, truth = torch.from_numpy(logits).float().sigmoid().numpy(), np.asarray(gold["labels"]) > 0.5
        predicted = scores >= 0.5
        counts = ((predicted & truth).sum(0), (predicted & ~truth).sum(0), (~predicted & truth).sum(0))
        present = truth.any(axis=0)  # average precision is undefined for labels without positives
        mean_ap = multilabel_average_precision(
            torch.from_numpy(scores[:, present]), torch.from_numpy(truth[:, present]).long(),
            num_labels=int(present.sum()), average="macro",
        )  # fmt: skip
        return {
            "macro_f1@0.5": float(f1(*counts).mean()),
            "micro_f1@0.5": float(f1(*(count.sum() for count in counts))),
            "mAP": float(mean_ap),
        }
    # token: each sentence's predicted tags at its words' first pieces; words cut by truncation count as "O",
    # so that both systems are scored against the same complete gold sentences.
    from seqeval.metrics.sequence_labeling import precision_recall_fscore_support

    predicted_tags = []
    for sentence_logits, sentence_labels, tags in zip(logits, label_ids, gold["tags"], strict=True):
        kept = sentence_logits[sentence_labels != IGNORED].argmax(axis=-1)
        predicted_tags.append([names[tag] for tag in kept] + ["O"] * (len(tags) - len(kept)))
    precision, recall, entity_f1, _ = precision_recall_fscore_support(
        gold["tags"], predicted_tags, average="micro", zero_division=0
    )
    return {"entity_f1": float(entity_f1), "entity_precision": float(precision), "entity_recall": float(recall)}


# --- the recipe: a benchmark config's settings and splits, as bertcls reads them ---------------------------
@dataclass
class Recipe:
    head: str
    model: dict[str, Any]  # the config's sections, with the job's overrides
    data: dict[str, Any]
    trainer: dict[str, Any]
    train: Any  # datasets.Dataset: row, the inputs (text, text_pair or words, tags) and labels
    evaluation: Any
    names: list[str]  # the label order
    gold: dict[str, list]  # the evaluation split's labels (and token tags), for ``score``
    bf16: bool  # the job's precision is bf16-mixed

    @property
    def train_rows(self) -> list[int]:
        return self.train["row"]

    @property
    def eval_rows(self) -> list[int]:
        return self.evaluation["row"]


def load_recipe(job: Job) -> Recipe:
    """The job's benchmark config (model, precision, max_length and data files as the job overrides them) and its
    splits: the evaluation split is the test file, the validation file, or bertcls' seeded hold-out of the
    training rows."""
    import datasets

    bench = BENCHMARKS[job.benchmark]
    head, files = bench.head, job.data_files
    sections = compose(bench.config)
    model_cfg, data, trainer_cfg = sections["model"], sections["data"], sections["trainer"]
    model_cfg = model_cfg | ({"model_name": job.model_name} if job.model_name else {})
    data = data | files  # the files as the parent resolved them (absolute, or cut to --max-eval-rows)
    data = data | ({"max_length": job.max_length} if job.max_length else {})
    precision = job.precision or trainer_cfg.get("precision", "32-true")
    require(data.get("task", "single_label") == head, f"data.task is {data.get('task')}, not {head}")
    require(precision in ("32-true", "bf16-mixed"), f"precision {precision}")
    require(trainer_cfg.get("accumulate_grad_batches", 1) == 1, "gradient accumulation")
    require(head != "multi_label" or data.get("labels_are_indices"), "multi-label names instead of label ids")
    require(head != "multi_label" or not data.get("label_columns"), "multi-label 0/1 columns")

    train_columns, names = read_examples(head, files["train_file"], data, None)
    train = datasets.Dataset.from_dict(train_columns)
    split = evaluation_split(data)
    if split == "test" or "validation_file" in files:
        eval_columns, _ = read_examples(head, files[f"{split}_file"], data, names)
        evaluation = datasets.Dataset.from_dict(eval_columns)
    else:  # one example per row: exactly bertcls' split of the rows
        parts = train.train_test_split(test_size=data.get("validation_fraction", 0.1), seed=data.get("split_seed", 42))
        train, evaluation = parts["train"], parts["test"]
    gold = {"labels": evaluation["labels"]} | ({"tags": evaluation["tags"]} if head == "token" else {})
    return Recipe(head, model_cfg, data, trainer_cfg, train, evaluation, names, gold, precision == "bf16-mixed")


# --- the run -------------------------------------------------------------------------------------------
def require(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"bench: the Trainer recipe does not cover this config: {message}")


def run_hf_trainer(job: Job, group_by_length: bool = False) -> dict[str, Any]:
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    from bertcls.paths import resolve_location

    recipe = load_recipe(job)
    head, model_cfg, data, trainer_cfg = recipe.head, recipe.model, recipe.data, recipe.trainer
    require(model_cfg.get("layerwise_lr_decay", 1.0) == 1.0, "layer-wise learning-rate decay")
    require(not model_cfg.get("class_weights") and not model_cfg.get("label_smoothing"), "loss weighting")
    require(head != "token" or not data.get("label_all_subtokens"), "label_all_subtokens")
    train, evaluation, names = recipe.train, recipe.evaluation, recipe.names

    model_path = resolve_location(model_cfg["model_name"])
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    max_length = data.get("max_length", 128)
    tokenize = (tokenize_words if head == "token" else tokenize_texts)(tokenizer, max_length)
    model_columns = ("input_ids", "token_type_ids", "attention_mask", "labels")
    train, evaluation = (part.map(tokenize, batched=True) for part in (train, evaluation))
    train, evaluation = (
        part.select_columns([name for name in model_columns if name in part.column_names])
        for part in (train, evaluation)
    )

    set_seed(SEED)
    labels = {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
    }
    if head == "token":
        model = AutoModelForTokenClassification.from_pretrained(model_path, **labels)
        pad = DataCollatorForTokenClassification(tokenizer)
    else:
        problem = "multi_label_classification" if head == "multi_label" else "single_label_classification"
        model = AutoModelForSequenceClassification.from_pretrained(model_path, problem_type=problem, **labels)
        pad = DataCollatorWithPadding(tokenizer)

    meter = BatchMeter()
    clock = TrainClock()
    curve: list[dict[str, Any]] = []

    def collate(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad(features)
        meter.add(batch["attention_mask"])
        return batch

    class Measure(TrainerCallback):
        def on_epoch_begin(self, *_: Any, **__: Any) -> None:
            clock.restart()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            clock.step_done()

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float], **_: Any) -> None:
            scores = {name.removeprefix("eval_"): value for name, value in metrics.items()}
            curve.append({"step": state.global_step, "seconds": clock.seconds, "metrics": scores})
            clock.restart()

    class MeasuredTrainer(Trainer):
        """Counts the training batches only (evaluation collates with the same function), and evaluates in input
        order: transformers 5 applies ``group_by_length`` to evaluation and ``predict`` too, whose outputs then
        come in another order than the data set's (scored against it, accuracy falls to chance)."""

        def _get_eval_sampler(self, eval_dataset: Any) -> torch.utils.data.Sampler:
            return torch.utils.data.SequentialSampler(eval_dataset)

        def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
            meter.paused = True
            try:
                return super().evaluate(*args, **kwargs)
            finally:
                meter.paused = False

    # The schedule's length as Lightning counts it (limit_train_batches caps each epoch) and bertcls' warm-up.
    batch_size = job.batch_size or data.get("batch_size", 32)
    epochs = job.epochs or trainer_cfg["max_epochs"]
    batches_per_epoch = math.ceil(len(train) / batch_size)
    limited = 0 < job.max_train_batches < batches_per_epoch
    steps_per_epoch = job.max_train_batches if limited else batches_per_epoch
    total_steps = epochs * steps_per_epoch
    training_args = TrainingArguments(
        output_dir=str(Path(job.workdir) / "hf-trainer"),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=data.get("eval_batch_size") or 2 * batch_size,
        num_train_epochs=epochs,
        max_steps=total_steps if limited else -1,  # one pass of epochs x N steps
        learning_rate=model_cfg["learning_rate"],
        weight_decay=model_cfg.get("weight_decay", 0.01),
        adam_epsilon=model_cfg.get("adam_epsilon", 1e-8),
        optim="adamw_torch_fused",
        warmup_steps=int(model_cfg.get("warmup_ratio", 0.1) * total_steps),  # bertcls rounds down; HF would round up
        lr_scheduler_type="linear",
        max_grad_norm=trainer_cfg.get("gradient_clip_val") or 0.0,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        seed=SEED,
        use_cpu=not torch.cuda.is_available(),
        bf16=recipe.bf16,
        eval_strategy="steps" if job.eval_every else "no",
        eval_steps=job.eval_every or None,
        save_strategy="no",
        logging_steps=trainer_cfg.get("log_every_n_steps", 50),
        report_to="none",
    )
    trainer = MeasuredTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=collate,
        processing_class=tokenizer,
        compute_metrics=lambda output: score(head, output.predictions, output.label_ids, recipe.gold, names),
        callbacks=[Measure()],
    )
    trainer.train()
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # unwrap accelerate's wrapper
    meter.paused = True
    prediction = trainer.predict(evaluation)
    metrics = score(head, prediction.predictions, prediction.label_ids, recipe.gold, names)
    if not curve or curve[-1]["step"] != trainer.state.global_step:  # the final model is a point of the curve too
        curve.append({"step": trainer.state.global_step, "seconds": clock.seconds, "metrics": metrics})
    # The loader collates one batch ahead; the first `global_step` batches are the trained ones.
    return meter.figures(trainer.state.global_step) | {
        "steps": trainer.state.global_step,
        "train_seconds": clock.seconds,
        "train_rows": rows_digest(recipe.train_rows),
        "eval_rows": rows_digest(recipe.eval_rows),
        "train_count": len(set(recipe.train_rows)),
        "eval_count": len(set(recipe.eval_rows)),
        "optimizer": f"{training_args.optim.value}: {describe_optimizer(optimizer)}",
        "torch_threads": torch.get_num_threads(),
        "precision": "bf16-mixed" if recipe.bf16 else "32-true",
        "peak_device_mb": peak_device_mb(),
        "curve": curve,
        "metrics": metrics,
    }
