"""Lightning callbacks that bertcls adds to the Trainer."""

from bertcls.callbacks.checkpoint import BestCheckpoint
from bertcls.callbacks.predictions import PredictionWriter
from bertcls.callbacks.summary import RunSummary

__all__ = ["BestCheckpoint", "PredictionWriter", "RunSummary"]
