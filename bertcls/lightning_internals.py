"""Lightning internals that bertcls reads, in one place: each has no public equivalent in Lightning 2.6."""

from __future__ import annotations

import lightning as L


def logs_this_step(trainer: L.Trainer) -> bool:
    """Whether the training step now running sends its ``on_step`` metrics to the loggers.

    A metric computed on any other step is thrown away, so a costly one (the gradient norm) is computed only on
    these. Lightning decides it in its private logger connector (``log_every_n_steps``, and a stopping run).
    """
    return trainer._logger_connector.should_update_logs
