"""mrface: multi-resolution and low-quality face recognition.

Trunk + resolution-branch models, margin heads with Partial FC, fused kernels (C++/CUDA via
pybind11 and Triton), evaluation protocols, training and deployment. See README.md.
"""

from mrface import ops

__version__ = "0.1.0"
__all__ = ["ops", "__version__", "embed", "search", "FaceEmbedder"]


def embed(model, inputs, **options):  # noqa: ANN001, ANN201, ANN003
    """Embed face crops (files, folders, list files) with ``model``; see :func:`mrface.eval.embed.embed`."""
    from mrface.eval.embed import embed as _embed

    return _embed(model, inputs, **options)


def search(gallery, probe, top=5, backend="auto"):  # noqa: ANN001, ANN201
    """Top-``top`` gallery faces per probe; see :func:`mrface.eval.embed.search`."""
    from mrface.eval.embed import search as _search

    return _search(gallery, probe, top=top, backend=backend)


def __getattr__(name: str):  # noqa: ANN202
    if name == "FaceEmbedder":
        from mrface.eval.embed import FaceEmbedder

        return FaceEmbedder
    raise AttributeError(f"module 'mrface' has no attribute {name!r}")
