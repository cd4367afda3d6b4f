"""bertcls: fine-tune BERT-family encoders for classification with Lightning."""

from bertcls.data.datamodule import ClassificationDataModule
from bertcls.model.module import BertClassifier

__all__ = ["BertClassifier", "ClassificationDataModule"]
__version__ = "0.1.0"
