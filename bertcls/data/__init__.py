"""Data: reading tables, label vocabularies, cached tokenization, bucketed batching."""
