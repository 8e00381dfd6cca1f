"""Model zoo: iResNet trunks, BTNet (trunk + resolution branches), DCR, MobileFaceNet.

Public API::

    from mrface.models import get_model, list_models, summary, save_model, load_model

    model = get_model("iresnet50")                  # InsightFace iResNet-50, metadata attached
    model = get_model("btnet_tiny", branch_bn=True)  # trunk + branches 28/14/7
    x = model.preprocess(images_uint8_hwc)          # (N, 3, 112, 112) per model.metadata
    emb = model(x)                                  # (N, E) un-normalised embedding
    summary(get_model("iresnet50"), 112)            # params and MACs (6.3 G)
    save_model(model, "out/m.safetensors"); model = load_model("out/m.safetensors")

Modules: ``registry`` (registry mechanics), ``metadata`` (ModelMetadata, preprocess), one module per
architecture, each registering its names beside the network (``iresnet``, ``btnet``, ``mobilefacenet``,
``dcr``, ``coreset_template_model``), ``branch_select`` (routing: branch choice, resize, run, scatter back
for every caller) + ``multires`` (resolution-aware inference), ``checkpoint`` (own format), ``importers``
(InsightFace / AdaFace / MagFace / BTNet / FaceCoresetNet files), ``summary``. Set aggregation:
``coreset_aggregator`` (the FaceCoresetNet aggregator network), ``coreset_template_model``
(:class:`CoresetModel`: backbone + aggregator, registered as ``facecoresetnet``, so ``load_model`` opens
a coreset run's ``model.safetensors``) and ``template_pooling``.

Registered names:

=======================  ====================================================================
iresnet18 … iresnet200   InsightFace iResNet (512-d, RGB, (x/255-0.5)/0.5)
iresnet_tiny             1 block per stage, widths 16/32/64/128, 128-d (trains on a CPU)
adaface_ir18/50/100      AdaFace's IR-net (subsampling shortcut, non-affine head BN, BGR)
mobilefacenet            MobileFaceNet, 0.99 M params, 128-d (``embedding_size=512`` allowed)
mbf                      InsightFace's MobileFaceNet (scale 2, 512-d)
btnet_r50                BTNet: iResNet-50 trunk + branches 28/14/7 (``branch_bn`` flag)
btnet_tiny               BTNet over iresnet_tiny
btnet_mobilefacenet      BTNet over MobileFaceNet (multi-resolution edge model)
dcr_iresnet50, dcr_tiny  DCR trunk + coupled branches 8/12/16/20 (``num_classes`` required)
facecoresetnet           frozen ``backbone`` (+ ``backbone_args``) + FaceCoresetNet set aggregator
                         (``k``, ``heads``, ``gamma``, ``tau``, ``dropout``); preprocessing of the backbone
=======================  ====================================================================

Common keyword arguments: ``amp`` (None/"fp16"/"bf16"), ``grad_checkpointing`` (iResNet),
``embedding_size``, ``dropout``, ``input_size``; tiny variants also take ``layers``/``width``.
"""

from mrface.models.base import FaceModel
from mrface.models.branch_select import (
    RESIZERS,
    choose_branches,
    choose_resolution,
    route_and_run,
    run_by_branch,
    size_indicator,
)
from mrface.models.btnet import BranchOutput, BTNet, DistillOutput
from mrface.models.checkpoint import CheckpointError, load_model, load_weights, save_model
from mrface.models.coreset_aggregator import FaceCoresetNet
from mrface.models.coreset_template_model import CoresetModel
from mrface.models.dcr import DCR
from mrface.models.importers import (
    import_adaface,
    import_btnet_branch,
    import_facecoresetnet,
    import_insightface,
    import_magface,
)
from mrface.models.iresnet import IResNet, iresnet
from mrface.models.metadata import ModelMetadata, preprocess
from mrface.models.mobilefacenet import MobileFaceNet
from mrface.models.multires import MultiResolutionFaceModel, MultiResolutionOutput
from mrface.models.registry import get_model, list_models, register_model
from mrface.models.summary import ModelSummary, summary
from mrface.models.template_pooling import PooledTemplates, pool_templates

__all__ = [
    "RESIZERS",
    "BTNet",
    "BranchOutput",
    "CheckpointError",
    "CoresetModel",
    "DCR",
    "DistillOutput",
    "FaceCoresetNet",
    "FaceModel",
    "IResNet",
    "MobileFaceNet",
    "ModelMetadata",
    "ModelSummary",
    "MultiResolutionFaceModel",
    "MultiResolutionOutput",
    "PooledTemplates",
    "choose_branches",
    "choose_resolution",
    "get_model",
    "import_adaface",
    "import_btnet_branch",
    "import_facecoresetnet",
    "import_insightface",
    "import_magface",
    "iresnet",
    "list_models",
    "load_model",
    "load_weights",
    "pool_templates",
    "preprocess",
    "register_model",
    "route_and_run",
    "run_by_branch",
    "save_model",
    "size_indicator",
    "summary",
]
