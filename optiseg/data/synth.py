"""A synthetic conveyor-belt data set: one box-like package per image, seen from above or from the side.

Each image is a small rendering: a textured modular belt between two metal
rails, seen through a pinhole camera (top view or oblique side view), and a
cuboid package on it with shaded faces, a coloured print band, a printed
label with a barcode and a strip of tape, its shadow, and varied lighting,
colour cast and sensor noise. The mask comes from the same geometry, so it is
exact. Classes (``classes=C`` keeps the first C; finer parts fall back to the
part they lie on): 0 background, 1 package, 2 label, 3 tape, 4 barcode, 5 rail.
Two classes give 0/255 masks (like the thesis's data), more give index masks.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..config import SYNTHETIC_CLASSES
from ..errors import UsageError
from ._layout import SPLITS
from .._paths import output_problem, read_regular, shown

MARKER = "optiseg-synthetic.json"
DEFAULT_SIZE = (480, 270)  # width, height
SPLIT_FRACTIONS = (0.75, 0.10, 0.15)
BACKGROUND, PACKAGE, LABEL, TAPE, BARCODE, RAIL = range(6)
# With fewer classes a part is painted as the part it lies on (barcode -> label -> package; rail -> background).
_FALLBACK = {PACKAGE: PACKAGE, LABEL: PACKAGE, TAPE: PACKAGE, BARCODE: LABEL, RAIL: BACKGROUND}
_TEXELS_PER_UNIT = 48  # face texture resolution


@dataclass(frozen=True)
class SynthSpec:
    """What a synthetic data set was generated with (written to ``optiseg-synthetic.json`` in its folder)."""

    n: int
    classes: int
    seed: int
    width: int
    height: int

    def to_dict(self) -> dict[str, int]:
        return {"n": self.n, "classes": self.classes, "seed": self.seed, "width": self.width, "height": self.height}


def generate_synthetic(
    out: str | os.PathLike,
    n: int = 200,
    classes: int = 2,
    *,
    seed: int = 0,
    size: tuple[int, int] = DEFAULT_SIZE,
) -> Path:
    """Write ``n`` images and masks into ``out/{train,val,test}/{images,masks}`` (75/10/15) and return ``out``.

    ``size`` is (width, height). The folder appears complete or not at all:
    images are written to a temporary sibling folder renamed at the end.
    ``out`` must not exist, or be an empty folder.
    """
    out = Path(out)
    spec = SynthSpec(n=n, classes=classes, seed=seed, width=size[0], height=size[1])
    _validate(out, spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        names = _split_names(n)
        for split in SPLITS:
            (tmp / split / "images").mkdir(parents=True)
            (tmp / split / "masks").mkdir(parents=True)
        for index, split in enumerate(names):
            image, mask = render_scene(np.random.default_rng([seed, index]), spec.width, spec.height, classes)
            stem = f"{index:05d}_{'top' if index % 2 == 0 else 'side'}"
            cv2.imwrite(str(tmp / split / "images" / f"{stem}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            cv2.imwrite(str(tmp / split / "masks" / f"{stem}.png"), mask * 255 if classes == 2 else mask)
        (tmp / MARKER).write_text(json.dumps(spec.to_dict(), indent=2) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty, checked by _validate
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_spec(root: Path) -> SynthSpec | None:
    """The spec a synthetic data set at ``root`` was generated with, or None if it is not one."""
    try:
        return SynthSpec(**json.loads(read_regular(root / MARKER).decode("utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _validate(out: Path, spec: SynthSpec) -> None:
    problem = output_problem(out, "folder")
    if problem is not None:
        raise UsageError(f"cannot write the data set there: {problem}", hint="choose a new folder")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"{shown(str(out))} already exists and is not an empty folder", hint="choose a new folder, or delete this one")
    if spec.n < 3:
        raise UsageError(f"--n {spec.n} is too small: train, val and test need at least one image each (use >= 20)")
    if not 2 <= spec.classes <= len(SYNTHETIC_CLASSES):
        names = ", ".join(f"{i + 1}: +{name}" for i, name in enumerate(SYNTHETIC_CLASSES) if i >= 1)
        raise UsageError(f"--classes {spec.classes} is invalid: use 2..{len(SYNTHETIC_CLASSES)} ({names})")
    if not (64 <= spec.width <= 4096 and 64 <= spec.height <= 4096):
        raise UsageError(f"--size {spec.width}x{spec.height} is invalid: width and height must be 64..4096 pixels")


def _split_names(n: int) -> list[str]:
    n_val = max(1, round(n * SPLIT_FRACTIONS[1]))
    n_test = max(1, round(n * SPLIT_FRACTIONS[2]))
    n_train = n - n_val - n_test
    order = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    # Interleave deterministically so every split gets top and side views alike.
    return [order[i] for i in np.random.default_rng(12345).permutation(n)]


# ---------------------------------------------------------------- rendering


def render_scene(rng: np.random.Generator, width: int, height: int, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """One RGB uint8 image (H, W, 3) and its class-index mask (H, W) with ``classes`` classes."""
    camera = _Camera.random(rng, width, height, top_view=bool(rng.random() < 0.5))
    light = _unit(np.array([rng.uniform(-1, 1), rng.uniform(-1, 0.3), rng.uniform(0.8, 2.0)]))
    image = np.zeros((height, width, 3), np.float32)
    labels = np.zeros((height, width), np.uint8)

    belt_half_width = 1.6
    _draw_plane(image, camera, _belt_texture(rng), (-6.0, 6.0), (-belt_half_width, belt_half_width), offset=rng.uniform(0, 1))
    for side in (-1, 1):
        y0 = side * belt_half_width
        rail = (-6.0, 6.0), tuple(sorted((y0, y0 + side * 0.25)))
        _draw_plane(image, camera, _metal_texture(rng), rail[0], rail[1], labels=labels, label=RAIL)

    box = _Box.random(rng, belt_half_width)
    _draw_shadow(image, camera, box, light, rng)
    for face in box.visible_faces(camera):
        texture, texture_labels = box.face_texture(face, rng)
        shade = 0.45 + 0.55 * max(0.0, float(face.normal @ light))
        _paste(image, labels, camera, face.corners, texture * shade, texture_labels)

    image = _lighting(image, rng)
    return image, _fold_classes(labels, classes)


@dataclass(frozen=True)
class _Camera:
    rotation: np.ndarray  # rows: right, down, forward
    position: np.ndarray
    focal: float
    centre: tuple[float, float]

    @classmethod
    def random(cls, rng: np.random.Generator, width: int, height: int, top_view: bool) -> "_Camera":
        elevation = np.radians(rng.uniform(78, 88) if top_view else rng.uniform(25, 45))
        azimuth = np.radians(rng.uniform(-8, 8))
        distance = rng.uniform(5.5, 7.0)
        position = distance * np.array([np.sin(azimuth) * np.cos(elevation), -np.cos(azimuth) * np.cos(elevation), np.sin(elevation)])
        forward = _unit(-position)
        right = _unit(np.cross(forward, [0.0, 0.0, 1.0]))
        down = np.cross(forward, right)
        return cls(np.stack([right, down, forward]), position, focal=width * rng.uniform(1.0, 1.25), centre=(width / 2, height / 2))

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> pixel coordinates (N, 2)."""
        cam = (points - self.position) @ self.rotation.T
        return np.stack([self.focal * cam[:, 0] / cam[:, 2] + self.centre[0], self.focal * cam[:, 1] / cam[:, 2] + self.centre[1]], axis=1)


