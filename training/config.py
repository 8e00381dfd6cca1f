"""Typed training recipes: dataclasses loaded with OmegaConf, dotted overrides, typo suggestions.

A recipe is a YAML file (``training/recipes/<name>.yaml`` or any path) whose keys follow
:class:`TrainConfig`. ``base: other_recipe`` merges another recipe first. Overrides are
``key.sub=value`` strings (``optim.lr=0.05 data.batch_size=64``). Unknown keys are rejected with
the closest valid key::

    cfg = load_recipe("synthface_tiny_trunk", ["optim.lr=0.05", "train.max_steps=20"])

Units: steps are optimiser steps (after gradient accumulation); ``batch_size`` is per rank and per
micro-batch, so the global batch is ``batch_size * world_size * accumulate``.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mrface.ops.degrade import DEGRADE_FILTERS

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
STAGES = ("trunk", "distill", "dcr", "coreset", "qgface")


class RecipeError(ValueError):
    """A recipe or override is malformed; the message names the file/key and what was expected."""


@dataclass
class ModelConfig:
    name: str = "iresnet_tiny"  # a name of mrface.models.list_models()
    args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of get_model
    init: str = ""  # weights to start from: a .safetensors file, a run dir or a checkpoint dir ("" = random)
    freeze_bn: bool = False  # BatchNorm in eval mode (running statistics) while training
    sync_bn: bool = False  # SyncBatchNorm across ranks (GPU only)
    channels_last: bool = False
    compile: bool = False  # torch.compile the backbone


@dataclass
class HeadConfig:
    name: str = "curricularface"  # a name of mrface.losses.list_heads()
    args: dict[str, Any] = field(default_factory=dict)  # margin arguments (s, m, ...)
    sample_rate: float = 1.0  # Partial FC class sampling
    fused: bool = True  # fused margin-softmax op


@dataclass
class DataConfig:
    kind: str = "synth"  # synth (rendered in memory) | rec (InsightFace RecordIO) | folder (root/<id>/*.jpg)
    path: str = ""  # .rec file or image folder
    synth_identities: int = 64
    synth_images: int = 8
    synth_seed: int = 0
    batch_size: int = 32  # per rank, per micro-batch
    workers: int = 0
    color: str = ""  # RGB | BGR; "" = the model's metadata
    skip_corrupt: bool = False  # skip unreadable records/images and out-of-range labels (counted, named in train.log)
    max_corrupt: int = 100  # with skip_corrupt: stop when more corrupt samples than this were met


@dataclass
class AugmentConfig:
    kind: str = "none"  # none | btnet (random r in sizes, down + back up) | adaface (continuous side)
    sizes: list[int] = field(default_factory=lambda: [112, 56, 28, 14, 7])
    filter: str = "bilinear_aa"  # down filter for btnet
    up: str = "bilinear"
    prob: float = 1.0  # fraction of images degraded (the others stay at full resolution)
    min_size: int = 22  # adaface
    flip: bool = True  # random horizontal flip
    crop_prob: float = 0.0  # AdaFace crop: keep a RandomResizedCrop box (scale 0.2-1, ratio 3/4-4/3), zero the rest
    photometric_prob: float = 0.0  # AdaFace photometric: brightness/contrast/saturation 0.5 in random order


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 0.1  # for the global batch
    momentum: float = 0.9
    weight_decay: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    clip_grad: float = 0.0  # max global grad norm, 0 = off
    no_decay_bn: bool = False  # BatchNorm parameters without weight decay (AdaFace train_val.py split_parameters)
    accumulate: int = 1  # micro-batches per optimiser step
    amp: str = "none"  # none | bf16 | fp16 (fp16 uses a grad scaler)


@dataclass
class ScheduleConfig:
    kind: str = "poly"  # poly | multistep | constant
    warmup_epochs: float = 0.0
    power: float = 2.0  # poly
    milestones: list[float] = field(default_factory=list)  # multistep, in epochs
    gamma: float = 0.1  # multistep


@dataclass
class TrainLoopConfig:
    epochs: float = 1.0
    max_steps: int = 0  # > 0: stop here (the schedule spans max_steps)
    log_every: int = 10
    progress: bool = True
    tensorboard: bool = True  # when the tensorboard package is installed
    skip_nonfinite: bool = False  # skip steps with a NaN/inf loss instead of stopping
    max_skipped: int = 10  # with skip_nonfinite: stop (exit 1) when more steps than this were skipped
    deterministic: bool = False  # torch.use_deterministic_algorithms


@dataclass
class CheckpointConfig:
    every: int = 0  # steps between checkpoints, 0 = only at the end
    keep: int = 3  # last K checkpoints kept


@dataclass
class EvalConfig:
    every: int = 0  # steps between verifications on the .bin sets, 0 = only at the end (if bins)
    bins: list[str] = field(default_factory=list)
    resolutions: list[int] = field(default_factory=lambda: [112])  # probes degraded 112 -> r
    batch_size: int = 128


@dataclass
class DistillConfig:
    teacher: str = ""  # trunk run dir or checkpoint dir (model + classifier shards)
    resolutions: list[int] = field(default_factory=lambda: [28, 14, 7])
    feature_weight: float = 0.5
    embedding_weight: float = 0.5
    # 112 -> r for the student; with several, each image draws one per step (robust to the test filter)
    filters: list[str] = field(default_factory=lambda: ["bilinear_aa"])
    init_from_trunk: bool = True  # start each branch from the trunk's weights of the layers it owns


@dataclass
class DCRConfig:
    trunk: str = ""  # frozen trunk: a trunk run dir, a checkpoint dir or a .safetensors weights file
    resolutions: list[int] = field(default_factory=lambda: [8, 12, 16, 20])  # one coupled branch per LR side
    filter: str = "bicubic_aa"  # HR -> r down filter
    up: str = "bicubic"  # r -> HR size again (the trunk sees LR faces upsampled to its input size)
    centre_weight: float = 0.008
    coupling_weight: float = 0.008
    centre_rate: float = 0.6  # centre update rate alpha
    # SI initialisation: copy the trunk run's classifier (unit rows x classifier_scale) into every branch
    classifier_init: str = "trunk"  # trunk | random
    classifier_scale: float = 64.0  # the trunk head's scale s (its logits are s * cos)


@dataclass
class CoresetConfig:
    backbone: str = ""  # frozen backbone weights: a run dir, a checkpoint dir or a .safetensors file
    max_size: int = 20  # templates hold 1..max_size images of one identity
    size_mode: str = "batch"  # batch: one size per global micro-batch (public code) | template: one per template
    k: int = 3  # coreset size
    heads: int = 8
    gamma: float = 0.01  # initial norm exponent of the FPS distance (learned)
    tau: float = 1.0  # Gumbel-softmax temperature while training
    dropout: float = 0.1  # decoder attention + residual dropout (public 0.1)
    sampling: str = "public"  # public: unmasked draws, noisy 1e4-scaled inference | masked: pick once, arg-max


@dataclass
class QGFaceConfig:
    weight: float = 1.0  # contrastive loss weight (public contrast.weight; value not published)
    queue_size: int = 8192  # most queue entries kept (public contrast.queue.queue_size; value not published)
    scale: list[float] = field(default_factory=lambda: [0.1, 0.5])  # degraded side = int(U(lo, hi) * H), RandomRescale
    jpeg_quality: int = 75  # JPEG round trip at the low side (public RandomRescale is_jpeg); 0 = off
    args: dict[str, Any] = field(default_factory=dict)  # more QGFaceContrastive arguments (gate, margin, drift, ...)


@dataclass
class TrainConfig:
    stage: str = "trunk"  # trunk | distill | dcr | coreset | qgface
    seed: int = 0
    output: str = "runs/${stage}"
    resume: str = "none"  # none | auto (latest complete checkpoint in output) | a checkpoint dir
    overwrite: bool = False  # a new run into a non-empty output moves the old run aside (else it is refused)
    base: str = ""  # recipe merged before this one
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    dcr: DCRConfig = field(default_factory=DCRConfig)
    coreset: CoresetConfig = field(default_factory=CoresetConfig)
    qgface: QGFaceConfig = field(default_factory=QGFaceConfig)


# ------------------------------------------------------------------------------------ key checks
_FREE_FORM = {"args"}  # dict fields whose keys are passed through (checked by get_model/get_head)


def _check_keys(node: Any, schema: type, where: str, source: str) -> None:
    """Raise RecipeError for the first key of ``node`` that ``schema`` does not have, with a suggestion."""
    if not isinstance(node, dict):
        raise RecipeError(f"{source}: '{where or 'top level'}' must be a mapping, got {type(node).__name__}")
    known = {f.name: f for f in fields(schema)}
    for key, value in node.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.5)
            hint = f"; did you mean '{(where + '.') if where else ''}{close[0]}'?" if close else ""
            raise RecipeError(f"{source}: unknown key '{dotted}'{hint} (valid keys here: {sorted(known)})")
        sub = _dataclass_of(schema, key)
        if sub is not None and key not in _FREE_FORM and value is not None:
            _check_keys(value, sub, dotted, source)


def _dataclass_of(schema: type, key: str) -> type | None:
    default = TrainConfig if schema is TrainConfig else schema
    value = getattr(default(), key, None)
    return type(value) if is_dataclass(value) else None


def _check_dotted(key: str, source: str) -> None:
    """Check one dotted override key against the schema (free-form ``args`` accept anything below)."""
    node: dict[str, Any] = {}
    cursor = node
    parts = key.split(".")
    for i, part in enumerate(parts):
        if part == "args":
            cursor[part] = {}
            break
        cursor[part] = {} if i < len(parts) - 1 else None
        cursor = cursor[part] if i < len(parts) - 1 else cursor
    _check_keys(node, TrainConfig, "", source)


# ------------------------------------------------------------------------------------- loading
def recipe_path(name: str | os.PathLike) -> Path:
    """A recipe name (``synthface_tiny_trunk``) or a path to a YAML file -> its path."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    candidate = RECIPE_DIR / f"{p.name}.yaml" if p.suffix == "" else RECIPE_DIR / p.name
    if candidate.is_file():
        return candidate
    names = list_recipes()
    close = difflib.get_close_matches(p.stem, names, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise RecipeError(
        f"recipe '{name}' not found (not a YAML file, not in {RECIPE_DIR}){hint} Available: {', '.join(names)}"
    )


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    if path in seen:
        raise RecipeError(f"{path}: 'base' chain loops: {' -> '.join(map(str, (*seen, path)))}")
    try:
        raw = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and OSError alike: name the file
        raise RecipeError(f"{path}: cannot read the recipe: {err}") from None
    if not isinstance(raw, DictConfig):
        raise RecipeError(f"{path}: a recipe must be a mapping of keys, got a list")
    _check_keys(OmegaConf.to_container(raw, resolve=False), TrainConfig, "", str(path))
    base = raw.get("base", "")
    if base:
        base_path = path.parent / base if (path.parent / str(base)).is_file() else recipe_path(str(base))
        return OmegaConf.merge(_read_yaml(base_path, (*seen, path)), raw)
    return raw


def load_recipe(recipe: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Recipe name or path + ``key=value`` overrides -> validated :class:`TrainConfig`."""
    path = recipe_path(recipe)
    raw = _read_yaml(path)
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override '{item}': expected key=value (e.g. optim.lr=0.05)")
        _check_dotted(item.split("=", 1)[0].strip(), f"override '{item}'")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), raw, OmegaConf.from_dotlist(list(overrides)))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "") or "?"
        raise RecipeError(f"{path}: key '{key}': {str(err).splitlines()[0]}") from None
    assert isinstance(cfg, TrainConfig)
    validate(cfg, str(path))
    return cfg


def _choice(value: str, allowed: tuple[str, ...], key: str, source: str) -> None:
    if value not in allowed:
        raise RecipeError(f"{source}: {key}={value!r}, expected one of {list(allowed)}")


def _numbers(node: Any, where: str) -> list[tuple[str, float]]:
    """Every (dotted key, number) of a config tree, list items as ``key[i]`` (free-form ``args`` included)."""
    if is_dataclass(node):
        node = {f.name: getattr(node, f.name) for f in fields(node)}
    if isinstance(node, dict):
        return [n for k, v in node.items() for n in _numbers(v, f"{where}.{k}" if where else str(k))]
    if isinstance(node, (list, tuple)):
        return [n for i, v in enumerate(node) for n in _numbers(v, f"{where}[{i}]")]
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return [(where, float(node))]
    if isinstance(node, str) and ".args." in f".{where}":  # free-form args keep 'inf'/'nan' as strings
        try:
            return [(where, float(node))]
        except ValueError:
            return []
    return []


# key -> (low, high, low inclusive, high inclusive, what): numeric ranges every recipe must respect.
_RANGES = {
    "optim.lr": (0, math.inf, False, False, "a learning rate > 0"),
    "optim.momentum": (0, 1, True, False, "a momentum in [0, 1)"),
    "optim.weight_decay": (0, math.inf, True, False, "a weight decay >= 0"),
    "optim.clip_grad": (0, math.inf, True, False, "a gradient norm >= 0 (0 = off)"),
    "schedule.warmup_epochs": (0, math.inf, True, False, "epochs >= 0"),
    "schedule.power": (0, math.inf, True, False, "a power >= 0"),
    "schedule.gamma": (0, math.inf, False, False, "a factor > 0"),
    "train.epochs": (0, math.inf, True, False, "epochs >= 0"),
    "train.max_skipped": (0, math.inf, True, False, "a count >= 0"),
    "data.max_corrupt": (0, math.inf, True, False, "a count >= 0"),
    "data.workers": (0, math.inf, True, False, "a count >= 0"),
    "data.synth_identities": (1, math.inf, True, False, "a count >= 1"),
    "data.synth_images": (1, math.inf, True, False, "a count >= 1"),
    "checkpoint.every": (0, math.inf, True, False, "steps >= 0 (0 = only at the end)"),
    "eval.every": (0, math.inf, True, False, "steps >= 0"),
    "eval.batch_size": (1, math.inf, True, False, "a batch size >= 1"),
    "augment.min_size": (1, 112, True, True, "a side in 1..112"),
    "distill.feature_weight": (0, math.inf, True, False, "a weight >= 0"),
    "distill.embedding_weight": (0, math.inf, True, False, "a weight >= 0"),
    "dcr.centre_weight": (0, math.inf, True, False, "a weight >= 0"),
    "dcr.coupling_weight": (0, math.inf, True, False, "a weight >= 0"),
    "dcr.centre_rate": (0, 1, True, True, "a rate in [0, 1]"),
    "coreset.tau": (0, math.inf, False, False, "a temperature > 0"),
    "coreset.dropout": (0, 1, True, False, "a probability in [0, 1)"),
    "coreset.heads": (1, math.inf, True, False, "a count >= 1"),
    "head.args.s": (0, math.inf, False, False, "a scale > 0"),
}
_SIDE_LISTS = ("augment.sizes", "distill.resolutions", "eval.resolutions")  # image sides within the 112 input


def validate_numbers(cfg: TrainConfig, source: str = "config") -> None:
    """Every number finite, every known one in its range, every side list non-empty and in 1..112."""
    values = _numbers(cfg, "")
    for key, value in values:
        if not math.isfinite(value):
            raise RecipeError(f"{source}: {key}={value}, expected a finite number")
    for key, value in values:
        base = key.split("[")[0]
        if base in _RANGES:
            low, high, low_in, high_in, what = _RANGES[base]
            ok = (value >= low if low_in else value > low) and (value <= high if high_in else value < high)
            if not ok:
                raise RecipeError(f"{source}: {key}={value:g}, expected {what}")
        if base == "optim.betas" and not 0 <= value < 1:
            raise RecipeError(f"{source}: {key}={value:g}, expected a beta in [0, 1)")
    for key in _SIDE_LISTS:
        section, name = key.split(".")
        sides = list(getattr(getattr(cfg, section), name))
        if not sides or any(not 1 <= v <= 112 for v in sides):
            raise RecipeError(
                f"{source}: {key}={sides}, expected a non-empty list of image sides in 1..112 "
                "(the training images are 112 x 112)"
            )


def _registered(name: str, names: list[str], key: str, source: str) -> None:
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise RecipeError(f"{source}: {key}={name!r} is not registered{hint} (expected one of {names})")


def validate(cfg: TrainConfig, source: str = "config") -> None:
    """Value checks OmegaConf's types cannot express; raise RecipeError naming the key."""
    from mrface.losses import list_heads
    from mrface.models import list_models

    validate_numbers(cfg, source)
    _registered(cfg.model.name, list_models(), "model.name", source)
    _registered(cfg.head.name, list_heads(), "head.name", source)
    _choice(cfg.stage, STAGES, "stage", source)
    _choice(cfg.data.kind, ("synth", "rec", "folder"), "data.kind", source)
    _choice(cfg.data.color, ("", "RGB", "BGR"), "data.color", source)
    _choice(cfg.augment.kind, ("none", "btnet", "adaface"), "augment.kind", source)
    _choice(cfg.optim.name, ("sgd", "adamw"), "optim.name", source)
    _choice(cfg.optim.amp, ("none", "bf16", "fp16"), "optim.amp", source)
    _choice(cfg.schedule.kind, ("poly", "multistep", "constant"), "schedule.kind", source)
    positive = {
        "data.batch_size": cfg.data.batch_size,
        "optim.accumulate": cfg.optim.accumulate,
        "train.log_every": cfg.train.log_every,
        "checkpoint.keep": cfg.checkpoint.keep,
    }
    for key, value in positive.items():
        if value < 1:
            raise RecipeError(f"{source}: {key}={value}, expected an integer >= 1")
    if cfg.train.max_steps < 0 or cfg.train.epochs <= 0 and cfg.train.max_steps == 0:
        raise RecipeError(f"{source}: need train.epochs > 0 or train.max_steps > 0")
    if not 0 < cfg.head.sample_rate <= 1:
        raise RecipeError(f"{source}: head.sample_rate={cfg.head.sample_rate}, expected a value in (0, 1]")
    for key in ("prob", "crop_prob", "photometric_prob"):
        value = getattr(cfg.augment, key)
        if not 0 <= value <= 1:
            raise RecipeError(f"{source}: augment.{key}={value}, expected a value in [0, 1]")
    if cfg.data.kind in ("rec", "folder") and not cfg.data.path:
        raise RecipeError(f"{source}: data.kind={cfg.data.kind} needs data.path")
    for name in cfg.distill.filters:
        _choice(name, DEGRADE_FILTERS, "distill.filters", source)
    if not cfg.distill.filters:
        raise RecipeError(f"{source}: distill.filters is empty; give at least one down filter, e.g. [bilinear_aa]")
    if cfg.stage == "distill" and not cfg.distill.teacher:
        raise RecipeError(f"{source}: stage=distill needs distill.teacher (a trunk run or checkpoint dir)")
    if cfg.stage == "dcr" and not cfg.dcr.trunk:
        raise RecipeError(f"{source}: stage=dcr needs dcr.trunk (a trunk run, checkpoint dir or .safetensors file)")
    if cfg.stage == "coreset" and not cfg.coreset.backbone:
        raise RecipeError(f"{source}: stage=coreset needs coreset.backbone (a run, checkpoint dir or weights file)")
    _choice(cfg.coreset.size_mode, ("batch", "template"), "coreset.size_mode", source)
    _choice(cfg.dcr.classifier_init, ("trunk", "random"), "dcr.classifier_init", source)
    _choice(cfg.coreset.sampling, ("public", "masked"), "coreset.sampling", source)
    if cfg.stage == "coreset" and cfg.model.channels_last:
        raise RecipeError(f"{source}: stage=coreset batches are 5-D templates: model.channels_last must be false")
    if cfg.coreset.max_size < 1 or cfg.coreset.k < 1:
        raise RecipeError(
            f"{source}: coreset.max_size={cfg.coreset.max_size} and coreset.k={cfg.coreset.k} must be >= 1"
        )
    if not cfg.dcr.resolutions or min(cfg.dcr.resolutions) < 1:
        raise RecipeError(f"{source}: dcr.resolutions={list(cfg.dcr.resolutions)}: expected sides >= 1")
    lo_hi = list(cfg.qgface.scale)
    if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1] <= 1:
        raise RecipeError(f"{source}: qgface.scale={lo_hi}: expected [lo, hi] with 0 < lo <= hi <= 1")
    if not 0 <= cfg.qgface.jpeg_quality <= 100:
        raise RecipeError(f"{source}: qgface.jpeg_quality={cfg.qgface.jpeg_quality}, expected 0 (off) .. 100")
    if cfg.qgface.queue_size < 1:
        raise RecipeError(f"{source}: qgface.queue_size={cfg.qgface.queue_size}, expected an integer >= 1")
    if cfg.stage == "qgface" and cfg.augment.kind != "none":
        raise RecipeError(
            f"{source}: stage=qgface makes its own clean and degraded views (qgface.scale): "
            f"augment.kind={cfg.augment.kind!r} must be none (augment.flip still applies)"
        )
    if cfg.resume not in ("none", "auto") and not Path(cfg.resume).is_dir():
        raise RecipeError(f"{source}: resume={cfg.resume!r}: expected none, auto or an existing checkpoint dir")


def check_paths(cfg: TrainConfig, data: bool = True) -> None:
    """The input files a run reads exist (checked when training starts, not when a recipe loads)."""
    paths = {
        "data.path": cfg.data.path if data and cfg.data.kind in ("rec", "folder") else "",
        "model.init": cfg.model.init,
        "distill.teacher": cfg.distill.teacher if cfg.stage == "distill" else "",
        "dcr.trunk": cfg.dcr.trunk if cfg.stage == "dcr" else "",
        "coreset.backbone": cfg.coreset.backbone if cfg.stage == "coreset" else "",
    }
    for key, value in paths.items():
        if value and not Path(value).exists():
            raise RecipeError(f"{key}={value}: no such file or folder")


def to_yaml(cfg: TrainConfig) -> str:
    """The resolved config as YAML (written to every run directory)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=True)
