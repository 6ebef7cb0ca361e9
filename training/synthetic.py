"""A deterministic synthetic image-aesthetics dataset with comments (`aesformer make-dataset`).

The generator writes a folder in the project's generic dataset format (`metadata.csv` + `dataset.json` + `images/`):
procedurally rendered scenes (a subject on a background: sky gradient, horizon, hills, sun, clouds, textures) and,
when scikit-image is installed, the colour photographs it bundles, each transformed along attributes people rate:

* composition (subject on a thirds point, centred, or cut off by the frame),
* focus (sharp, background blur that isolates the subject, or missed focus),
* noise, exposure (under/over), colour saturation, colour harmony (clashing subject colour or colour cast),
* horizon tilt.

Every image gets a hidden quality from those attributes plus a per-image "content appeal" (drawn independently of the
source: it is not visible in the pixels) and a residual taste term; simulated raters with their own biases, scale use
and noise turn it into a vote histogram. Template comments mention attributes (sometimes wrongly, sometimes
off-topic) and the appeal, so comments carry information the pixels do not.

Sources (one procedural scene seed, or one photograph) never span two splits. The same arguments give byte-identical
files on the same software stack. See `docs/synthetic-data.md` for every knob and the output format.
"""

from __future__ import annotations

import colorsys
import csv
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

GENERATOR_VERSION = 1
SPLITS = ("train", "validation", "test")
ATTRIBUTES = ("exposure", "focus", "noise", "saturation", "harmony", "composition", "tilt")

# Bundled scikit-image colour photographs: name -> (subject centre x, y as fractions of the photo, noun for comments).
# `motorcycle` is the left view of `skimage.data.stereo_motorcycle()`; `cat` is the same photo as `chelsea`.
PHOTO_SUBJECTS: dict[str, tuple[float, float, str]] = {
    "astronaut": (0.45, 0.28, "portrait"),
    "chelsea": (0.50, 0.48, "cat"),
    "coffee": (0.50, 0.38, "coffee"),
    "rocket": (0.49, 0.45, "rocket"),
    "motorcycle": (0.55, 0.62, "bike"),
    "hubble_deep_field": (0.50, 0.50, "sky"),
}
SCENE_SUBJECTS = ("ball", "tree", "house", "flower", "lighthouse", "balloon", "figure", "boat")


# ---------------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------------


def _knob(default, help_text, **extra):
    return field(default=default, metadata={"help": help_text, **extra})


