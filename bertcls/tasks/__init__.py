"""Tasks: what differs between single-label, sentence-pair, multi-label and token-level classification."""

from __future__ import annotations

from typing import Literal

from bertcls.errors import InputError
from bertcls.tasks.base import DataSpec, Evaluator, HeadOptions, Task, TaskHead
from bertcls.tasks.multi_label import MultiLabelTask
from bertcls.tasks.single_label import SentencePairTask, SingleLabelTask
from bertcls.tasks.token import TokenTask

TaskName = Literal["single_label", "pair", "multi_label", "token"]
DEFAULT_TASK: TaskName = "single_label"

TASKS: dict[str, type[Task]] = {
    task.name: task for task in (SingleLabelTask, SentencePairTask, MultiLabelTask, TokenTask)
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise InputError(f"unknown task '{name}'; choose one of {sorted(TASKS)}.")
    return TASKS[name]()


__all__ = ["DEFAULT_TASK", "TASKS", "DataSpec", "Evaluator", "HeadOptions", "Task", "TaskHead", "TaskName", "get_task"]
