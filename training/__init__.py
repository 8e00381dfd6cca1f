"""Training workflows: trainer, distributed setup, recipes, checkpoints (installed as mrface.training)."""
