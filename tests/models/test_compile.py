"""torch.compile of iresnet_tiny and of the BTNet branch path (functional_call over the shared tail
with the branch's BatchNorm copies) on CPU: one graph each (fullgraph) and the eager result.

The default run traces with dynamo + AOT autograd (``aot_eager``); the inductor run (C++ code
generation, ~1.5 min on 2 cores) is marked slow."""

from __future__ import annotations

import pytest
import torch

from mrface.models import BTNet
from mrface.models.iresnet import IResNet

LAYERS, WIDTHS = (1, 1, 1, 1), (8, 16, 16, 32)


def _check(backend: str, generator: torch.Generator) -> None:
    torch.manual_seed(0)
    model = BTNet(IResNet(LAYERS, WIDTHS, embedding_size=16), (14,), branch_bn=True).eval()
    x_hr = torch.randn(2, 3, 112, 112, generator=generator)
    x_lr = torch.randn(2, 3, 14, 14, generator=generator)
    torch._dynamo.reset()
    with torch.no_grad():
        trunk = torch.compile(model.trunk, backend=backend, dynamic=False, fullgraph=True)
        torch.testing.assert_close(trunk(x_hr), model.trunk(x_hr), rtol=1e-4, atol=1e-4)
        path = torch.compile(lambda x: model(x, resolution=14), backend=backend, dynamic=False, fullgraph=True)
        torch.testing.assert_close(path(x_lr), model(x_lr), rtol=1e-4, atol=1e-4)


def test_compile_traces_trunk_and_branch_path_as_single_graphs(generator):
    _check("aot_eager", generator)


@pytest.mark.slow
def test_compile_inductor_cpu(generator):
    _check("inductor", generator)
