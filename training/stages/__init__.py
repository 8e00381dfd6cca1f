"""Training stages: what each stage trains and how its loss is computed; the loop (trainer.py) is shared.

One module per stage, each building a :class:`Stage` from the recipe:

* ``trunk`` (:mod:`.trunk`): a backbone + a sharded Partial FC margin head.
* ``distill`` (:mod:`.distill`): BTNet branch distillation from a frozen trunk run.
* ``dcr`` (:mod:`.dcr`): DCR coupled branches on a frozen trunk.
* ``coreset`` (:mod:`.coreset`): FaceCoresetNet set aggregation on a frozen backbone.
* ``qgface`` (:mod:`.qgface`): QGFace quality-guided joint training on paired views.

:func:`build_stage` picks the recipe's stage and builds its data set when none is given; :mod:`.base` holds
what the stages share, :mod:`.frozen` the frozen trunks of ``dcr`` and ``coreset``.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from mrface.training.config import TrainConfig
from mrface.training.data import build_dataset, dataset_classes
from mrface.training.distributed import DistEnv
from mrface.training.stages.base import Stage
from mrface.training.stages.coreset import coreset_stage
from mrface.training.stages.dcr import dcr_stage
from mrface.training.stages.distill import BranchStudents, distill_stage
from mrface.training.stages.qgface import qgface_stage
from mrface.training.stages.trunk import trunk_stage

__all__ = [
    "BranchStudents",
    "Stage",
    "build_stage",
    "coreset_stage",
    "dcr_stage",
    "distill_stage",
    "qgface_stage",
    "trunk_stage",
]


def build_stage(cfg: TrainConfig, env: DistEnv, dataset: Dataset | None) -> tuple[Stage, Dataset]:
    """The recipe's stage (``cfg.stage``) and its data set: ``dataset``, or the one ``cfg.data`` names when None."""
    if cfg.stage == "dcr":
        return dcr_stage(cfg, env, dataset)
    if cfg.stage == "coreset":
        return coreset_stage(cfg, env, dataset)
    if cfg.stage == "qgface":
        return qgface_stage(cfg, env, dataset)
    if cfg.stage == "distill":
        stage, num_classes = distill_stage(cfg, env)
    else:
        num_classes = 0
    color = cfg.data.color
    if dataset is None:
        meta = stage.model.metadata if cfg.stage == "distill" else None
        color = color or (meta.color_order if meta else "RGB")
        dataset, data_classes = build_dataset(cfg.data, color)
    else:
        data_classes = dataset_classes(dataset)
    if cfg.stage == "trunk":
        stage = trunk_stage(cfg, env, data_classes)
    elif data_classes > num_classes:
        raise ValueError(f"data has {data_classes} classes but the teacher's classifier only {num_classes}")
    return stage, dataset
