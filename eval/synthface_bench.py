"""SynthFace verification benchmark: pair sets, a pixel-PCA reference model and the identity oracle.

Used by the end-to-end tests and by ``mrface eval synthface`` (the report shown in the README):
no face data is needed, every number is reproducible from the seeds.

* :func:`synthface_pairs`: P pairs (genuine/impostor alternating, as the ``.bin`` sets are ordered in
  blocks) of distinct test identities, images rendered by :class:`mrface.data.synthface.SynthFace`.
* :class:`Fisherfaces`: a training-free FaceModel — 16x16 average-pooled pixels, PCA then LDA fitted
  on disjoint training identities — a floor any trained model must beat.
* :func:`identity_oracle`: one-hot identity embeddings; verification accuracy must be 100 %.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mrface.data.bins import VerificationPairs
from mrface.data.synthface import SynthFace
from mrface.models import FaceModel, ModelMetadata


def synthface_pairs(
    num_pairs: int = 600,
    num_identities: int = 200,
    first_identity: int = 100_000,
    images_per_identity: int = 20,
    seed: int = 0,
) -> tuple[VerificationPairs, np.ndarray]:
    """(pairs with images (2P, 112, 112, 3) uint8 RGB, identities (2P,)) from SynthFace seed ``seed``."""
    if num_pairs < 2 or num_identities < 2:
        raise ValueError("synthface_pairs: need num_pairs >= 2 and num_identities >= 2")
    rng = np.random.default_rng(seed)
    issame = np.arange(num_pairs) % 2 == 0
    a = rng.integers(0, num_identities, num_pairs)
    b = np.where(issame, a, (a + rng.integers(1, num_identities, num_pairs)) % num_identities)
    img = rng.integers(0, images_per_identity, (num_pairs, 2))
    img[:, 1] = np.where(issame & (img[:, 1] == img[:, 0]), (img[:, 0] + 1) % images_per_identity, img[:, 1])
    ids = np.stack([a, b], 1).reshape(-1) + first_identity
    images = SynthFace(seed=seed).render(ids, img.reshape(-1))
    return VerificationPairs(images, issame, "RGB"), ids


def identity_oracle(identities: np.ndarray) -> np.ndarray:
    """(N,) identity ids -> (N, K) one-hot embeddings over the K distinct ids."""
    _, inverse = np.unique(np.asarray(identities), return_inverse=True)
    return np.eye(inverse.max() + 1, dtype=np.float32)[inverse]


class Fisherfaces(FaceModel):
    """Training-free reference model: (N, 3, S, S) -> 16x16 average pool -> PCA -> LDA (N, components).

    ``fit`` learns the linear map on images of training identities (disjoint from the test pairs)
    with scikit-learn's PCA and LinearDiscriminantAnalysis; ``forward`` applies it in torch.
    """

    def __init__(self, components: int = 64, pca_components: int = 200, pool: int = 16) -> None:
        super().__init__()
        self.embedding_size, self.pca_components, self.pool = components, pca_components, pool
        dim = 3 * pool * pool
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("projection", torch.zeros(dim, components))
        self.register_buffer("offset", torch.zeros(components))
        self.metadata = ModelMetadata(
            architecture="fisherfaces",
            embedding_size=components,
            arguments={"components": components, "pca_components": pca_components, "pool": pool},
        )

    def _pixels(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.float(), self.pool).flatten(1)

    @torch.no_grad()
    def fit(self, images: np.ndarray, identities: np.ndarray, color_order: str = "RGB") -> Fisherfaces:
        """Fit on (N, 112, 112, 3) uint8 training images with (N,) identity labels."""
        from sklearn.decomposition import PCA
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        classes = np.unique(identities).size
        if classes <= self.embedding_size:
            raise ValueError(
                f"Fisherfaces.fit: {classes} identities give at most {classes - 1} LDA components; "
                f"components={self.embedding_size} needs more identities"
            )
        x = self._pixels(self.preprocess(images, color_order=color_order)).double().numpy()
        pca = PCA(min(self.pca_components, x.shape[0] - classes), svd_solver="full").fit(x)  # deterministic
        lda = LinearDiscriminantAnalysis(n_components=self.embedding_size).fit(pca.transform(x), identities)
        scalings = lda.scalings_[:, : self.embedding_size]
        self.mean.copy_(torch.from_numpy(pca.mean_))
        self.projection.copy_(torch.from_numpy(pca.components_.T @ scalings))
        self.offset.copy_(torch.from_numpy(-lda.xbar_ @ scalings))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self._pixels(x) - self.mean) @ self.projection + self.offset