@dataclass(frozen=True)
class SyntheticConfig:
    """All knobs of the generator (see `docs/synthetic-data.md`). Scores are on the 1-10 scale unless noted."""

    size: int = _knob(1000, "number of images")
    seed: int = _knob(0, "random seed; same arguments give byte-identical files")
    num_bins: int = _knob(10, "number of vote bins (score scale 1..B); 10 = AVA-like, 7 = Photo.net-like")
    image_size: int = _knob(96, "side of the saved square images, in pixels")
    image_format: str = _knob("png", "png (lossless, default) or jpeg (quality 90)", choices=("png", "jpeg"))
    name: str = _knob("aesformer-synthetic", "dataset name written to dataset.json")
    split_fractions: tuple = _knob((0.8, 0.1, 0.1), "train/validation/test fractions (by source)")
    photo_fraction: float = _knob(0.15, "fraction of images made from scikit-image photographs (0 = scenes only)")
    photos: tuple | None = _knob(None, "names of the photographs to use (default: every one that loads)")
    images_per_scene: float = _knob(3.0, "mean number of variants rendered from one procedural scene (1-6)")
    flaw_rate: float = _knob(0.45, "probability that an attribute is flawed in an image (0-1)")
    # attribute strengths: relative contribution (standard deviation) of each attribute to the image quality
    exposure_strength: float = _knob(1.5, "weight of exposure (under/over) in the image quality")
    focus_strength: float = _knob(0.8, "weight of focus (missed focus, background blur) in the image quality")
    noise_strength: float = _knob(0.6, "weight of noise in the image quality")
    saturation_strength: float = _knob(1.2, "weight of colour saturation in the image quality")
    harmony_strength: float = _knob(0.4, "weight of colour harmony in the image quality")
    composition_strength: float = _knob(0.5, "weight of composition (thirds / centred / cut) in the image quality")
    tilt_strength: float = _knob(0.4, "weight of horizon tilt in the image quality")
    # variance shares of the hidden quality (normalised to sum 1)
    image_weight: float = _knob(0.6, "variance share of the visible image attributes in the hidden quality")
    appeal_weight: float = _knob(0.3, "variance share of the content appeal (not visible; comments reveal it)")
    residual_weight: float = _knob(0.1, "variance share of unexplained taste (neither in pixels nor comments)")
    score_mean: float = _knob(5.4, "mean of the true mean scores, on the 1-10 scale (mapped linearly for B != 10)")
    score_std: float = _knob(0.7, "standard deviation of the true mean scores, on the 1-10 scale")
    threshold: float | None = _knob(None, "binary threshold for dataset.json (default: the midpoint of 1..B, "
                                          "5.5 for B=10; a dataset named ava, photonet or jas: its own)")
    # raters
    min_votes: int = _knob(80, "fewest votes per image")
    max_votes: int = _knob(250, "most votes per image")
    num_raters: int = _knob(600, "size of the simulated rater pool")
    rater_noise: float = _knob(1.35, "standard deviation of one vote around the image's mean (1-10 scale)")
    rater_bias: float = _knob(0.5, "standard deviation of the raters' personal offsets (1-10 scale)")
    # comments
    comment_rate: float = _knob(0.85, "fraction of images with comments (each then has 1..max_comments)")
    max_comments: int = _knob(4, "most comments per image")
    appeal_comment_rate: float = _knob(0.5, "probability that a comment is about the content appeal")
    off_topic_rate: float = _knob(0.15, "probability that a comment is off-topic")
    verdict_rate: float = _knob(0.1, "probability that a comment is an overall verdict (from the noisy score)")
    wrong_comment_rate: float = _knob(0.15, "probability that an attribute comment states the wrong state")
    comment_noise: float = _knob(0.3, "noise of a commenter's perception of the appeal (appeal has std 1)")
    write_attributes: bool = _knob(False, "also write attributes.csv with the hidden attributes and true scores")

    def validate(self) -> None:
        problems = []
        if self.size < 1:
            problems.append("size must be >= 1")
        if not 2 <= self.num_bins <= 100:
            problems.append("num_bins must be in 2..100")
        if not 16 <= self.image_size <= 1024:
            problems.append("image_size must be in 16..1024")
        if self.image_format not in ("png", "jpeg"):
            problems.append("image_format must be png or jpeg")
        if len(self.split_fractions) != 3 or min(self.split_fractions) < 0 or sum(self.split_fractions) <= 0:
            problems.append("split_fractions must be three non-negative numbers with a positive sum")
        for name in ("photo_fraction", "flaw_rate", "comment_rate", "wrong_comment_rate", "appeal_comment_rate",
                     "off_topic_rate", "verdict_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1]")
        if self.appeal_comment_rate + self.off_topic_rate + self.verdict_rate > 1.0:
            problems.append("appeal_comment_rate + off_topic_rate + verdict_rate must be <= 1")
        if not 1.0 <= self.images_per_scene <= 6.0:
            problems.append("images_per_scene must be in [1, 6]")
        for name in ("image_weight", "appeal_weight", "residual_weight", "score_std", "rater_noise", "rater_bias",
                     "comment_noise") + tuple(f"{a}_strength" for a in ATTRIBUTES):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        if self.image_weight + self.appeal_weight + self.residual_weight <= 0:
            problems.append("image_weight + appeal_weight + residual_weight must be > 0")
        if not 1 <= self.min_votes <= self.max_votes:
            problems.append("need 1 <= min_votes <= max_votes")
        if self.num_raters < 1:
            problems.append("num_raters must be >= 1")
        if self.max_comments < 1:
            problems.append("max_comments must be >= 1")
        if self.photos is not None:
            unknown = sorted(set(self.photos) - set(PHOTO_SUBJECTS))
            if unknown:
                problems.append(f"unknown photos {unknown}; known: {sorted(PHOTO_SUBJECTS)}")
        if problems:
            raise ValueError("invalid synthetic dataset settings: " + "; ".join(problems))

    @property
    def resolved_threshold(self) -> float:
        if self.threshold is not None:
            return float(self.threshold)
        from modeling_aesformer.configuration_aesformer import default_score_threshold  # not at import: the CLI

        return default_score_threshold((1.0, float(self.num_bins)), self.name)

    def knobs(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


# ---------------------------------------------------------------------------------------------------------------------
# Photographs bundled with scikit-image (optional)
# ---------------------------------------------------------------------------------------------------------------------


def _import_skimage_data():
    import skimage
    import skimage.data

    return skimage.data, skimage.__version__


def load_photos(names=None) -> tuple[dict[str, np.ndarray], str]:
    """Loads the bundled colour photographs that exist offline. Returns `({name: HxWx3 uint8}, note)`."""
    try:
        data, version = _import_skimage_data()
    except ImportError:
        return {}, "scikit-image is not installed: procedural scenes only"
    photos = {}
    for name in names if names is not None else PHOTO_SUBJECTS:
        try:
            if name == "motorcycle":
                array = data.stereo_motorcycle()[0]
            else:
                array = getattr(data, name)()
        except Exception:  # a photo missing from this scikit-image version, or one that needs a download
            continue
        array = np.asarray(array)
        if array.ndim != 3 or array.shape[2] < 3:
            continue
        photos[name] = np.ascontiguousarray(array[..., :3].astype(np.uint8))
    note = f"scikit-image {version}: {len(photos)} photographs"
    return photos, note


# ---------------------------------------------------------------------------------------------------------------------
# Attributes, hidden quality
# ---------------------------------------------------------------------------------------------------------------------


def _sample_attributes(rng: np.random.Generator, cfg: SyntheticConfig, kind: str) -> dict:
    f = cfg.flaw_rate
    a: dict[str, Any] = {}
    if rng.random() < f:  # under-exposure a little more common than over-exposure
        a["exposure"] = float((-1.0 if rng.random() < 0.55 else 1.0) * rng.uniform(0.45, 1.6))
    else:
        a["exposure"] = float(rng.normal(0.0, 0.1))
    r = rng.random()
    a["bg_blur"] = 0.0
    a["blur"] = 0.0
    if r < 0.85 * f:
        a["focus"] = "missed"
        a["blur"] = float(rng.uniform(0.012, 0.035))  # Gaussian sigma as a fraction of the image side
    elif kind == "scene" and r < 0.85 * f + 0.2:
        a["focus"] = "bokeh"
        a["bg_blur"] = float(rng.uniform(0.012, 0.03))
    else:
        a["focus"] = "sharp"
    a["noise"] = float(rng.uniform(0.03, 0.12) if rng.random() < f else rng.uniform(0.0, 0.006))
    if rng.random() < f:
        a["saturation"] = float(rng.uniform(-2.2, -0.55) if rng.random() < 0.6 else rng.uniform(0.45, 1.0))
    else:
        a["saturation"] = float(rng.normal(0.1, 0.1))  # log2 of the chroma multiplier
    a["harmony"] = "clash" if rng.random() < 0.7 * f else "harmonious"
    if rng.random() < 0.6 * f:
        a["composition"] = "cut"
    else:
        a["composition"] = "thirds" if rng.random() < 0.55 else "centred"
    if rng.random() < 0.8 * f:
        a["tilt"] = float((-1.0 if rng.random() < 0.5 else 1.0) * rng.uniform(3.0, 12.0))
    else:
        a["tilt"] = float(rng.normal(0.0, 0.4))
    return a


def _goodness(a: dict) -> dict[str, float]:
    """Raw (unstandardised) goodness of each attribute: 0 is ideal, negative is worse (thirds and bokeh add)."""
    return {
        "exposure": -abs(a["exposure"]),
        "focus": -a["blur"] / 0.035 + (0.5 if a["focus"] == "bokeh" else 0.0),
        "noise": -a["noise"] / 0.12,
        "saturation": -abs(a["saturation"] - 0.1),
        "harmony": -1.0 if a["harmony"] == "clash" else 0.0,
        "composition": {"thirds": 0.6, "centred": 0.0, "cut": -1.0}[a["composition"]],
        "tilt": -abs(a["tilt"]) / 12.0,
    }


def _calibration(cfg: SyntheticConfig) -> dict[str, tuple[float, float]]:
    """Mean and std of each attribute's goodness under the sampling distribution (fixed Monte Carlo, no pixels)."""
    rng = np.random.default_rng(20240611)
    kinds = ["scene", "photo"]
    values = {k: [] for k in ATTRIBUTES}
    for i in range(4000):
        kind = kinds[1] if rng.random() < cfg.photo_fraction else kinds[0]
        for k, v in _goodness(_sample_attributes(rng, cfg, kind)).items():
            values[k].append(v)
    out = {}
    for k, v in values.items():
        arr = np.asarray(v)
        std = float(arr.std())
        out[k] = (float(arr.mean()), std if std > 1e-9 else 1.0)
    return out


def _image_quality(a: dict, cfg: SyntheticConfig, calibration) -> float:
    """Unit-variance visible quality: strength-weighted sum of standardised attribute goodness."""
    g = _goodness(a)
    weights = {k: getattr(cfg, f"{k}_strength") for k in ATTRIBUTES}
    norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
    return sum(weights[k] * (g[k] - calibration[k][0]) / calibration[k][1] for k in ATTRIBUTES) / norm


# ---------------------------------------------------------------------------------------------------------------------
# Drawing helpers (signed distances in image units, anti-aliased over one pixel)
# ---------------------------------------------------------------------------------------------------------------------


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)), dtype=np.float64)


def _coverage(sdf: np.ndarray, px: float, soft: float = 1.0) -> np.ndarray:
    return np.clip(0.5 - sdf / (px * soft), 0.0, 1.0)


def _paint(img: np.ndarray, alpha: np.ndarray, color) -> None:
    img += alpha[..., None] * (np.asarray(color, dtype=np.float64) - img)


def _sd_circle(x, y, cx, cy, r):
    return np.hypot(x - cx, y - cy) - r


def _sd_ellipse(x, y, cx, cy, rx, ry):
    return (np.hypot((x - cx) / rx, (y - cy) / ry) - 1.0) * min(rx, ry)


def _sd_box(x, y, cx, cy, hw, hh):
    dx = np.abs(x - cx) - hw
    dy = np.abs(y - cy) - hh
    return np.hypot(np.maximum(dx, 0), np.maximum(dy, 0)) + np.minimum(np.maximum(dx, dy), 0)


def _sd_segment(x, y, x0, y0, x1, y1, r):
    vx, vy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * vx + (y - y0) * vy) / (vx * vx + vy * vy + 1e-12), 0.0, 1.0)
    return np.hypot(x - x0 - t * vx, y - y0 - t * vy) - r


