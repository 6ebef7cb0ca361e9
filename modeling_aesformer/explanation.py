"""Why did this photo get this score? Attention maps of the fusion layers, heat-map overlays, one-figure reports.

The fusion layers of [`AesformerModel`] return their attention weights on request (`output_attentions=True`, the
eager attention path). This module turns them into things a person can look at:

The maps themselves are the pipeline's (`attention_maps_aesformer`, shipped with it):
- [`image_attention_map`]: image-only branch. Attention rollout through the fusion layers over the multi-scale
  tokens, then the 4 scales folded onto the one grid they share: a heat map over the image.
- [`comment_attention`]: with-comments branch. Which comment tokens the image tokens attend to (`word_weights`),
  and which image regions the [CLS] and the words attend to (`region_map`).
- [`overlay`]: a heat map upsampled (bilinear) onto the photo, coloured with a numpy colormap (no matplotlib).
- [`explain`]: one forward pass for one image (with or without comments) -> an [`Explanation`].
- [`plot_explanation`]: one PNG figure (photo + overlay, distribution bar chart, highlighted comment text);
  the only function that needs matplotlib (`pip install "aesformer[demo]"`), imported inside it.

`aesformer explain` (`aesformer_cli.explain`) and the web page call these. The method and how to read the figures:
docs/explain.md. This module is package code (not shipped to the Hub).
"""

from __future__ import annotations

import math
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import PIL.Image
import PIL.ImageOps

WITH_COMMENTS = "with_comments"
IMAGE_ONLY = "image_only"
_MAX_TEXT_LINES = 8
_TITLE_CHARS = 58  # characters a line of a panel title (a 5-inch panel at 9-10 pt)
MATPLOTLIB_HINT = 'plotting needs matplotlib: pip install "aesformer[demo]" (or: pip install matplotlib)'

# Colormap anchors (position, R, G, B): dark blue -> blue -> cyan -> yellow -> red -> dark red (a "jet"-like map).
_HEAT_ANCHORS = np.array(
    [
        [0.00, 0.00, 0.00, 0.50],
        [0.12, 0.00, 0.00, 1.00],
        [0.37, 0.00, 1.00, 1.00],
        [0.50, 0.50, 1.00, 0.50],
        [0.63, 1.00, 1.00, 0.00],
        [0.88, 1.00, 0.00, 0.00],
        [1.00, 0.50, 0.00, 0.00],
    ]
)


# Word highlights: white -> yellow -> orange -> red (light boxes for little weight, so the text stays readable).
_WORD_ANCHORS = np.array(
    [
        [0.00, 1.00, 1.00, 1.00],
        [0.35, 1.00, 0.93, 0.55],
        [0.70, 1.00, 0.60, 0.20],
        [1.00, 0.80, 0.10, 0.10],
    ]
)


# ------------------------------------------------------------------------------------------------------- rendering
def _colormap(values: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    values = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0)
    channels = [np.interp(values, anchors[:, 0], anchors[:, c]) for c in (1, 2, 3)]
    return np.round(np.stack(channels, axis=-1) * 255).astype(np.uint8)


