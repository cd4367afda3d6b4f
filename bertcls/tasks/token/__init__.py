"""Token-level classification (``token``): one tag per word, e.g. named-entity recognition with BIO tags."""

from bertcls.tasks.token.task import TokenTask

__all__ = ["TokenTask"]
