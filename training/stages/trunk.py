"""``trunk`` stage: a backbone (e.g. the multi-resolution TNet) + a sharded Partial FC margin head; images
go through the recipe's resolution augmentation first.
"""

from __future__ import annotations

from torch import Tensor, nn

from mrface.models import get_model
from mrface.models.checkpoint import read_safetensors
from mrface.training.checkpoint import weights_file
from mrface.training.config import TrainConfig
from mrface.training.distributed import DistEnv
from mrface.training.stages.base import Stage, freeze_bn, make_augment, make_head


def trunk_stage(cfg: TrainConfig, env: DistEnv, num_classes: int) -> Stage:
    model = get_model(cfg.model.name, **dict(cfg.model.args))
    if cfg.model.init:
        state, _ = read_safetensors(weights_file(cfg.model.init))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or len(missing) == len(model.state_dict()):
            raise ValueError(
                f"model.init={cfg.model.init}: weights do not fit {cfg.model.name} "
                f"(unexpected {unexpected[:5]}, missing {missing[:5]})"
            )
    head = make_head(cfg, model.embedding_size, num_classes)
    meta = model.metadata
    augment = make_augment(cfg, env, meta)

    def loss_fn(net: nn.Module, images: Tensor, labels: Tensor, step: int, micro: int) -> tuple[Tensor, dict]:
        embeddings = net(augment(images, step, micro))
        return head(embeddings, labels)

    def train_mode() -> None:
        model.train()
        head.train()
        if cfg.model.freeze_bn:
            freeze_bn(model)

    return Stage(model, model, head, loss_fn, train_mode)