def heat_colors(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 `[..., 3]` with a jet-like colormap (numpy only)."""
    return _colormap(values, _HEAT_ANCHORS)


def word_colors(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 `[..., 3]`, white -> yellow -> red, for highlighting words."""
    return _colormap(values, _WORD_ANCHORS)


def upsample(heatmap: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a `[H_grid, W_grid]` map to `size = (width, height)` (cell centres at pixel-block
    centres, edges clamped), as float32 in [0, 1]."""
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2 or heatmap.size == 0:
        raise ValueError(f"heatmap must be a non-empty 2-D [H_grid, W_grid] array, got shape {heatmap.shape}")
    if not np.isfinite(heatmap).all():
        raise ValueError("heatmap holds non-finite values")
    width, height = int(size[0]), int(size[1])
    resized = PIL.Image.fromarray(np.ascontiguousarray(heatmap)).resize(
        (width, height), PIL.Image.Resampling.BILINEAR
    )
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def overlay(image: PIL.Image.Image, heatmap: np.ndarray, alpha: float = 0.5) -> PIL.Image.Image:
    """The photo with the heat map blended on top: an RGB image of EXACTLY `image.size`.

    The `[H_grid, W_grid]` map (values in [0, 1]) is upsampled bilinearly to the image's size — the processor
    squashes the whole image to the model's square input without cropping, so the grid covers the whole photo —
    coloured with [`heat_colors`] and blended: `(1 - alpha) * photo + alpha * colour`.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not isinstance(image, PIL.Image.Image):
        raise TypeError(f"image must be a PIL image, got {type(image).__name__}")
    heat = upsample(heatmap, image.size)
    photo = np.asarray(image.convert("RGB"), dtype=np.float32)
    blended = (1.0 - alpha) * photo + alpha * heat_colors(heat).astype(np.float32)
    return PIL.Image.fromarray(np.clip(np.round(blended), 0, 255).astype(np.uint8), "RGB")


# ------------------------------------------------------------------------------------------------------ explanation
@dataclass
class Explanation:
    """What [`explain`] found for one image.

    Attributes:
        score, std: mean and standard deviation of the predicted distribution, on the answering head's scale.
        label: "high" iff `score > threshold`.
        threshold: the answering head's high/low threshold.
        distribution: probability of each score bin; `bin_values` the score each bin stands for.
        branch: "with_comments" or "image_only".
        heatmap: `[H_grid, W_grid]` in [0, 1]: the attention-rollout map (image only) or the comment -> image
            `region_map` (with comments), scaled for display (against an even share by default, see [`explain`]).
        contrast: most / least attended cell of that map before scaling (1.0 = perfectly flat; a stretched map
            with a contrast near 1 shows noise, not a preference).
        overlay: the photo (upright, original size) with the heat map blended on top.
        image: the photo as given (EXIF orientation applied, RGB).
        words: with comments, `(word, weight)` for each word of the comment (WordPiece `##` pieces merged, weights
            summed; [CLS]/[SEP] dropped; renormalised to sum to 1); `None` otherwise.
        tokens: with comments, `(token, weight)` for every real token, [CLS]/[SEP] included (`word_weights`).
        adapter: the image-only head that answered (a dataset adapter, or "base"); `None` with comments.
        trained: image only: whether training or conversion produced that head (False: its score means nothing);
            `None` with comments.
        maps: the unstretched maps, by name: `rollout` (or `mean`) for image only; `region_map`, `cls_region_map`
            with comments (shares of the grid cells, each summing to 1) and `word_weights` (per real token).
    """

    score: float
    std: float
    label: str
    threshold: float
    distribution: np.ndarray
    bin_values: np.ndarray
    branch: str
    heatmap: np.ndarray
    overlay: PIL.Image.Image
    image: PIL.Image.Image
    words: Optional[List[Tuple[str, float]]] = None
    tokens: Optional[List[Tuple[str, float]]] = None
    adapter: Optional[str] = None
    contrast: float = 1.0
    maps: Dict[str, np.ndarray] = field(default_factory=dict)
    trained: Optional[bool] = None
    normalize: str = "uniform"
    grid: Tuple[int, int] = (0, 0)


def _load_image(image: Any) -> PIL.Image.Image:
    if isinstance(image, (str, os.PathLike)):
        with PIL.Image.open(image) as opened:
            opened.load()
            return PIL.ImageOps.exif_transpose(opened)  # a loaded copy, upright, orientation tag removed
    if isinstance(image, np.ndarray):
        return PIL.Image.fromarray(image)
    if isinstance(image, PIL.Image.Image):
        return PIL.ImageOps.exif_transpose(image)
    raise TypeError(f"image must be a path, a PIL image or an HWC uint8 array, got {type(image).__name__}")


def _display_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        matte = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(matte, rgba).convert("RGB")
    return image.convert("RGB")


def _forward_with_attentions(model, inputs: dict, adapter: Optional[str]):
    """One forward with the fusion layers' attention weights, in eval mode and without autograd; every module's own
    train/eval flag is restored afterwards (a PeftModel wrapper may say "training" while the model under it is in
    eval mode: `model.train(model.training)` would switch dropout on everywhere)."""
    import torch

    kwargs = {"output_attentions": True}
    if adapter is not None:
        kwargs["adapter"] = adapter
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.inference_mode():
            return model(**inputs, **kwargs)
    finally:
        for module, training in modes:
            module.training = training


def explain(
    model,
    processor,
    image: Any,
    comments: Union[None, str, Sequence[str]] = None,
    adapter: Optional[str] = None,
    alpha: float = 0.5,
    method: str = "rollout",
    normalize: str = "uniform",
) -> Explanation:
    """Score one image (with or without comments) and explain the score with the fusion layers' attention.

    Runs the model ONCE with `output_attentions=True` (and `adapter=adapter` when given: a dataset adapter name,
    or "base"), in eval mode and without autograd (every module's train/eval flag is restored afterwards).

    Args:
        model: an `AesformerModel`, or a `PeftModel` carrying dataset adapters.
        processor: its `AesformerProcessor` (the tokenizer is `processor.tokenizer`).
        image: a path, a PIL image or an HWC uint8 array.
        comments: the image's comments (a string or a list of strings, joined); `None`/empty = image only.
        adapter: the dataset adapter for the image-only branch (`None` = whatever is active: the model's default
            adapter when it was loaded with `from_pretrained`).
        alpha: opacity of the heat map in the overlay.
        method: "rollout" or "mean", see [`image_attention_map`] (image-only branch).
        normalize: how `heatmap` (and so the overlay) is scaled into [0, 1]: "uniform" (default: 0.5 = a cell's
            even share of the attention, 0 / 1 = `UNIFORM_SPAN` times less / more, so a nearly flat map stays
            nearly one colour), "minmax" (the least attended cell is 0, the most attended 1, however small the
            difference; `contrast` says how flat the map really was), "max" or "sum" (see
            [`image_attention_map`]). `maps` keeps the unstretched shares.
    """
    import torch

    from .adapter_weights_aesformer import base_model
    from .attention_maps_aesformer import (
        _as_numpy,
        _stack_layers,
        branch_attentions,
        comment_attention,
        image_attention_map,
        merge_wordpieces,
        normalize_maps,
        token_grid,
    )

    photo = _load_image(image)
    inputs = processor(images=photo, comments=comments, return_tensors="pt")
    device = next(iter(model.parameters())).device
    inputs = {k: v.to(device) for k, v in inputs.items()}
    out = _forward_with_attentions(model, inputs, adapter)

    used_comments = bool(out.used_comments[0])
    branch = WITH_COMMENTS if used_comments else IMAGE_ONLY
    base_config = base_model(model).config
    num_scales = len(base_config.vision_config.depths)
    grid = token_grid(base_config, tuple(inputs["pixel_values"].shape[-2:]))
    maps: Dict[str, np.ndarray] = {}
    words = tokens = None
    if used_comments:
        attentions = branch_attentions(out.attentions, out.used_comments, True)
        num_image = grid[0] * grid[1]
        found = comment_attention(attentions, inputs["attention_mask"], num_image, grid, normalize="sum")
        share = found["region_map"][0]
        maps.update(region_map=share, cls_region_map=found["cls_region_map"][0],
                    word_weights=found["word_weights"][0])
        real = found["token_mask"][0]
        ids = inputs["input_ids"][0, : real.shape[0]][torch.as_tensor(real, device=device)].tolist()
        tokenizer = processor.tokenizer
        pieces = tokenizer.convert_ids_to_tokens(ids)
        tokens = [(str(p), float(w)) for p, w in zip(pieces, found["word_weights"][0][real])]
        words = merge_wordpieces(tokens, getattr(tokenizer, "all_special_tokens", ()))
    else:
        attentions = branch_attentions(out.attentions, out.used_comments, False)
        tokens_per_scale = _stack_layers(attentions, "vision_attentions").shape[-1] // num_scales
        if tokens_per_scale != grid[0] * grid[1]:  # an unexpected input size: fall back to a square grid
            side = int(round(math.sqrt(tokens_per_scale)))
            if side * side != tokens_per_scale:
                raise ValueError(f"cannot place {tokens_per_scale} tokens per scale on the {grid} grid")
            grid = (side, side)
        share = image_attention_map(attentions, grid, num_scales, method=method, normalize="sum")[0]
        maps[method] = share
    heatmap = normalize_maps(share[None], normalize)[0].astype(np.float32)
    low, high = float(share.min()), float(share.max())
    contrast = high / low if low > 0 else float("inf")

    # The scale of the head that answered comes with the output (NaN past its last bin).
    values = _as_numpy(out.bin_values[0])
    values = values[np.isfinite(values)]
    distribution = _as_numpy(out.distribution[0])[: len(values)]
    score, std, threshold = float(out.score[0]), float(out.std[0]), float(out.threshold[0])
    display = _display_rgb(photo)
    return Explanation(
        score=score, std=std, label="high" if score > threshold else "low", threshold=threshold,
        distribution=distribution, bin_values=values, branch=branch, heatmap=heatmap,
        overlay=overlay(display, heatmap, alpha=alpha), image=display, words=words, tokens=tokens,
        adapter=None if used_comments else getattr(out, "image_only_adapter", adapter),
        contrast=contrast, maps=maps, trained=None if used_comments else getattr(out, "image_only_trained", None),
        normalize=normalize, grid=tuple(int(g) for g in grid),
    )


# ------------------------------------------------------------------------------------------------------------ figure
def require_matplotlib():
    """ImportError with the install hint when matplotlib is missing (checked before a long run, not after)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ImportError(MATPLOTLIB_HINT) from err


def _layout_words(widths: Sequence[float], space: float, max_lines: int, more_width) -> Tuple[list, int]:
    """Greedy line breaking of boxes of `widths` (fractions of the line) separated by `space`, on at most
    `max_lines` lines. Returns `(positions, shown)`: the `(line, x)` of each shown box, and how many boxes are
    shown; when some do not fit, the last line keeps room for a "(+N more)" box of width `more_width(N)`."""

    def place(n):
        positions, line, x = [], 0, 0.0
        for width in widths[:n]:
            if x > 0 and x + width > 1.0:
                line, x = line + 1, 0.0
            positions.append((line, x))
            x += width + space
        return positions, line, x

    positions, line, _ = place(len(widths))
    if line < max_lines:
        return positions, len(widths)
    for n in range(len(widths) - 1, -1, -1):
        positions, line, x = place(n)
        if line < max_lines - 1 or (line == max_lines - 1 and x + more_width(len(widths) - n) <= 1.0):
            return positions, n
    return [], 0


def _draw_highlighted_words(ax, words: Sequence[Tuple[str, float]], renderer, max_lines: int,
                            fontsize: float = 11.0, even_share: bool = False) -> None:
    """Lay the words out left to right with wrapping, each on a box coloured by its weight (relative to the
    largest word weight, or with `even_share` on the "uniform" scale: mid colour = 1 / number of words); words that
    do not fit on `max_lines` lines are counted at the end."""
    from .attention_maps_aesformer import normalize_maps

    ax.set_axis_off()
    if not words:
        ax.text(0.0, 0.5, "(no words)", transform=ax.transAxes, fontsize=fontsize, va="center")
        return
    box = ax.get_window_extent(renderer)
    width_px, height_px = max(box.width, 1.0), max(box.height, 1.0)
    points_to_px = ax.figure.dpi / 72.0
    pad = 0.25 * fontsize * points_to_px  # the bbox pad around each word
    space = 0.45 * fontsize * points_to_px / width_px

    def measure(word):
        probe = ax.text(0, 0, word, fontsize=fontsize, transform=ax.transAxes)
        width = (probe.get_window_extent(renderer).width + 2 * pad) / width_px
        probe.remove()
        return width

    widths = [measure(word) for word, _ in words]
    more = lambda n: measure(f"... (+{n} more)")  # noqa: E731
    positions, shown = _layout_words(widths, space, max_lines, more)
    line_height = min(2.1 * fontsize * points_to_px / height_px, 1.0 / max_lines)
    top = max(weight for _, weight in words) or 1.0
    weights = np.array([[weight for _, weight in words]])
    levels = normalize_maps(weights, "uniform")[0] if even_share else weights[0] / top
    for index, ((word, weight), (line, x)) in enumerate(zip(words[:shown], positions)):
        colour = word_colors(np.array(levels[index])) / 255.0
        luminance = float(colour @ np.array([0.299, 0.587, 0.114]))  # light text on dark boxes
        ax.text(
            x + pad / width_px, 1.0 - (line + 0.5) * line_height, word, transform=ax.transAxes,
            fontsize=fontsize, va="center", ha="left", color="white" if luminance < 0.5 else "black",
            bbox={"boxstyle": "round,pad=0.25", "facecolor": tuple(colour), "edgecolor": "#bbbbbb",
                  "linewidth": 0.5},
        )
    if shown < len(words):
        line, x = (positions[-1][0], positions[-1][1] + widths[shown - 1] + space) if positions else (0, 0.0)
        ax.text(x + pad / width_px, 1.0 - (line + 0.5) * line_height, f"... (+{len(words) - shown} more)",
                transform=ax.transAxes, fontsize=fontsize, va="center", ha="left", color="dimgrey")


def plot_explanation(explanation: Explanation, path: Union[str, os.PathLike], dpi: int = 120) -> Path:
    """Write ONE PNG figure: the photo with the heat-map overlay (and a colour bar), the predicted distribution as
    a bar chart titled with score, std and label, and — when comments were given — the comment with each word on
    a box coloured by its weight. Needs matplotlib (imported here only, no pyplot state). Returns the path."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from .attention_maps_aesformer import UNIFORM_SPAN
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.figure import Figure

    e = explanation
    has_words = e.words is not None
    # Room for the comment: about 90 characters a line, at most 8 lines (the rest is counted, not drawn).
    lines = min(_MAX_TEXT_LINES, max(1, math.ceil(sum(len(w) + 2 for w, _ in e.words) / 90))) if has_words else 0
    text_height = 0.45 + 0.34 * lines
    fig = Figure(figsize=(10, 4.2 + (text_height if has_words else 0.0)), dpi=dpi, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2 if has_words else 1, 2, height_ratios=[4.2, text_height] if has_words else [1],
                            width_ratios=[1.1, 1])

    ax_photo = fig.add_subplot(grid[0, 0])
    ax_photo.imshow(np.asarray(e.overlay))
    ax_photo.set_axis_off()
    grid_text = f"{e.grid[0]}×{e.grid[1]} grid" if e.grid[0] else "grid"
    if e.branch == WITH_COMMENTS:
        what = f"with comments: image regions the comment attends to ({grid_text})"
    else:
        head = f"adapter {e.adapter}" if e.adapter else "image-only head"
        if e.trained is False:
            head += ", UNTRAINED: no meaning"
        what = f"image only ({head}): attention rollout, scales combined ({grid_text})"
    if not np.isfinite(e.contrast):
        flatness = "∞"
    else:
        flatness = f"{e.contrast:.3f}" if e.contrast < 10 else f"{e.contrast:.3g}"
    # wrapped to the panel's width: a title wider than its axes would run off the figure's edge
    ax_photo.set_title(textwrap.fill(what, _TITLE_CHARS) + f"\nmost / least attended cell: {flatness}×", fontsize=9)
    cmap = ListedColormap(heat_colors(np.linspace(0, 1, 256)) / 255.0)
    colorbar = fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=cmap), ax=ax_photo, fraction=0.04, pad=0.02)
    if e.normalize == "uniform":
        colorbar.set_ticks([0, 0.5, 1])
        colorbar.set_ticklabels([f"≤ 1/{UNIFORM_SPAN:g}×", "even share", f"≥ {UNIFORM_SPAN:g}×"])
    else:
        colorbar.set_ticks([0, 1])
        colorbar.set_ticklabels(["least", "most"])
    colorbar.ax.tick_params(labelsize=7)

    ax_bars = fig.add_subplot(grid[0, 1])
    values = np.asarray(e.bin_values, dtype=float)
    step = float(np.min(np.diff(values))) if len(values) > 1 else 1.0
    colours = ["#d9822b" if v > e.threshold else "#4a7ab5" for v in values]
    ax_bars.bar(values, e.distribution, width=0.8 * step, color=colours)
    ax_bars.axvline(e.score, color="black", linestyle="--", linewidth=1)
    ax_bars.axvline(e.threshold, color="grey", linestyle=":", linewidth=1)
    ax_bars.set_xticks(values)
    ax_bars.set_xticklabels([f"{v:g}" for v in values], fontsize=8)
    ax_bars.tick_params(axis="y", labelsize=8)
    ax_bars.set_xlabel("score bin\n(dashed: mean score, dotted: threshold; orange bins count as high)", fontsize=8)
    ax_bars.set_ylabel("probability", fontsize=8)
    ax_bars.set_ylim(0, max(float(np.max(e.distribution)) * 1.15, 1e-6))
    ax_bars.set_title(textwrap.fill(f"score {e.score:.2f} ± {e.std:.2f} (std) — {e.label} (threshold "
                                    f"{e.threshold:g})", _TITLE_CHARS), fontsize=10)

    ax_text = None
    if has_words:
        ax_text = fig.add_subplot(grid[1, :])
        ax_text.set_title("comment: the words the image attends to (redder = more"
                          + ("; mid colour = an even share)" if e.normalize == "uniform" else ")"),
                          fontsize=9, loc="left")
        ax_text.set_axis_off()
    # Fix the layout first, then lay the words out in the text panel's final size.
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    if ax_text is not None:
        _draw_highlighted_words(ax_text, e.words, canvas.get_renderer(), max_lines=lines,
                                even_share=e.normalize == "uniform")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi)
    return path


__all__ = [
    "Explanation",
    "MATPLOTLIB_HINT",
    "explain",
    "heat_colors",
    "overlay",
    "plot_explanation",
    "require_matplotlib",
    "upsample",
    "word_colors",
]
