"""Embed aligned face crops of any size: files, folders, list files -> embeddings + per-face metadata.

:class:`FaceEmbedder` wraps a model (a checkpoint path or a loaded model). Each readable crop is
routed by its own size to a branch (multi-resolution models; ``indicator``/``strategy`` of
:mod:`mrface.models.branch_select`), or — with ``resolution=R`` — treated as an R px face; batches of
``batch_size`` faces run through :func:`mrface.eval.extract.extract_embeddings` in chunks of
``chunk`` decoded files so memory stays bounded.

An :class:`EmbeddingSet` holds L2-normalised embeddings (N, E) float32 and, per face, its path,
input (width, height), the model input it took (``branch``: 112 = trunk) and the raw embedding norm
(a quality score for MagFace/AdaFace-style models); the model's metadata; and the inputs that were
skipped, each with its reason (unreadable, not a face-sized crop) — never silently dropped.
Saved as ``FILE.npy`` + ``FILE.json`` or one ``FILE.safetensors`` (metadata as JSON in its header).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mrface.data.images import decode_image
from mrface.eval.extract import FLIP_MODES, extract_embeddings
from mrface.io import atomic_path, atomic_write, write_text
from mrface.models.branch_select import DEFAULT_RESIZER

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
LIST_SUFFIXES = (".txt", ".lst", ".list")
SCHEMA = "mrface.embeddings/1"
MIN_SIZE = 4  # px: smaller crops hold no face to embed
MAX_ASPECT = 2.0  # aligned face crops are about square; a 3:1 strip is not one


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> tuple[list[Path], list[dict[str, str]]]:
    """Image paths from files, folders (recursive, image suffixes, sorted) and list files (one path per
    line, relative to the list file; ``#`` comments). Returns (paths, problems) with each missing input."""
    paths: list[Path] = []
    problems: list[dict[str, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append({"path": str(p), "reason": f"folder holds no images ({', '.join(IMAGE_SUFFIXES)})"})
            paths += found
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            for n, line in enumerate(p.read_text().splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                f = Path(line) if Path(line).is_absolute() else p.parent / line
                if f.is_file():
                    paths.append(f)
                else:
                    problems.append({"path": str(f), "reason": f"no such file (listed in {p} line {n})"})
        elif p.is_file():
            paths.append(p)
        else:
            problems.append({"path": str(p), "reason": "no such file or folder"})
    return paths, problems


def check_crop(image: np.ndarray, min_size: int = MIN_SIZE, max_aspect: float = MAX_ASPECT) -> str | None:
    """Why ``image`` (H, W, 3) is not a face-sized crop, or None when it is one."""
    h, w = image.shape[:2]
    if min(h, w) < min_size:
        return f"{w}x{h} px is smaller than {min_size} px"
    if max(h, w) / min(h, w) > max_aspect:
        return f"{w}x{h} px is not a face crop (aspect ratio above {max_aspect:g})"
    return None


@dataclass
class EmbeddingSet:
    """embeddings (N, E) float32 unit rows; paths, sizes (N, 2) (w, h), branches (N,), norms (N,)."""

    embeddings: np.ndarray
    paths: list[str]
    sizes: np.ndarray
    branches: np.ndarray
    norms: np.ndarray
    model: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def meta(self) -> dict[str, Any]:
        """Everything but the embedding matrix, as JSON-ready values."""
        items = [
            {"path": p, "width": int(s[0]), "height": int(s[1]), "branch": int(b), "norm": float(n)}
            for p, s, b, n in zip(self.paths, self.sizes, self.branches, self.norms, strict=True)
        ]
        return {
            "schema": SCHEMA,
            "count": len(self),
            "dim": int(self.embeddings.shape[1]),
            "model": self.model,
            "settings": self.settings,
            "items": items,
            "skipped": self.skipped,
        }

    def save(self, path: str | os.PathLike) -> list[Path]:
        """Write ``.npy`` (+ ``.json`` beside it) or ``.safetensors``; atomic (temp file + rename). Files written."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps(self.meta())
        if path.suffix == ".safetensors":
            from safetensors.numpy import save_file

            with atomic_path(path) as tmp:
                save_file(
                    {"embeddings": np.ascontiguousarray(self.embeddings, np.float32)},
                    str(tmp),
                    metadata={"mrface": meta},
                )
            return [path]
        if path.suffix != ".npy":
            raise ValueError(f"--out {path}: expected a .npy (with a .json beside it) or .safetensors file name")
        side = path.with_suffix(".json")
        with atomic_write(path, "wb") as f:
            np.save(f, np.ascontiguousarray(self.embeddings, np.float32))
        write_text(side, meta)
        return [path, side]

    @classmethod
    def load(cls, path: str | os.PathLike) -> EmbeddingSet:
        """Read a file written by :meth:`save` (``.npy`` + ``.json``, or ``.safetensors``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such embeddings file (expected one written by `mrface embed`)")
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "numpy") as f:
                header = (f.metadata() or {}).get("mrface")
                if header is None or "embeddings" not in f.keys():
                    raise ValueError(f"{path}: not an mrface embeddings file (no 'mrface' metadata / 'embeddings')")
                emb = f.get_tensor("embeddings")
            meta = json.loads(header)
        else:
            side = path.with_suffix(".json")
            if not side.is_file():
                raise FileNotFoundError(f"{path}: its metadata {side} is missing (written beside the .npy)")
            emb = np.load(path, allow_pickle=False)
            meta = json.loads(side.read_text())
        if meta.get("schema") != SCHEMA or emb.ndim != 2 or len(meta["items"]) != emb.shape[0]:
            raise ValueError(
                f"{path}: expected schema {SCHEMA} with one item per embedding row, got "
                f"{meta.get('schema')!r}, {emb.shape} embeddings, {len(meta.get('items', []))} items"
            )
        items = meta["items"]
        return cls(
            emb.astype(np.float32),
            [i["path"] for i in items],
            np.array([[i["width"], i["height"]] for i in items], np.int64).reshape(-1, 2),
            np.array([i["branch"] for i in items], np.int64),
            np.array([i["norm"] for i in items], np.float32),
            meta.get("model"),
            meta.get("settings", {}),
            meta.get("skipped", []),
        )


class FaceEmbedder:
    """Embed face crops of any size with one model (see module docstring).

    Args:
        model: a checkpoint ``.safetensors`` path or a loaded :class:`~mrface.models.FaceModel`.
        resolution: treat every crop as an R px face (its branch, resized) instead of routing by size.
        flip, indicator, strategy, resizer, batch_size, amp, device: as
            :func:`~mrface.eval.extract.extract_embeddings`.
        chunk: files decoded at a time.
    """

    def __init__(
        self,
        model: Any,
        *,
        resolution: int | None = None,
        flip: str = "pre_norm_vector_add",
        indicator: str = "max",
        strategy: str = "ceil",
        resizer: str = DEFAULT_RESIZER,
        batch_size: int = 64,
        amp: str | None = None,
        device: str | None = None,
        chunk: int = 1024,
        progress: bool = False,
    ) -> None:
        if flip not in FLIP_MODES or flip == "concat":
            raise ValueError(f"flip={flip!r}: expected one of {[m for m in FLIP_MODES if m != 'concat']}")
        if isinstance(model, (str, os.PathLike)):
            from mrface.models import load_model

            if not Path(model).is_file():
                raise FileNotFoundError(f"model {model}: no such checkpoint (expected a .safetensors file)")
            model = load_model(model)
        self.model = model.eval()
        self.resolution, self.flip, self.indicator, self.strategy = resolution, flip, indicator, strategy
        self.resizer = resizer
        self.batch_size, self.amp, self.device, self.chunk, self.progress = batch_size, amp, device, chunk, progress

    def model_metadata(self) -> dict[str, Any] | None:
        meta = getattr(self.model, "metadata", None)
        return json.loads(meta.to_json()) if meta is not None else None

    def settings(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution,
            "flip": self.flip,
            "indicator": self.indicator,
            "strategy": self.strategy,
            "resizer": self.resizer,
            "normalised": True,
        }

    def embed_arrays(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RGB uint8 (H, W, 3) crops -> (unit embeddings (N, E), raw norms (N,), model input taken (N,))."""
        e = extract_embeddings(
            self.model,
            list(images),
            color_order="RGB",
            flip=self.flip,
            resolution=self.resolution,
            indicator=self.indicator,
            strategy=self.strategy,
            resizer=self.resizer,
            batch_size=self.batch_size,
            amp=self.amp,
            device=self.device,
        )
        unit = e.features / np.maximum(np.linalg.norm(e.features, axis=1, keepdims=True), 1e-12)
        return unit.astype(np.float32), e.norms.astype(np.float32), e.paths

    def embed(self, inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> EmbeddingSet:
        """Files, folders or list files -> :class:`EmbeddingSet` (problems listed in ``skipped``)."""
        if isinstance(inputs, (str, os.PathLike)):
            inputs = [inputs]
        paths, skipped = collect_inputs(list(inputs))
        embs, norms, branches, kept, sizes = [], [], [], [], []
        with tqdm(total=len(paths), desc="embed", unit="img", disable=not self.progress) as bar:
            for lo in range(0, len(paths), self.chunk):
                images, names = [], []
                for p in paths[lo : lo + self.chunk]:
                    try:
                        im = decode_image(p.read_bytes(), "RGB")
                    except (OSError, ValueError) as exc:
                        skipped.append({"path": str(p), "reason": f"unreadable: {exc}"})
                        continue
                    why = check_crop(im)
                    if why:
                        skipped.append({"path": str(p), "reason": why})
                        continue
                    images.append(im)
                    names.append(str(p))
                if images:
                    e, n, b = self.embed_arrays(images)
                    embs.append(e)
                    norms.append(n)
                    branches.append(b)
                    kept += names
                    sizes += [(im.shape[1], im.shape[0]) for im in images]
                bar.update(len(paths[lo : lo + self.chunk]))
        dim = int(getattr(getattr(self.model, "metadata", None), "embedding_size", 0) or 0)
        return EmbeddingSet(
            np.concatenate(embs) if embs else np.zeros((0, dim), np.float32),
            kept,
            np.array(sizes, np.int64).reshape(-1, 2),
            np.concatenate(branches) if branches else np.zeros(0, np.int64),
            np.concatenate(norms) if norms else np.zeros(0, np.float32),
            self.model_metadata(),
            self.settings(),
            skipped,
        )


def embed(model: Any, inputs: str | os.PathLike | Iterable[str | os.PathLike], **options: Any) -> EmbeddingSet:
    """``FaceEmbedder(model, **options).embed(inputs)``."""
    return FaceEmbedder(model, **options).embed(inputs)


@dataclass
class SearchResult:
    """Top-k per probe: scores (P, k) cosine descending, indices (P, k) into the gallery, the two sets."""

    scores: np.ndarray
    indices: np.ndarray
    probe_paths: list[str]
    gallery_paths: list[str]
    backend: str

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "probe": p,
                "matches": [
                    {"rank": k + 1, "gallery": self.gallery_paths[int(j)], "score": float(s)}
                    for k, (j, s) in enumerate(zip(idx, sc, strict=True))
                ],
            }
            for p, idx, sc in zip(self.probe_paths, self.indices, self.scores, strict=True)
        ]


def _as_set(x: EmbeddingSet | str | os.PathLike) -> EmbeddingSet:
    return x if isinstance(x, EmbeddingSet) else EmbeddingSet.load(x)


def search(
    gallery: EmbeddingSet | str | os.PathLike,
    probe: EmbeddingSet | str | os.PathLike,
    top: int = 5,
    backend: str = "auto",
) -> SearchResult:
    """Top-``top`` gallery faces per probe face by cosine (faiss when installed, numpy otherwise)."""
    from mrface.eval.search import faiss_available, gallery_search

    g, p = _as_set(gallery), _as_set(probe)
    if len(g) == 0 or len(p) == 0:
        raise ValueError(f"search: the gallery ({len(g)}) and the probe set ({len(p)}) must both hold embeddings")
    gm, pm = (g.model or {}), (p.model or {})
    if gm != pm:
        keys = sorted(k for k in set(gm) | set(pm) if gm.get(k) != pm.get(k))
        raise ValueError(
            f"search: gallery and probes were embedded by different models (metadata differs in "
            f"{keys}); embed both with the same model"
        )
    scores, idx = gallery_search(p.embeddings, g.embeddings, k=top, backend=backend)
    used = "faiss" if backend == "faiss" or (backend == "auto" and faiss_available()) else "numpy"
    return SearchResult(scores, idx, p.paths, g.paths, used)
