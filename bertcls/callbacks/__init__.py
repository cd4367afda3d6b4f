"""Lightning callbacks that bertcls adds to the Trainer."""

from bertcls.callbacks.predictions import PredictionWriter
from bertcls.callbacks.summary import RunSummary

__all__ = ["PredictionWriter", "RunSummary"]
