"""Test reports, one job per module: ``report`` (``TestReport``, the report as data), ``tables`` (per-class
scores and the text table), ``figures`` (matplotlib figures) and ``publish`` (``publish_report``: files beside
the run's checkpoints and the experiment loggers). Only the light modules are imported here; import
``bertcls.reporting.publish`` / ``figures`` (matplotlib, Lightning's loggers) where they are needed."""

from bertcls.reporting.report import PrecisionRecallCurve, TestReport
from bertcls.reporting.tables import classification_report, classification_table, per_class_scores

__all__ = ["PrecisionRecallCurve", "TestReport", "classification_report", "classification_table", "per_class_scores"]
