"""Training stages: what each stage trains and how its loss is computed; the loop (trainer.py) is shared."""

from mrface.training.stages.base import BranchStudents, Stage, distill_stage, trunk_stage

__all__ = ["BranchStudents", "Stage", "distill_stage", "trunk_stage"]
