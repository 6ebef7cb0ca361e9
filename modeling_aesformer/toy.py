"""Small offline building blocks: a WordPiece vocabulary and procedurally drawn images (no downloads)."""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_WORDS = (
    "the a an is of and to in on with this that it very too not great nice photo image shot colour color colours "
    "composition light lighting sharp blurry blur soft dark bright lovely boring focus focused subject sky horizon "
    "noise noisy exposure exposed over under love like bad good well done beautiful tilted straight centre center "
    "thirds rule placement saturated dull vivid harmony harmonious crop cropped cut off background detail details"
).split()


def write_toy_vocab(path, size: int = 512) -> Path:
    """Write a BERT WordPiece `vocab.txt` with exactly `size` entries ([PAD]=0, [UNK], [CLS], [SEP], [MASK],
    common photo-critique words, characters and `##` pieces, then `[unusedN]` filler)."""
    chars = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?-'")
    tokens = list(dict.fromkeys(SPECIAL_TOKENS + _WORDS + chars + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]))
    if len(tokens) > size:
        raise ValueError(f"a toy vocabulary needs at least {len(tokens)} entries, asked for {size}")
    tokens += [f"[unused{i}]" for i in range(size - len(tokens))]
    path = Path(path)
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def draw_scene(seed: int, size=(160, 120)) -> Image.Image:
    """A simple procedurally drawn scene: sky/ground split at a horizon, a subject disc, optional blur."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = Image.new("RGB", size, tuple(int(c) for c in rng.integers(60, 230, 3)))
    draw = ImageDraw.Draw(image)
    horizon = int(height * rng.uniform(0.3, 0.7))
    draw.rectangle([0, horizon, width, height], fill=tuple(int(c) for c in rng.integers(20, 160, 3)))
    cx, cy, r = int(width * rng.uniform(0.2, 0.8)), int(height * rng.uniform(0.2, 0.8)), int(rng.integers(8, 30))
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(1, 4))))
    return image
