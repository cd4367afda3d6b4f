"""Model: the encoder, the task heads, the optimizer set-up and the LightningModule."""