def _sd_triangle(x, y, p0, p1, p2):
    """Approximate signed distance to a triangle (max of the three edge half-planes); exact enough for 1-px AA."""
    pts = (p0, p1, p2)
    area = (p1[0] - p0[0]) * (p2[1] - p0[1]) - (p1[1] - p0[1]) * (p2[0] - p0[0])
    sign = 1.0 if area > 0 else -1.0
    d = None
    for i in range(3):
        ax, ay = pts[i]
        bx, by = pts[(i + 1) % 3]
        ex, ey = bx - ax, by - ay
        length = math.hypot(ex, ey) or 1e-12
        cross = ex * (y - ay) - ey * (x - ax)  # has the sign of `area` inside the triangle
        di = -sign * cross / length
        d = di if d is None else np.maximum(d, di)
    return d


def _noise_table(rng: np.random.Generator, n: int = 16) -> np.ndarray:
    return rng.random((n, n))


def _value_noise(table: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth value noise in [0, 1] sampled at (x, y) in table cells (wraps around)."""
    n = table.shape[0]
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = x - x0
    fy = y - y0
    fx = fx * fx * (3 - 2 * fx)
    fy = fy * fy * (3 - 2 * fy)
    i0 = x0.astype(np.int64) % n
    j0 = y0.astype(np.int64) % n
    i1 = (i0 + 1) % n
    j1 = (j0 + 1) % n
    top = table[j0, i0] * (1 - fx) + table[j0, i1] * fx
    bottom = table[j1, i0] * (1 - fx) + table[j1, i1] * fx
    return top * (1 - fy) + bottom * fy


def _gaussian_blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """Separable Gaussian blur with reflected borders (pure numpy, deterministic)."""
    if sigma_px < 0.3:
        return img
    radius = max(1, int(math.ceil(3.0 * sigma_px)))
    taps = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (taps / sigma_px) ** 2)
    kernel /= kernel.sum()
    h, w = img.shape[:2]
    radius = min(radius, h - 1, w - 1)
    kernel = kernel[len(kernel) // 2 - radius: len(kernel) // 2 + radius + 1]
    kernel /= kernel.sum()
    padded = np.pad(img, ((radius, radius), (0, 0), (0, 0)), mode="reflect")
    out = np.zeros_like(img)
    for k, wgt in enumerate(kernel):
        out += wgt * padded[k: k + h]
    padded = np.pad(out, ((0, 0), (radius, radius), (0, 0)), mode="reflect")
    out = np.zeros_like(img)
    for k, wgt in enumerate(kernel):
        out += wgt * padded[:, k: k + w]
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Procedural scenes
# ---------------------------------------------------------------------------------------------------------------------

_SKIES = {
    "day": ((0.58, 0.65, 0.85), (0.56, 0.22, 0.98)),
    "sunset": ((0.72, 0.45, 0.55), (0.07, 0.65, 1.0)),
    "overcast": ((0.60, 0.08, 0.72), (0.60, 0.04, 0.9)),
    "dusk": ((0.65, 0.65, 0.38), (0.92, 0.32, 0.82)),
}
_GROUNDS = {  # name -> (hue, saturation, value, texture)
    "grass": (0.28, 0.6, 0.55, "grass"),
    "sand": (0.11, 0.45, 0.85, "speckle"),
    "water": (0.55, 0.6, 0.5, "ripples"),
    "snow": (0.6, 0.05, 0.93, "speckle"),
    "earth": (0.07, 0.5, 0.42, "rows"),
    "lavender": (0.78, 0.4, 0.6, "rows"),
}
_GROUND_SUBJECTS = {"tree", "house", "flower", "lighthouse", "figure"}


def _make_scene(rng: np.random.Generator) -> dict:
    """Source-level description of a procedural scene (what stays the same across its variants)."""
    sky = str(rng.choice(list(_SKIES)))
    ground = str(rng.choice(list(_GROUNDS)))
    subject = str(rng.choice(SCENE_SUBJECTS if ground == "water" else [s for s in SCENE_SUBJECTS if s != "boat"]))
    gh, gs, gv, texture = _GROUNDS[ground]
    gh = gh + rng.normal(0, 0.02)
    scene = {
        "sky": sky,
        "sky_top": _hsv(*_SKIES[sky][0]) * rng.uniform(0.92, 1.05),
        "sky_bottom": _hsv(*_SKIES[sky][1]) * rng.uniform(0.95, 1.03),
        "ground": ground,
        "ground_hue": float(gh),
        "ground_color": _hsv(gh, gs * rng.uniform(0.85, 1.15), gv * rng.uniform(0.9, 1.1)),
        "texture": texture,
        "texture_table": _noise_table(rng, 32),
        "texture_scale": float(rng.uniform(0.7, 1.4)),
        "sun": None,
        "clouds": [],
        "hills": [],
        "skyline": None,
        "subject": subject,
        "subject_size": float(rng.uniform(0.12, 0.2)),  # half height, fraction of the image side
        "harmonic_offset": float(rng.choice([0.5, 0.08, -0.08, 0.33, -0.33])) + rng.normal(0, 0.02),
        "clash_offset": float(rng.choice([-1.0, 1.0]) * rng.uniform(0.18, 0.26)),
        "subject_value": float(rng.uniform(0.6, 0.85)),
        "accent_hue": float(rng.random()),
    }
    if sky != "overcast" and rng.random() < 0.6:
        sun_hue = 0.13 if sky == "day" else 0.06
        scene["sun"] = (float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.08, 0.3)), float(rng.uniform(0.04, 0.08)),
                        _hsv(sun_hue, 0.35 if sky == "day" else 0.6, 1.0))
    for _ in range(int(rng.integers(0, 4))):
        cx, cy, w = float(rng.uniform(-0.1, 1.1)), float(rng.uniform(0.05, 0.3)), float(rng.uniform(0.08, 0.18))
        puffs = [(cx + dx * w, cy + dy * w * 0.5, w * s) for dx, dy, s in
                 [(0.0, 0.0, 0.55), (-0.6, 0.2, 0.4), (0.6, 0.2, 0.42), (0.3, -0.2, 0.38)]]
        scene["clouds"].append(puffs)
    for layer in range(int(rng.integers(0, 3))):
        scene["hills"].append({
            "amp": float(rng.uniform(0.04, 0.12)) / (layer + 1),
            "freq": float(rng.uniform(4.0, 12.0)),
            "phase": float(rng.uniform(0, 2 * math.pi)),
            "color": (0.45 + 0.2 * layer) * scene["ground_color"] + (0.55 - 0.2 * layer) * scene["sky_bottom"] * 0.8,
        })
    if rng.random() < 0.4:
        scene["skyline"] = {
            "kind": str(rng.choice(["forest", "city"])),
            "period": float(rng.uniform(0.03, 0.07)),
            "height": float(rng.uniform(0.03, 0.08)),
            "table": _noise_table(rng, 64),
            "color": scene["ground_color"] * 0.45 + scene["sky_bottom"] * 0.15,
        }
    return scene


def _composition_layout(rng: np.random.Generator, mode: str, ground_subject: bool, half: float):
    """Subject centre (x, y) and horizon height for a composition mode, in unrotated image units."""
    if mode == "thirds":
        x = float(rng.choice([1 / 3, 2 / 3]))
        y = 2 / 3 if ground_subject else float(rng.choice([1 / 3, 2 / 3]))
        horizon = float(rng.choice([1 / 3, 2 / 3])) if not ground_subject else float(rng.choice([1 / 3, 0.6]))
        return x + rng.normal(0, 0.012), y + rng.normal(0, 0.012), horizon + rng.normal(0, 0.01)
    if mode == "centred":
        return 0.5 + rng.normal(0, 0.01), 0.5 + rng.normal(0, 0.01), 0.5 + rng.normal(0, 0.015)
    # cut: the subject's centre sits on (or just past) a frame edge, so 35-65 % of it is outside
    edge = str(rng.choice(["left", "right", "bottom"] if ground_subject else ["left", "right", "top", "bottom"]))
    along = float(rng.uniform(0.3, 0.7))
    across = float(rng.uniform(-0.25, 0.25)) * half
    horizon = float(rng.uniform(0.42, 0.58))
    if edge == "left":
        return across, along, horizon
    if edge == "right":
        return 1.0 + across, along, horizon
    if edge == "top":
        return along, across, horizon
    return along, 1.0 + across, horizon


def _draw_subject(img, x, y, px, kind, cx, cy, s, main, accent):
    """Draws the subject centred at (cx, cy) with half height s; returns its coverage mask."""
    u = (x - cx) / s  # local units: the subject spans about [-1, 1] vertically
    v = (y - cy) / s
    lpx = px / s
    mask = np.zeros(x.shape)
    white = np.array([0.95, 0.95, 0.93])
    dark = main * 0.35
    layers = []
    if kind == "ball":
        layers += [(_sd_circle(u, v, 0, 0.1, 0.85), main),
                   (np.abs(_sd_circle(u, v, 0, 0.1, 0.55)) - 0.08, accent),
                   (_sd_circle(u, v, -0.3, -0.2, 0.18), np.minimum(main * 0.5 + 0.55, 1.0))]
    elif kind == "tree":
        layers += [(_sd_box(u, v, 0, 0.65, 0.12, 0.35), np.array([0.35, 0.22, 0.12])),
                   (_sd_circle(u, v, 0, -0.25, 0.6), main),
                   (_sd_circle(u, v, -0.35, 0.1, 0.4), main * 0.85),
                   (_sd_circle(u, v, 0.35, 0.05, 0.42), main * 0.92),
                   (_sd_circle(u, v, 0.12, -0.45, 0.14), np.minimum(main * 1.3, 1.0))]
    elif kind == "house":
        layers += [(_sd_box(u, v, 0, 0.35, 0.7, 0.6), main),
                   (_sd_triangle(u, v, (-0.85, -0.2), (0.85, -0.2), (0, -1.0)), accent),
                   (_sd_box(u, v, 0.25, 0.62, 0.15, 0.33), dark),
                   (_sd_box(u, v, -0.35, 0.2, 0.14, 0.14), white),
                   (_sd_box(u, v, -0.35, 0.2, 0.015, 0.14), dark),
                   (_sd_box(u, v, 0.3, 0.12, 0.12, 0.1), white)]
    elif kind == "flower":
        layers += [(_sd_segment(u, v, 0, 0.0, 0.05, 1.0, 0.06), np.array([0.2, 0.5, 0.15])),
                   (_sd_ellipse(u, v, 0.25, 0.55, 0.25, 0.1), np.array([0.25, 0.55, 0.2]))]
        for k in range(6):
            ang = k * math.pi / 3
            layers.append((_sd_circle(u, v, 0.38 * math.cos(ang), -0.35 + 0.38 * math.sin(ang), 0.26), main))
        layers.append((_sd_circle(u, v, 0, -0.35, 0.2), accent))
    elif kind == "lighthouse":
        tower = _sd_triangle(u, v, (-0.4, 1.0), (0.4, 1.0), (0.0, -2.2))
        tower = np.maximum(tower, v - 1.0)
        tower = np.maximum(tower, -0.6 - v)
        layers.append((tower, white))
        band = np.maximum(tower, np.abs(((v + 0.6) % 0.5) - 0.25) - 0.12)
        layers += [(band, main), (_sd_box(u, v, 0, -0.78, 0.22, 0.18), accent),
                   (_sd_triangle(u, v, (-0.28, -0.95), (0.28, -0.95), (0, -1.2)), dark)]
    elif kind == "balloon":
        layers += [(_sd_segment(u, v, 0, 0.3, 0, 0.8, 0.015), dark),
                   (_sd_ellipse(u, v, 0, -0.25, 0.55, 0.68), main),
                   (np.maximum(_sd_ellipse(u, v, 0, -0.25, 0.55, 0.68), np.abs(u) - 0.12), accent),
                   (_sd_box(u, v, 0, 0.88, 0.13, 0.1), np.array([0.4, 0.27, 0.15]))]
    elif kind == "figure":
        skin = np.array([0.87, 0.68, 0.55])
        layers += [(_sd_segment(u, v, -0.12, 0.35, -0.2, 0.98, 0.09), dark),
                   (_sd_segment(u, v, 0.12, 0.35, 0.2, 0.98, 0.09), dark),
                   (_sd_segment(u, v, 0, -0.3, 0, 0.35, 0.27), main),
                   (_sd_segment(u, v, -0.25, -0.25, -0.45, 0.25, 0.07), main * 0.85),
                   (_sd_segment(u, v, 0.25, -0.25, 0.45, 0.25, 0.07), main * 0.85),
                   (_sd_circle(u, v, 0, -0.78, 0.22), skin)]
    else:  # boat
        hull = np.maximum(_sd_box(u, v, 0, 0.55, 0.9, 0.2), (v - 0.55) * 0.7 - (0.9 - np.abs(u)) * 0.7)
        layers += [(hull, main), (_sd_segment(u, v, 0, 0.35, 0, -0.95, 0.03), dark),
                   (_sd_triangle(u, v, (0.05, -0.9), (0.05, 0.25), (0.7, 0.25)), white),
                   (_sd_triangle(u, v, (-0.05, -0.6), (-0.05, 0.25), (-0.55, 0.25)), accent)]
    for sdf, color in layers:
        alpha = _coverage(sdf, lpx)
        _paint(img, alpha, color)
        mask = np.maximum(mask, alpha)
    return mask


def _render_scene(scene: dict, a: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    """Renders one variant of a scene (composition, tilt, colours, background blur); display-referred floats."""
    px = 1.0 / size
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size
    gx, gy = np.meshgrid(coords, coords)
    theta = math.radians(a["tilt"])
    c, s_ = math.cos(theta), math.sin(theta)
    x = 0.5 + c * (gx - 0.5) - s_ * (gy - 0.5)
    y = 0.5 + s_ * (gx - 0.5) + c * (gy - 0.5)
    half = scene["subject_size"]
    cx, cy, horizon = _composition_layout(rng, a["composition"], scene["subject"] in _GROUND_SUBJECTS, half)

    # sky
    t = np.clip(y / max(horizon, 0.05), 0.0, 1.0)[..., None]
    img = scene["sky_top"] * (1 - t) + scene["sky_bottom"] * t
    if scene["sun"] is not None:
        sx, sy, sr, scol = scene["sun"]
        sy = min(sy, horizon - 0.05)
        d = np.hypot(x - sx, y - sy)
        img += (scol * 0.25)[None, None, :] * np.exp(-((d / (sr * 3)) ** 2))[..., None]
        _paint(img, _coverage(d - sr, px), scol)
    for puffs in scene["clouds"]:
        alpha = np.zeros(x.shape)
        for pcx, pcy, r in puffs:
            alpha = np.maximum(alpha, _coverage(_sd_ellipse(x, y, pcx, pcy * horizon * 2, r, r * 0.6), px, 2.0))
        _paint(img, 0.85 * alpha, np.array([0.97, 0.97, 0.98]))
    for hill in scene["hills"]:
        top = horizon - hill["amp"] * (0.55 + 0.45 * np.sin(hill["freq"] * x + hill["phase"]))
        _paint(img, _coverage(top - y, px), hill["color"])
    sk = scene["skyline"]
    if sk is not None:
        cell = x / sk["period"]
        idx = np.floor(cell).astype(np.int64) % sk["table"].shape[0]
        frac = cell - np.floor(cell)
        heights = sk["height"] * (0.4 + 0.6 * sk["table"][0, idx])
        if sk["kind"] == "forest":
            top = horizon - heights * (1 - 2 * np.abs(frac - 0.5))
        else:
            top = horizon - heights * (np.abs(frac - 0.5) < 0.42)
        _paint(img, _coverage(top - y, px), sk["color"])
    # ground with texture (perspective: finer towards the horizon)
    depth = np.maximum(y - horizon, 0.0) + 0.04
    table = scene["texture_table"]
    k = scene["texture_scale"]
    tex = scene["texture"]
    if tex == "grass":
        pattern = _value_noise(table, x * 60 * k, y * 10 * k) - 0.5
    elif tex == "speckle":
        pattern = (_value_noise(table, x * 40 * k, y * 40 * k) - 0.5) + 0.6 * (_value_noise(table, x * 6, y * 6) - 0.5)
    elif tex == "rows":
        pattern = 0.45 * np.sin(2 * math.pi * (x - 0.5) * 8 * k / depth * 0.15) + 0.3 * (
            _value_noise(table, x * 30, y * 30) - 0.5)
    else:  # ripples
        pattern = 0.4 * np.sin(2 * math.pi * (y * 25 * k / np.sqrt(depth)) + 3 * _value_noise(table, x * 8, y * 3))
    ground = scene["ground_color"][None, None, :] * (1.0 + 0.35 * pattern[..., None])
    shade = (0.85 + 0.3 * np.clip((y - horizon) / max(1 - horizon, 0.1), 0, 1))[..., None]
    _paint(img, _coverage(horizon - y, px), ground * shade)

    if a["focus"] == "bokeh":
        img = _gaussian_blur(img, a["bg_blur"] * size)

    # subject colours: harmonious (complementary / analogous / triadic to the ground) or clashing neon
    gh = scene["ground_hue"]
    if a["harmony"] == "clash":
        main = _hsv(gh + scene["clash_offset"], 1.0, 1.0)
        accent = _hsv(gh + scene["clash_offset"] + 0.5 + 0.15, 1.0, 1.0)
    else:
        main = _hsv(gh + scene["harmonic_offset"], 0.62, scene["subject_value"])
        accent = _hsv(gh + scene["harmonic_offset"] + 0.04, 0.35, min(scene["subject_value"] + 0.15, 1.0))
    if scene["subject"] in _GROUND_SUBJECTS and a["composition"] != "cut":
        shadow = _coverage(_sd_ellipse(x, y, cx, cy + half * 0.95, half * 0.7, half * 0.12), px, 3.0)
        _paint(img, 0.35 * shadow, np.zeros(3))
    _draw_subject(img, x, y, px, scene["subject"], cx, cy, half, main, accent)
    if a["harmony"] == "clash":  # a few garish confetti spots of the accent colour
        for _ in range(3):
            ex, ey = rng.uniform(0.05, 0.95), rng.uniform(0.05, 0.95)
            _paint(img, _coverage(_sd_circle(x, y, ex, ey, rng.uniform(0.02, 0.035)), px), accent)
    return np.clip(img, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------------------------------
# Photographs
# ---------------------------------------------------------------------------------------------------------------------


def _render_photo(photo: np.ndarray, name: str, a: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    """Crops (composition), rotates (tilt) and resizes a photograph; display-referred floats."""
    h, w = photo.shape[:2]
    sx, sy = PHOTO_SUBJECTS[name][0] * w, PHOTO_SUBJECTS[name][1] * h
    short = min(h, w)
    theta = math.radians(a["tilt"])
    grow = abs(math.cos(theta)) + abs(math.sin(theta))
    want = rng.uniform(0.5, 0.8) * short

    def max_side(tx, ty):  # largest crop side that puts the subject at (tx, ty) of the crop, inside the photo
        bounds = [short / grow]
        for pos, target, extent in ((sx, tx, w), (sy, ty, h)):
            # the rotated crop needs a window of side grow*c centred at pos + (0.5 - target) * c
            lo = (grow / 2 - (0.5 - target))  # pos - lo*c >= 0
            hi = (grow / 2 + (0.5 - target))  # pos + hi*c <= extent
            if lo > 0:
                bounds.append(pos / lo)
            if hi > 0:
                bounds.append((extent - pos) / hi)
        return min(bounds)

    mode = a["composition"]
    if mode == "thirds":
        candidates = [(tx, ty) for tx in (1 / 3, 2 / 3) for ty in (1 / 3, 2 / 3)]
    elif mode == "centred":
        candidates = [(0.5, 0.5)]
    else:
        candidates = [(0.04, 0.5), (0.96, 0.5), (0.5, 0.04), (0.5, 0.96)]
    feasible = [(t, max_side(*t)) for t in candidates]
    best = max(m for _, m in feasible)
    good = [(t, m) for t, m in feasible if m >= min(want, 0.8 * best)]
    (tx, ty), limit = good[int(rng.integers(len(good)))]
    side = min(want, limit)
    jitter = 0.01 * side
    ccx = sx + (0.5 - tx) * side + rng.normal(0, jitter)
    ccy = sy + (0.5 - ty) * side + rng.normal(0, jitter)
    work = int(math.ceil(size * grow)) + 2  # the rotated patch, then its centre `size` pixels are kept
    span = min(work * side / size, float(w), float(h))  # photo units covered by the patch
    x0 = min(max(ccx - span / 2, 0.0), w - span)
    y0 = min(max(ccy - span / 2, 0.0), h - span)
    box = (x0, y0, x0 + span, y0 + span)
    patch = Image.fromarray(photo).resize((work, work), Image.Resampling.LANCZOS, box=box)
    if abs(a["tilt"]) > 0.05:
        patch = patch.rotate(a["tilt"], resample=Image.Resampling.BICUBIC, center=(work / 2, work / 2))
    off = (work - size) // 2
    patch = patch.crop((off, off, off + size, off + size))
    return np.asarray(patch, dtype=np.float64) / 255.0


# ---------------------------------------------------------------------------------------------------------------------
# Camera / processing chain shared by scenes and photos
# ---------------------------------------------------------------------------------------------------------------------

_LUMA = np.array([0.299, 0.587, 0.114])
_METER_TARGET = 0.2  # mean linear luminance a correctly exposed image is metered towards
_METER_STRENGTH = 0.8  # 1 = full normalisation, 0 = none


def _apply_attributes(img: np.ndarray, a: dict, kind: str, rng: np.random.Generator) -> np.ndarray:
    size = img.shape[0]
    if a["blur"] > 0:
        img = _gaussian_blur(img, a["blur"] * size)
    linear = np.power(np.clip(img, 0, 1), 2.2)
    # auto-exposure: meter towards mid grey (partially, as cameras do), then apply the exposure error in stops
    metered = float(np.mean(linear @ _LUMA))
    gain = min(max((_METER_TARGET / max(metered, 1e-4)) ** _METER_STRENGTH, 0.4), 3.0)
    linear = linear * (gain * 2.0 ** a["exposure"])
    img = np.power(np.clip(linear, 0, 1), 1 / 2.2)
    if kind == "photo" and a["harmony"] == "clash":  # strong colour cast
        cast = a["cast"]
        img = np.clip(img * cast[None, None, :], 0, 1)
    grey = (img @ _LUMA)[..., None]
    img = np.clip(grey + (2.0 ** a["saturation"]) * (img - grey), 0.0, 1.0)
    if a["noise"] > 0:
        luma_noise = rng.normal(0.0, a["noise"], size=(size, size, 1))
        chroma_noise = rng.normal(0.0, a["noise"] * 0.5, size=(size, size, 3))
        img = img + luma_noise + chroma_noise
    return np.clip(img, 0.0, 1.0)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(img * 255.0 + 0.5), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------------
# Votes
# ---------------------------------------------------------------------------------------------------------------------


def _make_raters(cfg: SyntheticConfig, seed: int) -> dict:
    rng = np.random.default_rng([seed, 4])
    n = cfg.num_raters
    return {
        "bias": rng.normal(0.0, cfg.rater_bias, n),
        "scale": np.exp(rng.normal(0.0, 0.2, n)),  # how much of the scale a rater uses around the middle
        "noise": cfg.rater_noise * np.exp(rng.normal(0.0, 0.15, n)),
    }


def _votes(mu10: float, raters: dict, cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    bins = cfg.num_bins
    k = (bins - 1) / 9.0  # 1..10 scale -> 1..B scale
    mid = (bins + 1) / 2.0
    mu = 1.0 + (mu10 - 1.0) * k
    n = int(rng.integers(cfg.min_votes, cfg.max_votes + 1))
    who = rng.choice(len(raters["bias"]), size=n, replace=n > len(raters["bias"]))
    controversy = math.exp(rng.normal(0.0, 0.22))
    raw = (mid + raters["scale"][who] * (mu - mid) + raters["bias"][who] * k
           + raters["noise"][who] * controversy * k * rng.standard_normal(n))
    votes = np.clip(np.floor(raw + 0.5), 1, bins).astype(np.int64)
    return np.bincount(votes - 1, minlength=bins)


# ---------------------------------------------------------------------------------------------------------------------
# Comments
# ---------------------------------------------------------------------------------------------------------------------

# (phrase, polarity) per attribute state; "{s}" is the subject noun.
_ATTRIBUTE_PHRASES = {
    ("exposure", "under"): ["it is too dark", "a bit underexposed", "the shadows are too deep", "needs more light"],
    ("exposure", "over"): ["it is too bright", "overexposed", "the highlights are blown out", "washed out by light"],
    ("exposure", "good"): ["good exposure", "nice light", "the exposure is spot on"],
    ("focus", "missed"): ["out of focus", "too soft", "it looks blurry", "the focus is off"],
    ("focus", "bokeh"): ["nice background blur", "lovely soft background", "the {s} pops from the background"],
    ("focus", "sharp"): ["nice and sharp", "crisp detail", "good focus on the {s}"],
    ("noise", "noisy"): ["too much noise", "very grainy", "the noise is distracting"],
    ("noise", "clean"): ["very clean image", "no noise at all"],
    ("saturation", "dull"): ["the colours are dull", "it looks flat and grey", "needs more colour"],
    ("saturation", "over"): ["the colours are overdone", "too saturated", "the colours are too strong"],
    ("saturation", "good"): ["nice colours", "rich natural colours"],
    ("harmony", "clash"): ["the colours clash", "the colour of the {s} does not fit", "an odd colour cast"],
    ("harmony", "harmonious"): ["the colours work well together", "pleasing colour palette"],
    ("composition", "thirds"): ["good use of the rule of thirds", "nice composition", "the {s} is well placed"],
    ("composition", "centred"): ["the {s} is right in the centre", "a bit static in the middle"],
    ("composition", "cut"): ["the {s} is cut off", "bad crop", "cropped too tight", "the {s} is half out of frame"],
    ("tilt", "tilted"): ["the horizon is tilted", "it leans to one side", "needs straightening"],
    ("tilt", "level"): ["nice level horizon", "good straight lines"],
}
_STATE_POLARITY = {
    "under": -1, "over": -1, "good": 1, "missed": -1, "bokeh": 1, "sharp": 1, "noisy": -1, "clean": 1, "dull": -1,
    "clash": -1, "harmonious": 1, "thirds": 1, "centred": 0, "cut": -1, "tilted": -1, "level": 1,
}
_STATES = {
    "exposure": ("under", "over", "good"), "focus": ("missed", "bokeh", "sharp"), "noise": ("noisy", "clean"),
    "saturation": ("dull", "over", "good"), "harmony": ("clash", "harmonious"),
    "composition": ("thirds", "centred", "cut"), "tilt": ("tilted", "level"),
}
_APPEAL_PHRASES = [  # from low to high perceived appeal
    (-1, ["boring subject", "i do not see the point of this", "the {s} does nothing for me", "dull idea"]),
    (-1, ["the subject is a bit boring", "not much going on here", "the {s} is not very interesting"]),
    (0, ["the subject is ok", "nothing special but fine", "an ordinary {s}"]),
    (1, ["nice subject", "i like the {s}", "interesting idea", "a charming {s}"]),
    (1, ["what a wonderful subject", "i love this {s}", "such a beautiful moment", "this one really speaks to me"]),
]
_VERDICT_PHRASES = [
    (-1, ["weak shot", "this needs work", "not for me"]),
    (-1, ["not working for me", "could be better"]),
    (0, ["decent shot", "it is ok", "fair entry"]),
    (1, ["good work", "well done", "solid entry"]),
    (1, ["great shot", "excellent work", "superb"]),
]
_OFF_TOPIC = [
    "what lens did you use", "good luck in the challenge", "nice title", "welcome to the site",
    "this reminds me of home", "how long did this take", "thanks for sharing", "first time i see a {s} like this",
    "where was this taken", "nice entry for this challenge",
]
_OPENERS = ["", "", "", "i think ", "to me ", "for me "]
_CLAUSE_VERBS = {"is", "are", "looks", "needs", "does", "leans", "pops", "work"}
_NO_OPENER = ("i ", "this", "what", "such", "how", "where", "thanks", "welcome", "good luck", "first", "nice title",
              "nice entry")


def _attribute_state(a: dict, attribute: str) -> str:
    if attribute == "exposure":
        return "under" if a["exposure"] < -0.35 else "over" if a["exposure"] > 0.35 else "good"
    if attribute == "focus":
        return "missed" if a["blur"] > 0.0 else "bokeh" if a["focus"] == "bokeh" else "sharp"
    if attribute == "noise":
        return "noisy" if a["noise"] > 0.02 else "clean"
    if attribute == "saturation":
        return "dull" if a["saturation"] < -0.4 else "over" if a["saturation"] > 0.4 else "good"
    if attribute == "harmony":
        return a["harmony"]
    if attribute == "composition":
        return a["composition"]
    return "tilted" if abs(a["tilt"]) > 2.0 else "level"


def _level(value: float, cuts=(-1.0, -0.35, 0.35, 1.0)) -> int:
    return int(np.searchsorted(np.asarray(cuts), value))


def _make_comments(rng, cfg: SyntheticConfig, a: dict, goodness_std: dict, appeal: float, mu10: float,
                   noun: str) -> list[str]:
    if rng.random() >= cfg.comment_rate:
        return []
    n = int(rng.integers(1, cfg.max_comments + 1))
    # salience of each attribute: how far it is from its ideal, in its own standard deviations, times its weight
    salience = np.array([0.25 + abs(goodness_std[k]) * max(getattr(cfg, f"{k}_strength"), 0.05) for k in ATTRIBUTES])
    salience = salience / salience.sum()
    comments = []
    for _ in range(n):
        statements = []
        for _part in range(2 if rng.random() < 0.3 else 1):
            r = rng.random()
            if r < cfg.appeal_comment_rate:
                lvl = _level(appeal + rng.normal(0.0, cfg.comment_noise))
                polarity, bank = _APPEAL_PHRASES[lvl]
            elif r < cfg.appeal_comment_rate + cfg.verdict_rate:
                perceived = (mu10 - cfg.score_mean) / max(cfg.score_std, 1e-6) + rng.normal(0.0, 0.8)
                polarity, bank = _VERDICT_PHRASES[_level(perceived, (-1.2, -0.4, 0.4, 1.2))]
            elif r < cfg.appeal_comment_rate + cfg.verdict_rate + cfg.off_topic_rate:
                polarity, bank = 0, _OFF_TOPIC
            else:
                attribute = ATTRIBUTES[int(rng.choice(len(ATTRIBUTES), p=salience))]
                state = _attribute_state(a, attribute)
                if rng.random() < cfg.wrong_comment_rate:
                    others = [s for s in _STATES[attribute] if s != state]
                    state = others[int(rng.integers(len(others)))]
                polarity, bank = _STATE_POLARITY[state], _ATTRIBUTE_PHRASES[(attribute, state)]
            phrase = bank[int(rng.integers(len(bank)))].format(s=noun)
            if not statements or statements[0][1] != phrase:
                statements.append((polarity, phrase))
        opener = _OPENERS[int(rng.integers(len(_OPENERS)))]
        first = statements[0][1]
        if first.startswith(_NO_OPENER) or not set(first.split()) & _CLAUSE_VERBS:
            opener = ""
        text = opener + statements[0][1]
        if len(statements) == 2:
            joiner = ", but " if statements[0][0] * statements[1][0] < 0 else str(rng.choice([", ", " and ", ". "]))
            text += joiner + statements[1][1]
        if statements[-1][0] > 0 and rng.random() < 0.3:
            text += "!"
        elif rng.random() < 0.7:
            text += "."
        comments.append(text)
    return comments


# ---------------------------------------------------------------------------------------------------------------------
# Planning: sources, splits, per-image records
# ---------------------------------------------------------------------------------------------------------------------


def _split_targets(n: int, fractions) -> list[int]:
    total = float(sum(fractions))
    raw = [n * f / total for f in fractions]
    out = [int(math.floor(r)) for r in raw]
    for i in sorted(range(3), key=lambda i: raw[i] - out[i], reverse=True)[: n - sum(out)]:
        out[i] += 1
    if n >= 3:  # every split with a positive fraction gets at least one image
        for i in range(3):
            if fractions[i] > 0 and out[i] == 0:
                j = int(np.argmax(out))
                out[j] -= 1
                out[i] += 1
    return out


def _plan(cfg: SyntheticConfig, photo_names: list[str]) -> list[dict]:
    rng = np.random.default_rng([cfg.seed, 1])
    n_photo = int(round(cfg.size * cfg.photo_fraction)) if photo_names else 0
    n_scene = cfg.size - n_photo
    records: list[dict] = []

    # procedural scene sources with 1..6 variants each (mean images_per_scene)
    sources = []
    remaining = n_scene
    while remaining > 0:
        count = min(remaining, 1 + int(rng.poisson(cfg.images_per_scene - 1.0)), 6)
        sources.append(count)
        remaining -= count
    order = rng.permutation(len(sources))
    targets = _split_targets(n_scene, cfg.split_fractions)
    filled = [0, 0, 0]
    source_split = {}
    fill_order = [2, 1, 0]  # test, validation, then train takes the rest
    for idx in order:
        split = 0
        for s in fill_order:
            if filled[s] < targets[s]:
                split = s
                break
        source_split[int(idx)] = split
        filled[split] += sources[idx]
    for idx, count in enumerate(sources):
        for variant in range(count):
            records.append({"kind": "scene", "source_index": idx, "source": f"scene-{idx:05d}",
                            "split": SPLITS[source_split[idx]], "variant": variant})

    # photographs: each photo in one split; photo images per split proportional to the split fractions
    if n_photo:
        names = [photo_names[i] for i in rng.permutation(len(photo_names))]
        per_split: dict[int, list[str]] = {0: [], 1: [], 2: []}
        if len(names) >= 3:
            active = [s for s in (2, 1) if cfg.split_fractions[s] > 0]
            for s, name in zip(active, names):
                per_split[s].append(name)
            per_split[0] = names[len(active):]
            if cfg.split_fractions[0] <= 0:  # no train split: spread the rest over the others
                for i, name in enumerate(per_split[0]):
                    per_split[active[i % len(active)]].append(name)
                per_split[0] = []
        else:
            per_split[0] = names
        photo_targets = _split_targets(n_photo, [cfg.split_fractions[s] if per_split[s] else 0 for s in range(3)])
        for s in range(3):
            for i in range(photo_targets[s]):
                name = per_split[s][i % len(per_split[s])]
                records.append({"kind": "photo", "source_index": PHOTO_ORDER.index(name), "source": f"photo-{name}",
                                "split": SPLITS[s], "variant": i // len(per_split[s]), "photo": name})

    # hidden attributes and quality terms, then a shuffled order (ids)
    for rec in records:
        rec["attributes"] = _sample_attributes(rng, cfg, rec["kind"])
        if rec["kind"] == "photo" and rec["attributes"]["harmony"] == "clash":
            cast = rng.normal(0.0, 1.0, 3)
            cast = cast - cast.mean()
            cast = cast / (np.linalg.norm(cast) + 1e-9) * rng.uniform(0.3, 0.45)
            rec["attributes"]["cast"] = 1.0 + cast
        rec["appeal"] = float(rng.standard_normal())
        rec["residual"] = float(rng.standard_normal())
    perm = rng.permutation(len(records))
    return [records[i] for i in perm]


PHOTO_ORDER = list(PHOTO_SUBJECTS)


# ---------------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------------


def make_dataset(output_dir, size: int = 1000, seed: int = 0, num_bins: int = 10, image_size: int = 96,
                 verbose: bool = False, **knobs) -> dict:
    """Writes a synthetic aesthetic dataset in the generic format and returns a summary.

    Args:
        output_dir: folder to write (`images/`, `metadata.csv`, `dataset.json`; `attributes.csv` on request). Files
            of a previous run with the same names are overwritten; other files are left alone.
        size, seed, num_bins, image_size: see [`SyntheticConfig`]; `**knobs` are its other fields.
        verbose: print progress every 500 images.

    Returns:
        `dict` with `output_dir`, `size`, `split_counts`, `split_sources`, `score_mean`, `score_std`, `vote_std_mean`,
        `high_fraction`, `comment_fraction`, `mean_comments`, `photos` (photo names used), `photo_note`,
        `scene_sources`, `seconds`, `images_per_second`.
    """
    start = time.perf_counter()
    unknown = sorted(set(knobs) - {f.name for f in dataclasses.fields(SyntheticConfig)})
    if unknown:
        raise TypeError(f"make_dataset() got unknown knob(s) {unknown}; see SyntheticConfig / docs/synthetic-data.md")
    if "split_fractions" in knobs and knobs["split_fractions"] is not None:
        knobs["split_fractions"] = tuple(float(f) for f in knobs["split_fractions"])
    if "photos" in knobs and knobs["photos"] is not None:
        knobs["photos"] = tuple(knobs["photos"])
    cfg = SyntheticConfig(size=int(size), seed=int(seed), num_bins=int(num_bins), image_size=int(image_size), **knobs)
    cfg.validate()
    out = Path(output_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)

    photos, photo_note = load_photos(cfg.photos) if cfg.photo_fraction > 0 else ({}, "photo_fraction is 0")
    photo_names = [n for n in PHOTO_ORDER if n in photos]
    records = _plan(cfg, photo_names)
    calibration = _calibration(cfg)
    raters = _make_raters(cfg, cfg.seed)
    shares = np.array([cfg.image_weight, cfg.appeal_weight, cfg.residual_weight], dtype=np.float64)
    shares = np.sqrt(shares / shares.sum())
    scene_cache: dict[int, dict] = {}
    ext = "png" if cfg.image_format == "png" else "jpg"
    width = max(6, len(str(cfg.size - 1)))

    rows, attribute_rows, means, stds = [], [], [], []
    n_comments = []
    for i, rec in enumerate(records):
        a = rec["attributes"]
        rng = np.random.default_rng([cfg.seed, 3, i])
        if rec["kind"] == "scene":
            idx = rec["source_index"]
            if idx not in scene_cache:
                scene_cache.clear()  # variants are not adjacent after shuffling: keep memory flat
                scene_cache[idx] = _make_scene(np.random.default_rng([cfg.seed, 2, idx]))
            scene = scene_cache[idx]
            img = _render_scene(scene, a, cfg.image_size, rng)
            noun = scene["subject"]
        else:
            img = _render_photo(photos[rec["photo"]], rec["photo"], a, cfg.image_size, rng)
            noun = PHOTO_SUBJECTS[rec["photo"]][2]
        img = _to_uint8(_apply_attributes(img, a, rec["kind"], rng))

        image_id = f"syn-{i:0{width}d}"
        file_name = f"images/{image_id}.{ext}"
        pil = Image.fromarray(img, mode="RGB")
        if cfg.image_format == "png":
            pil.save(out / file_name, format="PNG", compress_level=3)
        else:
            pil.save(out / file_name, format="JPEG", quality=90, subsampling=0)

        visible = _image_quality(a, cfg, calibration)
        latent = shares[0] * visible + shares[1] * rec["appeal"] + shares[2] * rec["residual"]
        mu10 = cfg.score_mean + cfg.score_std * latent
        votes = _votes(mu10, raters, cfg, np.random.default_rng([cfg.seed, 5, i]))
        g = _goodness(a)
        g_std = {k: (g[k] - calibration[k][0]) / calibration[k][1] for k in ATTRIBUTES}
        best = {k: (_best_goodness(k) - calibration[k][0]) / calibration[k][1] for k in ATTRIBUTES}
        badness = {k: best[k] - g_std[k] for k in ATTRIBUTES}
        comments = _make_comments(np.random.default_rng([cfg.seed, 6, i]), cfg, a, badness, rec["appeal"], mu10,
                                  noun)
        rows.append([image_id, file_name, " ".join(str(int(v)) for v in votes), "\n".join(comments), rec["split"]])
        scores = np.arange(1, cfg.num_bins + 1)
        mean = float((votes * scores).sum() / votes.sum())
        means.append(mean)
        stds.append(float(math.sqrt(max(((votes * (scores - mean) ** 2).sum() / votes.sum()), 0.0))))
        n_comments.append(len(comments))
        if cfg.write_attributes:
            attribute_rows.append([
                image_id, rec["source"], rec["kind"], f"{a['exposure']:.4f}", a["focus"], f"{a['blur']:.4f}",
                f"{a['bg_blur']:.4f}", f"{a['noise']:.4f}", f"{a['saturation']:.4f}", a["harmony"],
                a["composition"], f"{a['tilt']:.3f}", f"{visible:.4f}", f"{rec['appeal']:.4f}",
                f"{rec['residual']:.4f}", f"{1.0 + (mu10 - 1.0) * (cfg.num_bins - 1) / 9.0:.4f}", f"{mean:.4f}",
            ])
        if verbose and (i + 1) % 500 == 0:
            print(f"[make-dataset] {i + 1}/{cfg.size} images", file=sys.stderr)

    with open(out / "metadata.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["id", "file_name", "votes", "comments", "split"])
        writer.writerows(rows)
    if cfg.write_attributes:
        with open(out / "attributes.csv", "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["id", "source", "kind", "exposure", "focus", "blur", "background_blur", "noise",
                             "saturation", "harmony", "composition", "tilt", "image_quality", "appeal", "residual",
                             "true_mean_score", "vote_mean_score"])
            writer.writerows(attribute_rows)

    split_counts = {s: 0 for s in SPLITS}
    split_sources: dict[str, set] = {s: set() for s in SPLITS}
    for rec in records:
        split_counts[rec["split"]] += 1
        split_sources[rec["split"]].add(rec["source"])
    n_scene_sources = len({r["source"] for r in records if r["kind"] == "scene"})
    used_photos = sorted({r["photo"] for r in records if r["kind"] == "photo"})
    info = {
        "name": cfg.name,
        "description": "Synthetic image-aesthetics proxy dataset made by `aesformer make-dataset` (procedural scenes "
                       "and scikit-image sample photographs); votes come from simulated raters, comments from "
                       "templates. See docs/synthetic-data.md.",
        "num_bins": cfg.num_bins,
        "score_range": [1, cfg.num_bins],
        "threshold": cfg.resolved_threshold,
        # How the data was made: metadata the loader keeps out of the scale (see docs/data-format.md).
        "generator": {
            "seed": cfg.seed,
            "size": cfg.size,
            "version": GENERATOR_VERSION,
            "splits": split_counts,
            "sources": {"scenes": n_scene_sources, "photos": used_photos},
            "photo_note": photo_note,
            "knobs": cfg.knobs(),
        },
    }
    with open(out / "dataset.json", "w", encoding="utf-8", newline="\n") as fh:
        json.dump(info, fh, indent=2, sort_keys=False)
        fh.write("\n")

    seconds = time.perf_counter() - start
    means_arr = np.asarray(means)
    return {
        "output_dir": str(out),
        "size": cfg.size,
        "num_bins": cfg.num_bins,
        "split_counts": split_counts,
        "split_sources": {s: len(v) for s, v in split_sources.items()},
        "score_mean": round(float(means_arr.mean()), 4),
        "score_std": round(float(means_arr.std()), 4),
        "vote_std_mean": round(float(np.mean(stds)), 4),
        "high_fraction": round(float((means_arr > cfg.resolved_threshold).mean()), 4),
        "comment_fraction": round(float(np.mean(np.asarray(n_comments) > 0)), 4),
        "mean_comments": round(float(np.mean(n_comments)), 4),
        "photos": used_photos,
        "photo_note": photo_note,
        "scene_sources": n_scene_sources,
        "seconds": round(seconds, 3),
        "images_per_second": round(cfg.size / seconds, 1) if seconds > 0 else None,
    }


def _best_goodness(attribute: str) -> float:
    return {"focus": 0.5, "composition": 0.6}.get(attribute, 0.0)
