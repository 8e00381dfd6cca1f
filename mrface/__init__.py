"""mrface: multi-resolution and low-quality face recognition.

Trunk + resolution-branch models, margin heads with Partial FC, fused kernels (C++/CUDA via
pybind11 and Triton), evaluation protocols, training and deployment. See README.md.
"""

from mrface import ops

__version__ = "0.1.0"
__all__ = ["ops", "__version__"]
