"""Model zoo: iResNet trunks, BTNet (trunk + resolution branches), DCR, MobileFaceNet.

Public API::

    from mrface.models import get_model, list_models, summary, save_model, load_model

    model = get_model("iresnet50")                  # InsightFace iResNet-50, metadata attached
    model = get_model("btnet_tiny", branch_bn=True)  # trunk + branches 28/14/7
    x = model.preprocess(images_uint8_hwc)          # (N, 3, 112, 112) per model.metadata
    emb = model(x)                                  # (N, E) un-normalised embedding
    summary(get_model("iresnet50"), 112)            # params and MACs (6.3 G)
    save_model(model, "out/m.safetensors"); model = load_model("out/m.safetensors")

Modules: ``registry`` (names), ``metadata`` (ModelMetadata, preprocess), ``iresnet``, ``btnet``,
``mobilefacenet``, ``dcr``, ``branch_select`` + ``multires`` (resolution-aware inference),
``checkpoint`` (own format), ``importers`` (InsightFace / AdaFace / MagFace / BTNet / FaceCoresetNet files),
``summary``. ``coreset`` and ``template_pooling`` (set aggregation) live beside them;
``coreset_model`` holds :class:`CoresetModel` (backbone + FaceCoresetNet, registered as
``facecoresetnet``, so ``load_model`` opens a coreset run's ``model.safetensors``).
"""

from mrface.models.base import FaceModel
from mrface.models.branch_select import choose_branches, choose_resolution, size_indicator
from mrface.models.btnet import BranchOutput, BTNet, DistillOutput
from mrface.models.checkpoint import CheckpointError, load_model, load_weights, save_model
from mrface.models.coreset import FaceCoresetNet
from mrface.models.coreset_model import CoresetModel
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
    "save_model",
    "size_indicator",
    "summary",
]