@dataclass(frozen=True)
class _Face:
    corners: np.ndarray  # (4, 3) world points, in texture order: (0,0), (w,0), (w,h), (0,h)
    normal: np.ndarray
    name: str
    extent: tuple[float, float]  # (u length, v length) in world units


@dataclass(frozen=True)
class _Box:
    centre: np.ndarray
    size: np.ndarray  # length, depth, height
    yaw: float
    base_colour: np.ndarray
    band_colour: np.ndarray
    band_at: float  # where the print band starts along the length, 0..1
    has_tape: bool

    @classmethod
    def random(cls, rng: np.random.Generator, belt_half_width: float) -> "_Box":
        size = np.array([rng.uniform(1.0, 2.0), rng.uniform(0.6, 1.1), rng.uniform(0.35, 0.9)])
        cardboard = rng.random() < 0.4
        base = np.array([0.62, 0.48, 0.32]) * rng.uniform(0.85, 1.1) if cardboard else np.full(3, rng.uniform(0.85, 0.97))
        band = rng.dirichlet(np.ones(3)) * rng.uniform(0.9, 1.4)
        centre = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-belt_half_width + 0.9, belt_half_width - 0.9), 0.0])
        return cls(centre, size, float(rng.uniform(-np.pi, np.pi)), base, np.clip(band, 0.1, 1.0), float(rng.uniform(0.55, 0.8)), bool(rng.random() < 0.6 or cardboard))

    def _corner(self, sx: float, sy: float, sz: float) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        x, y = sx * self.size[0] / 2, sy * self.size[1] / 2
        return self.centre + np.array([c * x - s * y, s * x + c * y, sz * self.size[2]])

    def faces(self) -> list[_Face]:
        p = self._corner
        length, depth, height = self.size
        quads = {
            "top": ([p(-1, -1, 1), p(1, -1, 1), p(1, 1, 1), p(-1, 1, 1)], (length, depth)),
            "front": ([p(-1, -1, 1), p(1, -1, 1), p(1, -1, 0), p(-1, -1, 0)], (length, height)),
            "back": ([p(1, 1, 1), p(-1, 1, 1), p(-1, 1, 0), p(1, 1, 0)], (length, height)),
            "left": ([p(-1, 1, 1), p(-1, -1, 1), p(-1, -1, 0), p(-1, 1, 0)], (depth, height)),
            "right": ([p(1, -1, 1), p(1, 1, 1), p(1, 1, 0), p(1, -1, 0)], (depth, height)),
        }
        faces = []
        for name, (corners, extent) in quads.items():
            corners = np.array(corners)
            normal = _unit(np.cross(corners[1] - corners[0], corners[3] - corners[0]))
            if normal @ (corners.mean(axis=0) - self.centre) < 0:
                normal = -normal
            faces.append(_Face(corners, normal, name, extent))
        return faces

    def visible_faces(self, camera: _Camera) -> list[_Face]:
        return [f for f in self.faces() if f.normal @ (camera.position - f.corners.mean(axis=0)) > 1e-6]

    def face_texture(self, face: _Face, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The face's colours (float RGB 0..1) and part labels, in texture space."""
        w = max(8, int(face.extent[0] * _TEXELS_PER_UNIT))
        h = max(8, int(face.extent[1] * _TEXELS_PER_UNIT))
        texture = np.empty((h, w, 3), np.float32)
        texture[:] = self.base_colour
        texture += rng.normal(0, 0.015, (h, w, 1)).astype(np.float32)
        labels = np.full((h, w), PACKAGE, np.uint8)
        if face.name in ("top", "front", "back"):
            texture[:, int(self.band_at * w):] = self.band_colour
        elif face.name == "right":
            texture[:] = self.band_colour
        if face.name == "top":
            if self.has_tape:
                band = slice(int(h * 0.44), int(h * 0.56))
                texture[band] = texture[band] * 0.55 + np.array([0.75, 0.62, 0.40], np.float32) * 0.45
                labels[band] = TAPE
            _print_label(texture, labels, rng, self.band_at)  # printed over the tape
        return np.clip(texture, 0, 1), labels


def _print_label(texture: np.ndarray, labels: np.ndarray, rng: np.random.Generator, band_at: float) -> None:
    h, w = labels.shape
    x0, x1 = int(w * rng.uniform(0.06, 0.12)), int(w * (band_at - rng.uniform(0.04, 0.1)))
    y0, y1 = int(h * rng.uniform(0.08, 0.2)), int(h * rng.uniform(0.65, 0.9))
    if x1 - x0 < 6 or y1 - y0 < 6:
        return
    texture[y0:y1, x0:x1] = 0.96
    labels[y0:y1, x0:x1] = LABEL
    for line in range(int(rng.integers(2, 5))):  # lines of "text"
        ty = y0 + 2 + line * max(2, (y1 - y0) // 8)
        tx1 = x0 + int((x1 - x0) * rng.uniform(0.3, 0.9))
        if ty + 1 < y1:
            texture[ty : ty + 1, x0 + 2 : tx1] = 0.15
    by0, bx0 = y0 + (y1 - y0) // 2, x0 + 2
    bx1 = x0 + max(4, int((x1 - x0) * 0.7))
    if by0 + 3 < y1 - 1:
        bars = rng.random(bx1 - bx0) < 0.5
        texture[by0 : y1 - 2, bx0:bx1][:, bars] = 0.05
        labels[by0 : y1 - 2, bx0:bx1] = BARCODE


def _belt_texture(rng: np.random.Generator) -> np.ndarray:
    """A modular plastic belt: rows of links with dark gaps, tiled along the belt."""
    grey = rng.uniform(0.45, 0.8)
    pitch, width = 24, 96
    tile = np.full((pitch, width, 3), grey, np.float32)
    tile[: pitch // 5] *= 0.35  # gap between rows of links
    for x in range(0, width, 16):
        tile[:, x : x + 2] *= 0.55
    tile[pitch // 5 : pitch // 5 + 3] *= 1.2  # highlight on the link edge
    texture = np.tile(tile, (12, 8, 1)) + rng.normal(0, 0.02, (pitch * 12, width * 8, 1)).astype(np.float32)
    return np.clip(texture.transpose(1, 0, 2), 0, 1)  # rows of links run across the belt


def _metal_texture(rng: np.random.Generator) -> np.ndarray:
    shine = rng.uniform(0.55, 0.85)
    ramp = np.linspace(0.75, 1.05, 16, dtype=np.float32)[:, None, None]
    return np.clip(np.ones((16, 256, 3), np.float32) * shine * ramp, 0, 1)


def _draw_plane(
    image: np.ndarray,
    camera: _Camera,
    texture: np.ndarray,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    *,
    offset: float = 0.0,
    labels: np.ndarray | None = None,
    label: int = BACKGROUND,
) -> None:
    (x0, x1), (y0, y1) = x_range, y_range
    corners = np.array([[x0 + offset, y0, 0], [x1 + offset, y0, 0], [x1 + offset, y1, 0], [x0 + offset, y1, 0]])
    _paste(image, labels, camera, corners, texture, np.full(texture.shape[:2], label, np.uint8) if labels is not None else None)


def _paste(
    image: np.ndarray,
    labels: np.ndarray | None,
    camera: _Camera,
    corners: np.ndarray,
    texture: np.ndarray,
    texture_labels: np.ndarray | None,
) -> None:
    """Warp a texture (and its labels) onto the quad ``corners`` projects to; nearest neighbour for labels."""
    height, width = image.shape[:2]
    th, tw = texture.shape[:2]
    source = np.float32([[0, 0], [tw, 0], [tw, th], [0, th]])
    target = camera.project(corners).astype(np.float32)
    matrix = cv2.getPerspectiveTransform(source, target)
    warped = cv2.warpPerspective(texture, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    cover = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(cover, np.round(target * 16).astype(np.int32), 1, lineType=cv2.LINE_8, shift=4)
    inside = cover.astype(bool)
    image[inside] = warped[inside]
    if labels is not None and texture_labels is not None:
        warped_labels = cv2.warpPerspective(texture_labels, matrix, (width, height), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        labels[inside] = warped_labels[inside]


def _draw_shadow(image: np.ndarray, camera: _Camera, box: _Box, light: np.ndarray, rng: np.random.Generator) -> None:
    footprint = np.array([box._corner(sx, sy, 0) for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
    reach = -light[:2] / max(light[2], 0.3) * box.size[2]
    shifted = footprint + np.array([reach[0], reach[1], 0.0])
    points = camera.project(np.concatenate([footprint, shifted]))
    hull = cv2.convexHull(points.astype(np.float32)).astype(np.int32)
    shadow = np.zeros(image.shape[:2], np.float32)
    cv2.fillConvexPoly(shadow, hull, 1.0)
    blur = max(3, int(image.shape[1] * 0.02) | 1)
    shadow = cv2.GaussianBlur(shadow, (blur, blur), 0)
    image *= (1 - rng.uniform(0.3, 0.55) * shadow)[..., None]


def _lighting(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness gradient, colour cast, exposure and sensor noise; returns uint8 RGB."""
    height, width = image.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(angle) * xs / width + np.sin(angle) * ys / height).astype(np.float32)
    gain = 1 + rng.uniform(0.1, 0.4) * (ramp - ramp.mean())
    cast = np.array([1.0, 1.0, 1.0]) + rng.normal(0, 0.04, 3)
    exposure = rng.uniform(0.75, 1.2)
    lit = image * gain[..., None] * cast.astype(np.float32) * exposure
    lit += rng.normal(0, rng.uniform(0.005, 0.025), lit.shape).astype(np.float32)
    return (np.clip(lit, 0, 1) * 255 + 0.5).astype(np.uint8)


def _fold_classes(labels: np.ndarray, classes: int) -> np.ndarray:
    table = np.arange(len(SYNTHETIC_CLASSES), dtype=np.uint8)
    while table.max() >= classes:
        table = np.array([c if c < classes else _FALLBACK[c] for c in table], np.uint8)
    return table[labels]


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64)
    return vector / np.linalg.norm(vector)
