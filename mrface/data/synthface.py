"""SynthFace: a procedural, seeded face-identity generator (112x112 RGB, ArcFace-aligned).

No face data can be downloaded on our machines, so tests and the demo train on SynthFace. An
identity is a vector of face parameters (head shape, skin tone, eye size/spacing/colour, brows,
nose, mouth, hairline and colour) plus an identity-specific fine texture (freckle-scale band-pass
pattern and moles, wavelengths 2.5-6 px) that averages away below ~20 px, so low resolution
genuinely removes identity information. Each image adds nuisances: small pose (rotation, scale,
shift), illumination direction and gain, colour cast, expression (mouth, eyes), occasional glasses
and occluders, background, blur, sensor noise and JPEG.

Everything is a pure function of (seed, identity, image): parameters come from a counter-based
hash, not a stateful RNG, so ``render([3], [5])`` equals row k of any batch holding (3, 5), on any
machine. Rendering is vectorised numpy over a batch (soft-edged ellipses evaluated on the
pose-warped pixel grid; small features only in windows around the template landmarks).

Example::

    from mrface.data.synthface import SynthFace
    sf = SynthFace(seed=0)
    images = sf.render([0, 0, 1], [0, 1, 0])   # (3, 112, 112, 3) uint8 RGB
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import cv2
import numpy as np

from mrface.data.protocols.align import ARCFACE_TEMPLATE

SIZE = 112

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)
_M4 = np.uint64(0xD6E8FEB86659FD93)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M2
    x = x ^ (x >> np.uint64(27))
    x = x * _M3
    return x ^ (x >> np.uint64(31))


def hash_uniform(seed: int, a: np.ndarray, b: np.ndarray, stream: int, n: int) -> np.ndarray:
    """(len(a), n) float64 uniforms in [0, 1), a pure function of (seed, a[i], b[i], stream, column)."""
    a = np.asarray(a, dtype=np.uint64)[:, None]
    b = np.asarray(b, dtype=np.uint64)[:, None]
    cols = np.arange(n, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        base = _mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _M1 + np.uint64(stream) * _M4)
        x = _mix(_mix(base ^ (a * _M2)) ^ (b * _M3 + np.uint64(1)))
        x = _mix(x + (cols + np.uint64(1)) * _M1)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _lerp(u: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (lo + (hi - lo) * u).astype(np.float32)


# Palettes (RGB in [0, 1]).
_SKIN_DARK, _SKIN_LIGHT = np.array([0.30, 0.19, 0.12]), np.array([0.96, 0.80, 0.68])
_HAIR = np.array(
    [
        [0.05, 0.04, 0.04],
        [0.22, 0.13, 0.07],
        [0.45, 0.30, 0.15],
        [0.80, 0.65, 0.35],
        [0.55, 0.22, 0.08],
        [0.62, 0.62, 0.62],
        [0.30, 0.28, 0.26],
    ]
)
_IRIS = np.array(
    [
        [0.25, 0.14, 0.06],
        [0.40, 0.26, 0.12],
        [0.25, 0.45, 0.70],
        [0.30, 0.50, 0.30],
        [0.45, 0.50, 0.55],
        [0.10, 0.07, 0.05],
    ]
)

_ID_PARAMS = 40
_IMG_PARAMS = 40
_TEX_PAD = 16


class _Identity:
    """Per-identity parameters, each (B, 1, 1) float32 (or (B, 1, 1, 3) colours)."""

    def __init__(self, u: np.ndarray) -> None:
        c = lambda x: x[:, None, None].astype(np.float32)  # noqa: E731
        self.head_a, self.head_b = c(_lerp(u[:, 0], 33, 41)), c(_lerp(u[:, 1], 44, 54))
        self.head_cy = c(_lerp(u[:, 2], 58, 65))
        tone = 0.25 + 0.5 * u[:, 3:4]
        warmth = _lerp(u[:, 4], -0.06, 0.06)[:, None] * np.array([1.0, 0.0, -1.0])
        self.skin = (_SKIN_DARK + (_SKIN_LIGHT - _SKIN_DARK) * tone + warmth).astype(np.float32)
        hair = _HAIR[(u[:, 5] * len(_HAIR)).astype(int)] * _lerp(u[:, 6], 0.7, 1.3)[:, None]
        self.hair = np.clip(hair, 0, 1).astype(np.float32)
        self.hairline = c(_lerp(u[:, 7], 14, 36))  # v of the forehead hairline
        self.hair_scale = c(_lerp(u[:, 8], 1.02, 1.22))
        self.hair_side = c(_lerp(u[:, 9], 52, 84))  # how far down the sides the hair reaches
        self.eye_dx = c(_lerp(u[:, 10], -3.0, 3.0))  # half-spacing change (px)
        self.eye_dy = c(_lerp(u[:, 11], -3.0, 3.0))
        self.eye_w, self.eye_h = c(_lerp(u[:, 12], 5.0, 8.0)), c(_lerp(u[:, 13], 2.2, 3.8))
        self.iris_r = c(_lerp(u[:, 14], 1.8, 3.2))
        self.iris = _IRIS[(u[:, 15] * len(_IRIS)).astype(int)].astype(np.float32)
        self.brow_dy, self.brow_w = c(_lerp(u[:, 16], 6.5, 11.0)), c(_lerp(u[:, 17], 6.0, 9.5))
        self.brow_h, self.brow_tilt = c(_lerp(u[:, 18], 0.9, 2.4)), c(_lerp(u[:, 19], -0.25, 0.25))
        self.nose_w, self.nose_len = c(_lerp(u[:, 20], 3.5, 7.5)), c(_lerp(u[:, 21], 9.0, 17.0))
        self.nose_dy = c(_lerp(u[:, 22], -3.0, 3.0))
        self.mouth_w, self.mouth_dy = c(_lerp(u[:, 23], 10.0, 16.0)), c(_lerp(u[:, 24], -3.0, 3.0))
        self.lip_h = c(_lerp(u[:, 25], 1.4, 3.6))
        lip = self.skin * np.array([0.85, 0.55, 0.55]) + _lerp(u[:, 26], 0.0, 0.15)[:, None] * np.array([1, 0, 0])
        self.lip = np.clip(lip, 0, 1).astype(np.float32)
        self.texture_amp = c(_lerp(u[:, 27], 0.8, 1.2))
        self.jaw = c(_lerp(u[:, 28], 0.0, 0.35))  # narrows the lower face


class _Nuisance:
    """Per-image nuisance parameters."""

    def __init__(self, u: np.ndarray) -> None:
        c = lambda x: x[:, None, None].astype(np.float32)  # noqa: E731
        self.angle = _lerp(u[:, 0], -0.05, 0.05)  # radians (~ +-3 deg)
        self.scale = _lerp(u[:, 1], 0.96, 1.04)
        self.tx, self.ty = _lerp(u[:, 2], -1.0, 1.0), _lerp(u[:, 3], -1.0, 1.0)
        phi = _lerp(u[:, 4], 0, 2 * np.pi)
        strength = _lerp(u[:, 5], 0.0, 0.8)
        self.light = np.stack([np.cos(phi) * strength, np.sin(phi) * strength], 1).astype(np.float32)
        self.gain = c(_lerp(u[:, 6], 0.6, 1.25))
        self.cast = (1 + _lerp(u[:, 7], -0.12, 0.12)[:, None] * np.array([1.0, 0.0, -1.0])).astype(np.float32)
        self.mouth_open, self.smile = c(_lerp(u[:, 8], -0.6, 1.0).clip(0, 1)), c(_lerp(u[:, 9], -0.1, 0.1))
        self.eye_open = c(np.where(u[:, 10] < 0.07, 0.25, _lerp(u[:, 11], 0.7, 1.1)))
        self.gaze = c(_lerp(u[:, 12], -1.2, 1.2))
        self.glasses = u[:, 13] < 0.15
        self.glasses_colour = _lerp(u[:, 14], 0.02, 0.5)
        self.occlude = u[:, 15] < 0.10
        self.occ_box = u[:, 16:20]
        self.occ_colour = _lerp(u[:, 20:23], 0.1, 0.9)
        self.bg = _lerp(u[:, 23:26], 0.05, 0.95)
        self.bg_grad = _lerp(u[:, 26:28], -0.004, 0.004)
        self.blur = np.where(u[:, 28] < 0.25, _lerp(u[:, 29], 0.4, 1.3), 0.0)
        self.noise = _lerp(u[:, 30], 0.0, 0.04)
        self.noise_pick = (u[:, 31] * 1e6).astype(np.int64)
        self.jpeg = np.where(u[:, 32] < 0.3, _lerp(u[:, 33], 25, 90), 0).astype(int)


def _soft(r2: np.ndarray, k: np.ndarray | float) -> np.ndarray:
    """Soft inside-mask of an ellipse from its normalised radius^2: 1 inside, ramps to 0 at r2 = 1."""
    out = np.subtract(1.0, r2, dtype=np.float32)
    out *= k
    return np.clip(out, 0.0, 1.0, out=out)


def _blend(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """In place: img (3, B, h, w) <- img + alpha (B, h, w) * (colour - img); colour (B, 3) or (3, B, h, w)."""
    for ch in range(3):
        col = colour[:, ch, None, None] if colour.ndim == 2 else colour[ch]
        plane = img[ch]
        plane += alpha * (col - plane)


class SynthFace:
    """Seeded generator of synthetic face identities.

    Args:
        seed: every image is a pure function of (seed, identity, image).
        texture_cache: number of identity textures (112x112 float16 each) kept between calls.
        batch: images rendered per vectorised chunk (cache-friendly size).
    """

    def __init__(self, seed: int = 0, texture_cache: int = 4096, batch: int = 16) -> None:
        self.seed = int(seed)
        self.batch = int(batch)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = texture_cache
        rng = np.random.default_rng([self.seed, 0x5EED])
        self._noise_bank = rng.standard_normal((16, 3, SIZE + 8, SIZE + 8)).astype(np.float32)
        grid = np.arange(SIZE, dtype=np.float32) + 0.5
        self._gx, self._gy = grid[None, None, :], grid[None, :, None]

    # ------------------------------------------------------------------------------ parameters
    def identity_params(self, identity_ids: np.ndarray) -> np.ndarray:
        """(B, 40) uniforms that define each identity (the 'face code'); useful for diagnostics."""
        ids = np.asarray(identity_ids, dtype=np.int64)
        return hash_uniform(self.seed, ids, np.zeros_like(ids), 1, _ID_PARAMS)

    def _textures(self, identity_ids: np.ndarray) -> np.ndarray:
        """(B, 112*112) float16 identity fine texture: band-pass freckles (2.5-6 px) plus moles."""
        out = np.empty((len(identity_ids), SIZE * SIZE), np.float16)
        missing = sorted({int(i) for i in identity_ids if int(i) not in self._cache})
        if missing:
            for ident, tex in zip(missing, self._make_textures(np.array(missing)), strict=True):
                self._cache[ident] = tex
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        made = {}
        for row, ident in enumerate(identity_ids):
            ident = int(ident)
            tex = self._cache.get(ident)
            if tex is None:  # evicted within this call (batch larger than the cache)
                tex = made.get(ident)
                if tex is None:
                    tex = made[ident] = self._make_textures(np.array([ident]))[0]
            else:
                self._cache.move_to_end(ident)
            out[row] = tex
        return out

    def _make_textures(self, ids: np.ndarray) -> np.ndarray:
        n = len(ids)
        noise = np.empty((n, SIZE, SIZE), np.float32)
        for i, ident in enumerate(ids):
            noise[i] = np.random.default_rng([self.seed, int(ident), 0x7E]).standard_normal((SIZE, SIZE))
        spec = np.fft.rfft2(noise)
        fy = np.fft.fftfreq(SIZE)[:, None]
        fx = np.fft.rfftfreq(SIZE)[None, :]
        f = np.sqrt(fx**2 + fy**2)
        band = ((f >= 1 / 8.0) & (f <= 1 / 3.5)).astype(np.float32)
        tex = np.fft.irfft2(spec * band, s=(SIZE, SIZE)).astype(np.float32)
        tex /= tex.std(axis=(1, 2), keepdims=True) + 1e-6
        # moles: 3-9 dark spots of radius 0.8-1.8 px inside the face area
        u = hash_uniform(self.seed, ids, np.zeros_like(ids), 2, 1 + 9 * 4)
        yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
        for i in range(n):
            count = 3 + int(u[i, 0] * 7)
            for m in range(count):
                cx, cy = 30 + 52 * u[i, 1 + 4 * m], 40 + 60 * u[i, 2 + 4 * m]
                r, depth = 1.2 + 1.2 * u[i, 3 + 4 * m], 3 + 3 * u[i, 4 + 4 * m]
                d2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / (r * r)
                tex[i] -= depth * np.clip(1.5 - d2, 0, 1)
        return tex.reshape(n, -1).astype(np.float16)

    # ------------------------------------------------------------------------------ rendering
    def render(self, identity_ids: Sequence[int] | np.ndarray, image_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Render images: identity ``identity_ids[k]``, nuisance draw ``image_ids[k]``.

        Args:
            identity_ids, image_ids: (N,) non-negative ints (same length).
        Returns:
            (N, 112, 112, 3) uint8 RGB, faces aligned to :data:`ARCFACE_TEMPLATE` up to the pose jitter.
        """
        ids = np.asarray(identity_ids, dtype=np.int64).reshape(-1)
        imgs = np.asarray(image_ids, dtype=np.int64).reshape(-1)
        if ids.shape != imgs.shape:
            raise ValueError(f"render: identity_ids {ids.shape} and image_ids {imgs.shape} must have the same length")
        if ids.size and (ids.min() < 0 or imgs.min() < 0):
            raise ValueError("render: identity_ids and image_ids must be non-negative")
        out = np.empty((ids.size, SIZE, SIZE, 3), np.uint8)
        for start in range(0, ids.size, self.batch):
            sl = slice(start, start + self.batch)
            out[sl] = self._render_batch(ids[sl], imgs[sl])
        return out

    def render_grid(self, num_identities: int, images_per_identity: int, first_identity: int = 0) -> np.ndarray:
        """(num_identities * images_per_identity, 112, 112, 3) uint8, identity-major order."""
        ids = np.repeat(np.arange(first_identity, first_identity + num_identities), images_per_identity)
        return self.render(ids, np.tile(np.arange(images_per_identity), num_identities))

    def _render_batch(self, ids: np.ndarray, imgs: np.ndarray) -> np.ndarray:
        b = ids.size
        idp = _Identity(self.identity_params(ids))
        nz = _Nuisance(hash_uniform(self.seed, ids, imgs, 3, _IMG_PARAMS))
        # gain and colour cast act on every colour: fold them in once (values in 0..255 from here)
        light = (nz.cast * nz.gain[:, 0, 0, None] * 255).astype(np.float32)
        for name in ("skin", "hair", "iris", "lip"):
            setattr(idp, name, getattr(idp, name) * light)
        nz.glasses_colour = nz.glasses_colour[:, None] * light
        nz.occ_colour = nz.occ_colour * light
        self._light = light
        # inverse pose: output pixel (x, y) -> canonical face coordinates (u, v)
        c = SIZE / 2
        cos, sin = np.cos(nz.angle) / nz.scale, np.sin(nz.angle) / nz.scale
        self._pose = (cos[:, None, None], sin[:, None, None], (c - nz.tx)[:, None, None], (c - nz.ty)[:, None, None])

        img = np.empty((3, b, SIZE, SIZE), np.float32)
        ramp = nz.bg_grad[:, 0, None, None] * (self._gx - c) + nz.bg_grad[:, 1, None, None] * (self._gy - c)
        ramp += 1
        bg = nz.bg * light
        for ch in range(3):
            np.multiply(ramp, bg[:, ch, None, None], out=img[ch])

        u, v = self._warp(0, 0, SIZE, SIZE)
        # hair mass behind the head, down to hair_side
        hx = u - c
        hx *= 1 / (idp.head_a * idp.hair_scale)
        hy = v - idp.head_cy + 4
        hy *= 1 / (idp.head_b * idp.hair_scale)
        hx *= hx
        hy *= hy
        hx += hy
        hair_alpha = _soft(hx, 8.0)
        side = idp.hair_side - v
        side *= 0.3
        hair_alpha *= np.clip(side, 0, 1, out=side)
        _blend(img, hair_alpha, idp.hair)
        # face oval, narrower towards the jaw; hair covers the forehead above the hairline
        du = u - c
        du *= 1 / idp.head_a
        dv = v - idp.head_cy
        dv *= 1 / idp.head_b
        jaw = np.maximum(dv, 0)
        jaw *= idp.jaw
        jaw += 1
        du *= jaw
        r2 = du * du
        r2 += dv * dv
        face = _soft(r2, 12.0)
        below = v - idp.hairline
        below *= 0.5
        face *= np.clip(below, 0, 1, out=below)
        _blend(img, face, idp.skin)
        # shading: sphere-like normal lit from the per-image direction, times the identity texture
        shade = np.subtract(1.0, r2, out=r2)
        np.maximum(shade, 0, out=shade)
        np.sqrt(shade, out=shade)
        shade *= 0.35
        du *= nz.light[:, 0, None, None] * 0.5
        dv *= nz.light[:, 1, None, None] * 0.5
        shade += du
        shade += dv
        shade += self._texture_field(ids, u, v) * (idp.texture_amp * 0.25) - 0.25
        shade *= face
        shade += 1

        self._features(img, idp, nz)
        img *= shade[None]
        self._occluders(img, nz)
        noise = self._noise_bank[nz.noise_pick % len(self._noise_bank)]
        off = nz.noise_pick % 8
        for k in range(b):
            o = off[k]
            img[:, k] += noise[k, :, o : o + SIZE, o : o + SIZE] * (nz.noise[k] * 255)
        np.clip(img, 0, 255, out=img)
        out = np.empty((b, SIZE, SIZE, 3), np.uint8)
        for ch in range(3):
            out[..., ch] = img[ch]
        return self._camera(out, nz)

    def _texture_field(self, ids: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(B, H, W) identity texture sampled (nearest) at canonical coordinates (u, v)."""
        b = ids.size
        tex = self._textures(ids).reshape(b, SIZE, SIZE)
        pad = _TEX_PAD
        padded = np.zeros((b, SIZE + 2 * pad, SIZE + 2 * pad), np.float16)
        padded[:, pad:-pad, pad:-pad] = tex
        width = SIZE + 2 * pad
        iv = np.add(v, pad).astype(np.int32)
        np.clip(iv, 0, width - 1, out=iv)
        iu = np.add(u, pad).astype(np.int32)
        np.clip(iu, 0, width - 1, out=iu)
        iv *= width
        iv += iu
        iv += (np.arange(b, dtype=np.int32) * (width * width))[:, None, None]
        return padded.ravel().take(iv).astype(np.float32)

    def _warp(self, x0: int, y0: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        """Canonical (u, v), each (B, h, w), of output pixels [y0:y0+h, x0:x0+w]."""
        cos, sin, cx, cy = self._pose
        x = self._gx[:, :, x0 : x0 + w] - cx
        y = self._gy[:, y0 : y0 + h, :] - cy
        c = SIZE / 2
        return cos * x + sin * y + c, cos * y - sin * x + c

    def _features(self, img: np.ndarray, idp: _Identity, nz: _Nuisance) -> None:
        """Eyes, brows, glasses, nose, mouth, each in a window around its template landmark.

        Windows are copied out contiguously (blending on strided views is ~3x slower) and back.
        """
        t = ARCFACE_TEMPLATE
        for side, (ex, ey) in ((-1, t[0]), (1, t[1])):
            x0, y0, w, h = int(ex) - 17, int(ey) - 24, 34, 40
            sub = np.ascontiguousarray(img[:, :, y0 : y0 + h, x0 : x0 + w])
            u, v = self._warp(x0, y0, w, h)
            u -= ex + side * idp.eye_dx  # eye-centred coordinates from here
            v -= ey + idp.eye_dy
            # brow (tilted bar above the eye)
            bu = u / idp.brow_w
            bv = (v + idp.brow_dy - side * idp.brow_tilt * u) / idp.brow_h
            _blend(sub, _soft(bu * bu + bv * bv, 2.0) * 0.9, idp.hair * 0.6)
            eh = idp.eye_h * nz.eye_open
            lid_u, lid_v = u / (idp.eye_w + 1.2), (v + 0.3) / (eh + 1.0)
            _blend(sub, _soft(lid_u * lid_u + lid_v * lid_v, 3.0) * 0.8, idp.skin * 0.35)
            eu, ev = u / idp.eye_w, v / eh
            white = _soft(eu * eu + ev * ev, 3.0)
            _blend(sub, white, self._light * 0.92)
            iu, iv = (u - nz.gaze) / idp.iris_r, v / idp.iris_r
            ir2 = iu * iu + iv * iv
            _blend(sub, _soft(ir2, 2.5) * white, idp.iris)
            _blend(sub, _soft(ir2 * 4.0, 2.0) * white, self._light * 0.03)
            g = np.flatnonzero(nz.glasses)
            if g.size:
                gr = np.sqrt(u[g] ** 2 + (v[g] * 1.3) ** 2)
                ring = np.clip(1.6 - np.abs(gr - 12.0), 0, 1)
                part = sub[:, g]
                _blend(part, ring, nz.glasses_colour[g])
                sub[:, g] = part
            img[:, :, y0 : y0 + h, x0 : x0 + w] = sub
        # nose: shadowed ridge, lighter tip, two nostrils
        nx, ny = t[2]
        x0, y0, w, h = int(nx) - 16, int(ny) - 26, 32, 38
        sub = np.ascontiguousarray(img[:, :, y0 : y0 + h, x0 : x0 + w])
        u, v = self._warp(x0, y0, w, h)
        u -= nx
        v -= ny + idp.nose_dy  # tip-centred
        ru = (u - 1.5 * nz.light[:, 0, None, None]) / (idp.nose_w * 0.6)
        rv = (v + idp.nose_len / 2) / (idp.nose_len / 2)
        _blend(sub, _soft(ru * ru + rv * rv, 1.5) * 0.35, idp.skin * 0.55)
        tu, tv = u / idp.nose_w, v / (idp.nose_w * 0.6)
        _blend(sub, _soft(tu * tu + tv * tv, 1.5) * 0.35, idp.skin * 1.2)
        sv = (v - 2.5) / 1.1
        sv *= sv
        for side in (-1, 1):
            su = (u - side * idp.nose_w * 0.55) / 1.8
            _blend(sub, _soft(su * su + sv, 2.0) * 0.9, idp.skin * 0.25)
        img[:, :, y0 : y0 + h, x0 : x0 + w] = sub
        # mouth: lips, smile curve, open interior
        mx = (t[3, 0] + t[4, 0]) / 2
        my = (t[3, 1] + t[4, 1]) / 2
        x0, y0, w, h = int(mx) - 24, int(my) - 14, 48, 28
        sub = np.ascontiguousarray(img[:, :, y0 : y0 + h, x0 : x0 + w])
        u, v = self._warp(x0, y0, w, h)
        du = u - mx
        dv = v - (my + idp.mouth_dy) + nz.smile * du * du * 0.1
        lu, lv = du / idp.mouth_w, dv / (idp.lip_h + nz.mouth_open * 2.5)
        _blend(sub, _soft(lu * lu + lv * lv, 2.5), idp.lip)
        ou, ov = du / (idp.mouth_w * 0.8), dv / (0.4 + nz.mouth_open * 2.2)
        _blend(sub, _soft(ou * ou + ov * ov, 2.0), self._light * np.array([0.15, 0.05, 0.05], np.float32))
        img[:, :, y0 : y0 + h, x0 : x0 + w] = sub

    def _occluders(self, img: np.ndarray, nz: _Nuisance) -> None:
        """Occasional flat-coloured rectangles (hands, masks, objects) over part of the face."""
        for k in np.flatnonzero(nz.occlude):
            bx = nz.occ_box[k]
            x0, y0 = int(10 + 70 * bx[0]), int(50 + 50 * bx[1])
            x1, y1 = min(SIZE, x0 + int(20 + 40 * bx[2])), min(SIZE, y0 + int(15 + 30 * bx[3]))
            img[:, k, y0:y1, x0:x1] = nz.occ_colour[k][:, None, None]

    @staticmethod
    def _camera(out: np.ndarray, nz: _Nuisance) -> np.ndarray:
        """Per-image optical blur and JPEG (OpenCV), in place."""
        for k in np.flatnonzero(nz.blur > 0):
            cv2.GaussianBlur(out[k], (0, 0), float(nz.blur[k]), dst=out[k])
        for k in np.flatnonzero(nz.jpeg):
            ok, buf = cv2.imencode(".jpg", out[k], [cv2.IMWRITE_JPEG_QUALITY, int(nz.jpeg[k])])
            out[k] = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        return out


def verification_pairs(
    num_identities: int, num_pairs: int, first_identity: int, images_per_identity: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alternating same/different SynthFace pairs: (identities (P, 2), image ids (P, 2), issame (P,))."""
    rng = np.random.default_rng(seed)
    ids = np.empty((num_pairs, 2), np.int64)
    imgs = rng.integers(0, images_per_identity, (num_pairs, 2))
    issame = np.arange(num_pairs) % 2 == 0
    ids[:, 0] = first_identity + rng.integers(0, num_identities, num_pairs)
    other = first_identity + (ids[:, 0] - first_identity + rng.integers(1, num_identities, num_pairs)) % num_identities
    ids[:, 1] = np.where(issame, ids[:, 0], other)
    same_img = issame & (imgs[:, 0] == imgs[:, 1])
    imgs[same_img, 1] = (imgs[same_img, 1] + 1) % images_per_identity
    return ids, imgs, issame
