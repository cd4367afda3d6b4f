"""Library output that tells a bertcls user nothing, silenced in one place: ``quiet_libraries`` (``bertcls`` calls it
first). bertcls prints its own lines for what matters: where files went, what was skipped, where a run resumes.

Each entry says why it is noise here. Messages are matched from their start, so that a changed wording in a new
library version shows again rather than hiding something else.
"""

from __future__ import annotations

import logging
import sys
import warnings

from datasets import disable_progress_bars as disable_datasets_progress_bars
from transformers.utils import logging as hf_logging

# Python warnings (Lightning's ``rank_zero_warn`` among them), as regular expressions matched at the message's start.
WARNINGS = (
    # The sampler returns every index (it has no drop_last to set); Lightning cannot know that.
    r".*custom batch sampler `LengthBucketBatchSampler`",
    # test/validate/predict from a checkpoint of another folder: the checkpoint callbacks' state is not needed.
    r"The dirpath has changed from",
    # Not true here, under any strategy: the data module restores the sampler's position and the sampler reads it at
    # the epoch's first batch, so a mid-epoch resume replays nothing even where Lightning builds the loader before the
    # restore (DeepSpeed, FSDP; tests/test_resume_strategies.py).
    r"You're resuming from a checkpoint that ended before the epoch ended",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning 2.6's own use of torch
    # test/validate/predict build no training callbacks, and need none of their state; a resumed fit restores the
    # state of the callbacks it is configured with.
    r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint",
    # Outside srun (a login node, an interactive allocation) Lightning starts its processes itself, which works;
    # bertcls' slurm/ scripts start every job with srun, and check_slurm_tasks guards the task count.
    r"The `srun` command is available on your system but is not used",
    # A resume continues in its own run folder on purpose (a new run always gets a new version folder).
    r"Checkpoint directory .* exists and is not empty",
)

# Log lines by the logger that emits them (a logging filter sees only its own logger's records), matched at the start.
LOG_LINES = {
    "lightning.pytorch.utilities.rank_zero": (  # Lightning's rank_zero_info
        "💡 Tip",  # Lightning's advertisement
        "Loading `train_dataloader` to estimate number of stepping batches",  # an internal step of the scheduler set-up
        # Announces what the next line confirms: "Restored all states" (fit, kept) or "Loaded model weights"
        # (test/validate/predict, dropped: the checkpoint is the command's own --ckpt_path).
        "Restoring states from the checkpoint path at",
        "Loaded model weights from the checkpoint at",
        "TPU available: False",  # said on every machine; "GPU available" stays
        "Trainer already configured with model summary callbacks",  # bertcls' ParameterCount, on purpose
        "`Trainer.fit` stopped:",  # the run summary says why: "(trainer.max_steps reached)"
    ),
    "lightning.pytorch": ("💡 Tip",),
    # The seed is in the run's config.yaml (and the sweep's records); a line per command says nothing new.
    "lightning.fabric.utilities.seed": ("Seed set to",),
    # bertcls' Preemption handles SLURM's signal (it installs its handler first, and Lightning's then stays unused).
    "lightning.pytorch.trainer.connectors.signal_connector": ("SLURM auto-requeueing enabled",),
    # DeepSpeed, imported by accelerate (transformers' export, loading) on a machine without a GPU: nothing uses it.
    "DeepSpeed": ("Setting accelerator to CPU",),
}


class DropLines(logging.Filter):
    """Drop the records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


# One filter per logger, made once: installing twice (several commands in one process) adds nothing.
FILTERS = {name: DropLines(prefixes) for name, prefixes in LOG_LINES.items()}


def quiet_libraries() -> None:
    """Install the warning and log filters above; in a log file (not a terminal), no Hugging Face progress bars."""
    for message in WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name, line_filter in FILTERS.items():
        logging.getLogger(name).addFilter(line_filter)
    if not sys.stderr.isatty():  # log files (SLURM): no carriage-return progress bars from the Hugging Face libraries
        hf_logging.disable_progress_bar()
        disable_datasets_progress_bars()
