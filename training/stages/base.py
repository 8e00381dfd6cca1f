"""What each training stage trains and how its loss is computed; the loop (trainer.py) is shared.

* ``trunk``: a backbone (e.g. the multi-resolution TNet) + a sharded Partial FC margin head; images
  go through the recipe's resolution augmentation first.
* ``distill``: BTNet branch distillation (REFERENCE.md §2). The teacher trunk and its classifier are
  loaded from a trunk run and frozen (trunk in eval mode, classifier re-sharded to this world
  size); the branches (and their BN copies of the shared tail) learn from the same batch resized
  to each r: margin loss through the frozen classifier + MSE of the implant-level feature maps +
  MSE of the embeddings (:class:`~mrface.losses.BTNetDistillLoss`), summed over the branches.
  The public code trains one branch per run; here the branches of ``distill.resolutions`` train
  jointly on the same batches, which is the public run for each branch when their parameters are
  disjoint (they are), each branch's gradient norm is clipped on its own (``optim.clip_grad``), and
  the classifier's margin state (CurricularFace's t) updates once per branch and step (once per
  step in a one-branch run, ``distill.resolutions=[r]``, the public set-up).
* ``dcr`` (DCR coupled branches) and ``coreset`` (FaceCoresetNet set aggregation) live in
  :mod:`mrface.training.stages.dcr` and :mod:`mrface.training.stages.coreset`.

A :class:`Stage` holds the saved model, the module run under DDP (``net``), the head, the loss
function and how to put everything in training mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import Sampler

from mrface.losses import BTNetDistillLoss, PartialFC, get_head
from mrface.models import BTNet, DistillOutput, FaceModel, get_model
from mrface.models.btnet import norm_key
from mrface.models.checkpoint import read_metadata, read_safetensors
from mrface.training.augment import ResolutionAugment, StudentResize
from mrface.training.checkpoint import load_head, read_manifest, resolve_checkpoint
from mrface.training.config import TrainConfig
from mrface.training.distributed import DistEnv

LossFn = Callable[[nn.Module, Tensor, Tensor, int, int], tuple[Tensor, dict[str, Tensor]]]
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)


@dataclass
class Stage:
    model: FaceModel  # saved as model.safetensors
    net: nn.Module  # forward module wrapped in DDP (holds every trainable backbone parameter)
    head: PartialFC | None  # sharded classifier (frozen in distill; None in dcr, whose branches classify)
    loss_fn: LossFn  # (net, images (B, 3, H, W), labels (B,), step, micro-batch of the step) -> (loss, logs)
    train_mode: Callable[[], None]
    extra: nn.Module | None = None  # loss-side state (DCR's centres): trains with the head, saved per rank
    sampler: Callable[..., Sampler] | None = None  # GlobalBatchSampler's signature; None = GlobalBatchSampler
    # optim.clip_grad applies to each group's norm on its own (None: one group, every backbone parameter)
    clip_groups: list[list[nn.Parameter]] | None = None


def _weights_file(path: str) -> str:
    """A .safetensors file, or a run / checkpoint folder -> its model.safetensors."""
    if path.endswith(".safetensors"):
        return path
    return str(resolve_checkpoint(path) / "model.safetensors")


def _freeze_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, _BN):
            m.eval()


_INIT_BLOCK = 65536  # classes per independently seeded block of initial centres


@torch.no_grad()
def init_centres(head: PartialFC, seed: int, std: float = 0.01) -> None:
    """N(0, std) centres that depend on (seed, class) only, not on how the classes are sharded.

    Class block b (``_INIT_BLOCK`` classes) is drawn from a generator seeded by (seed, b); each rank
    draws only the blocks overlapping its shard.
    """
    start, stop = head.class_start, head.class_start + head.num_local
    for block in range(start // _INIT_BLOCK, (stop - 1) // _INIT_BLOCK + 1):
        lo = block * _INIT_BLOCK
        n = min(_INIT_BLOCK, head.num_classes - lo)
        g = torch.Generator().manual_seed(seed * 1_000_003 + block)
        rows = torch.normal(0.0, std, (n, head.embedding_size), generator=g)
        a, b = max(start, lo), min(stop, lo + n)
        head.weight[a - start : b - start] = rows[a - lo : b - lo].to(head.weight)


def _make_head(cfg: TrainConfig, embedding_size: int, num_classes: int) -> PartialFC:
    try:
        head = get_head(
            cfg.head.name,
            embedding_size,
            num_classes,
            sample_rate=cfg.head.sample_rate,
            fused=cfg.head.fused,
            **dict(cfg.head.args),
        )
    except TypeError as err:
        raise ValueError(f"head.args={dict(cfg.head.args)} do not fit head.name={cfg.head.name!r}: {err}") from None
    init_centres(head, cfg.seed)
    return head


# ------------------------------------------------------------------------------------------ trunk
def trunk_stage(cfg: TrainConfig, env: DistEnv, num_classes: int) -> Stage:
    model = get_model(cfg.model.name, **dict(cfg.model.args))
    if cfg.model.init:
        state, _ = read_safetensors(_weights_file(cfg.model.init))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or len(missing) == len(model.state_dict()):
            raise ValueError(
                f"model.init={cfg.model.init}: weights do not fit {cfg.model.name} "
                f"(unexpected {unexpected[:5]}, missing {missing[:5]})"
            )
    head = _make_head(cfg, model.embedding_size, num_classes)
    meta = model.metadata
    augment = ResolutionAugment(
        cfg.augment,
        cfg.seed,
        env.rank,
        env.world_size,
        cfg.optim.accumulate,
        meta.mean,
        meta.std,
        cfg.data.color or meta.color_order,
    )

    def loss_fn(net: nn.Module, images: Tensor, labels: Tensor, step: int, micro: int) -> tuple[Tensor, dict]:
        embeddings = net(augment(images, step, micro))
        return head(embeddings, labels)

    def train_mode() -> None:
        model.train()
        head.train()
        if cfg.model.freeze_bn:
            _freeze_bn(model)

    return Stage(model, model, head, loss_fn, train_mode)


# ---------------------------------------------------------------------------------------- distill
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

    head = _make_head(cfg, model.embedding_size, int(manifest["num_classes"]))
    load_head(ckpt, head)
    criterion = BTNetDistillLoss(head, cfg.distill.feature_weight, cfg.distill.embedding_weight, freeze_classifier=True)
    net = BranchStudents(model, list(cfg.distill.resolutions))
    meta = model.metadata
    augment = ResolutionAugment(
        cfg.augment,
        cfg.seed,
        env.rank,
        env.world_size,
        cfg.optim.accumulate,
        meta.mean,
        meta.std,
        cfg.data.color or meta.color_order,
    )
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
            _freeze_bn(model)

    clip_groups = [model.branch_parameters(int(r)) for r in cfg.distill.resolutions]
    return Stage(model, net, head, loss_fn, train_mode, clip_groups=clip_groups), int(manifest["num_classes"])
