"""``distill`` stage: BTNet branch distillation (REFERENCE.md §2). The teacher trunk and its classifier are
loaded from a trunk run and frozen (trunk in eval mode, classifier re-sharded to this world
size); the branches (and their BN copies of the shared tail) learn from the same batch resized
to each r: margin loss through the frozen classifier + MSE of the implant-level feature maps +
MSE of the embeddings (:class:`~mrface.losses.BTNetDistillLoss`), summed over the branches.
The public code trains one branch per run; here the branches of ``distill.resolutions`` train
jointly on the same batches, which is the public run for each branch when their parameters are
disjoint (they are), each branch's gradient norm is clipped on its own (``optim.clip_grad``), and
the classifier's margin state (CurricularFace's t) updates once per branch and step (once per
step in a one-branch run, ``distill.resolutions=[r]``, the public set-up).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrface.losses import BTNetDistillLoss
from mrface.models import BTNet, DistillOutput, get_model
from mrface.models.btnet import norm_key
from mrface.models.checkpoint import read_metadata, read_safetensors
from mrface.training.augment import StudentResize
from mrface.training.checkpoint import load_head, read_manifest, resolve_checkpoint
from mrface.training.config import TrainConfig
from mrface.training.distributed import DistEnv
from mrface.training.stages.base import Stage, freeze_bn, make_augment, make_head


class BranchStudents(nn.Module):
    """``forward(x_hr (B,3,S,S), lows [(B,3,r,r)])`` -> {r: DistillOutput}; the teacher trunk runs once."""

    def __init__(self, model: BTNet, resolutions: list[int]) -> None:
        super().__init__()
        self.model, self.resolutions = model, [int(r) for r in resolutions]

    @torch.no_grad()
    def teacher(self, x_hr: Tensor) -> dict[int, tuple[Tensor, Tensor]]:
        """{r: (feature at branch r's implant level, embedding)} from one trunk pass."""
        trunk = self.model.trunk
        stops = sorted((self.model.branch(r).implant_unit + 1, r) for r in self.resolutions)
        features, x, start = {}, x_hr, 0
        for stop, r in stops:
            x = trunk.forward_units(x, start, stop)
            features[r], start = x, stop
        embedding = trunk(x, start_unit=start)
        return {r: (f, embedding) for r, f in features.items()}

    def forward(self, x_hr: Tensor, lows: list[Tensor]) -> dict[int, DistillOutput]:
        teacher = self.teacher(x_hr)
        out = {}
        for r, x in zip(self.resolutions, lows, strict=True):
            student = self.model.forward_branch(x, r)
            out[r] = DistillOutput(student.embedding, student.feature, teacher[r][1], teacher[r][0])
        return out


def init_branches_from_trunk(model: BTNet) -> None:
    """Copy the trunk's weights into every branch's owned layers (same names and shapes) and tail BNs."""
    trunk_state = model.trunk.state_dict()
    for r in model.branches:
        branch = model.branch(int(r))
        own = branch.net.state_dict()
        branch.net.load_state_dict(
            {k: trunk_state[k] if k in trunk_state and trunk_state[k].shape == v.shape else v for k, v in own.items()}
        )
        copy_tail_norms(model, int(r))


def copy_tail_norms(model: BTNet, resolution: int) -> None:
    """Reset branch ``resolution``'s BN copies of the shared tail to the trunk's (a no-op without them)."""
    norms = model.branch(resolution).norms
    if norms is None:
        return
    for name in model.tail_norm_names(resolution):
        norms[norm_key(name)].load_state_dict(model.trunk.get_submodule(name).state_dict())


def distill_stage(cfg: TrainConfig, env: DistEnv) -> tuple[Stage, int]:
    """The distillation stage and the number of classes of the teacher's classifier."""
    ckpt = resolve_checkpoint(cfg.distill.teacher)
    manifest = read_manifest(ckpt)
    teacher_meta = read_metadata(ckpt / "model.safetensors")
    args = {**{k: v for k, v in teacher_meta.arguments.items() if k != "resolutions"}, **dict(cfg.model.args)}
    model = get_model(cfg.model.name, resolutions=list(cfg.distill.resolutions), **args)
    if not isinstance(model, BTNet):
        raise ValueError(f"stage=distill: model.name={cfg.model.name!r} is not a BTNet (e.g. btnet_tiny, btnet_r50)")
    state, _ = read_safetensors(ckpt / "model.safetensors")
    if teacher_meta.architecture.startswith("btnet"):
        state = {k[len("trunk.") :]: v for k, v in state.items() if k.startswith("trunk.")}
    model.trunk.load_state_dict(state)
    if cfg.distill.init_from_trunk:
        init_branches_from_trunk(model)
    else:
        for r in model.branches:
            copy_tail_norms(model, int(r))
    model.trunk.requires_grad_(False)

    head = make_head(cfg, model.embedding_size, int(manifest["num_classes"]))
    load_head(ckpt, head)
    criterion = BTNetDistillLoss(head, cfg.distill.feature_weight, cfg.distill.embedding_weight, freeze_classifier=True)
    net = BranchStudents(model, list(cfg.distill.resolutions))
    meta = model.metadata
    augment = make_augment(cfg, env, meta)
    student_inputs = StudentResize(
        list(cfg.distill.resolutions),
        list(cfg.distill.filters),
        cfg.seed,
        env.rank,
        env.world_size,
        cfg.optim.accumulate,
    )

    def loss_fn(net: nn.Module, images: Tensor, labels: Tensor, step: int, micro: int) -> tuple[Tensor, dict]:
        images = augment(images, step, micro)
        outs = net(images, student_inputs(images, step, micro))
        total, logs = 0.0, {}
        for r, o in outs.items():
            loss, sub = criterion(
                o.student_feature, o.teacher_feature, o.student_embedding, o.teacher_embedding, labels
            )
            total = total + loss
            logs[f"loss/branch{r}"] = loss.detach()
            logs[f"distill/feature_mse_{r}"] = sub["distill/feature_mse"]
        return total, logs

    def train_mode() -> None:
        model.train()
        model.trunk.eval()
        criterion.train()
        if cfg.model.freeze_bn:
            freeze_bn(model)

    clip_groups = [model.branch_parameters(int(r)) for r in cfg.distill.resolutions]
    return Stage(model, net, head, loss_fn, train_mode, clip_groups=clip_groups), int(manifest["num_classes"])
