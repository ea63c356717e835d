"""Stand-in pytorch_lightning.utilities."""
