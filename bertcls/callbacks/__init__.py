"""Lightning callbacks that bertcls adds to the Trainer."""

from bertcls.callbacks.checkpoint import BestCheckpoint
from bertcls.callbacks.final_validation import FinalValidation
from bertcls.callbacks.last_checkpoint import LastCheckpoint
from bertcls.callbacks.parameter_count import ParameterCount
from bertcls.callbacks.predictions import PredictionWriter
from bertcls.callbacks.preemption import Preemption
from bertcls.callbacks.progress import ProgressBar
from bertcls.callbacks.summary import RunSummary
from bertcls.callbacks.tf32 import TF32Matmul
from bertcls.callbacks.throughput import Throughput

__all__ = [
    "BestCheckpoint",
    "FinalValidation",
    "LastCheckpoint",
    "ParameterCount",
    "PredictionWriter",
    "Preemption",
    "ProgressBar",
    "RunSummary",
    "TF32Matmul",
    "Throughput",
]
