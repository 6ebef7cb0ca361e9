"""Attention maps of Aesformer's fusion layers: attention rollout over the image-only branch's multi-scale tokens,
the with-comments branch's image <-> comment attention, and WordPiece merging of the comment's word weights.

Shipped to the Hugging Face Hub as remote code next to `pipeline_aesformer.py`, which uses it for
`return_attention=True`; the package's `aesformer explain` uses the same functions. Standard library and numpy only:
the functions take the model's attention tensors (read through `.detach()`, on any device) or numpy arrays, and
return numpy arrays. The method and how to read the maps: docs/explain.md.
"""

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

NORMALIZATIONS = ("max", "minmax", "sum", "uniform")
# "uniform" scaling: colour 0.5 = the attention every cell would get if it were spread evenly; 0 and 1 = this many
# times less / more (log scale), so that a nearly flat map stays one colour instead of being stretched to full range.
UNIFORM_SPAN = 2.0


# ----------------------------------------------------------------------------------------------------------- helpers
def _as_numpy(x: Any) -> np.ndarray:
    """A torch tensor (any device, any dtype, with or without grad) or an array-like -> float64 numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _stack_layers(attentions: Any, name: str) -> np.ndarray:
    """One `[B, heads, L, L]` tensor per layer (tuple/list), or one `[layers, B, heads, L, L]` array ->
    `[layers, B, heads, L, L]` float64."""
    if attentions is None:
        raise ValueError(f"{name} is None: run the model with output_attentions=True (and a sample of that branch)")
    if isinstance(attentions, (list, tuple)):
        if not attentions:
            raise ValueError(f"{name} is empty")
        stacked = np.stack([_as_numpy(a) for a in attentions])
    else:
        stacked = _as_numpy(attentions)
    if stacked.ndim != 5 or stacked.shape[-1] != stacked.shape[-2]:
        raise ValueError(
            f"{name} must be one [batch, heads, L, L] tensor per fusion layer, got shape {tuple(stacked.shape)}"
        )
    if not np.isfinite(stacked).all():
        raise ValueError(f"{name} holds non-finite values")
    return stacked


def _crop_padding(stacked: np.ndarray, length: int, name: str) -> np.ndarray:
    """`[layers, B, heads, L, L]` -> `[..., length, length]`: the positions past `length` are the padding of a
    batch mixing both branches (`AesformerOutput.attentions`), which the real queries give exactly zero weight."""
    if stacked.shape[-1] == length:
        return stacked
    if stacked.shape[-1] < length or np.abs(stacked[..., :length, length:]).max() > 0:
        raise ValueError(f"{name} covers {stacked.shape[-1]} tokens, expected {length} (plus padding that receives "
                         "no attention)")
    return stacked[..., :length, :length]


def branch_attentions(attentions: Any, used_comments: Any, with_comments: bool) -> List[np.ndarray]:
    """The rows of one branch from `AesformerOutput.attentions` (one `[B, heads, L, L]` tensor per fusion layer):
    one `[n, heads, L, L]` array per layer for the `n` samples with comments (`with_comments=True`, in batch
    order) or without. `used_comments`: the output's field (any 0/1 or bool `[B]`). The maps below take these and
    drop the padding a batch mixing both branches adds."""
    if attentions is None:
        raise ValueError("attentions is None: run the model with output_attentions=True")
    rows = _as_numpy(used_comments).reshape(-1) != 0
    if not with_comments:
        rows = ~rows
    if not rows.any():
        raise ValueError(f"no sample of this batch took the {'with-comments' if with_comments else 'image-only'} "
                         "branch")
    return [_as_numpy(layer)[rows] for layer in attentions]


def _grid_hw(grid: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(grid, (int, np.integer)):
        h = w = int(grid)
    else:
        h, w = (int(g) for g in grid)
    if h < 1 or w < 1:
        raise ValueError(f"grid must be positive, got {grid}")
    return h, w


def normalize_maps(maps: np.ndarray, normalize: Optional[str]) -> np.ndarray:
    """Per-sample normalisation of `[B, ...]` non-negative maps into [0, 1].

    "max": divide by the sample's maximum (a uniform map becomes all ones); "minmax": stretch min..max to 0..1
    (a uniform map, which has no contrast to stretch, becomes all ones rather than 0/0); "sum": divide by the total
    (a distribution over the cells); "uniform": 0.5 where a cell gets its even share of the total, 0 / 1 at
    `UNIFORM_SPAN` times less / more (log scale): the colours show how strong the contrast really is."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    maps = np.clip(np.asarray(maps, dtype=np.float64), 0.0, None)
    flat = maps.reshape(maps.shape[0], -1)
    out = np.zeros_like(flat)
    for i, row in enumerate(flat):
        if normalize == "sum":
            total = row.sum()
            out[i] = row / total if total > 0 else 0.0
            continue
        if normalize == "uniform":
            total = row.sum()
            if total <= 0:
                out[i] = 0.5
                continue
            ratio = np.clip(row * row.size / total, 1e-12, None)  # 1 = the cell's even share
            out[i] = 0.5 + 0.5 * np.log(ratio) / np.log(UNIFORM_SPAN)
            continue
        high, low = row.max(), row.min()
        if normalize == "max":
            out[i] = row / high if high > 0 else 0.0
        else:
            span = high - low
            # A map flat up to float32 rounding (relative 1e-6) is uniform: nothing to stretch, and no 0/0.
            out[i] = (row - low) / span if span > 1e-6 * high else (1.0 if high > 0 else 0.0)
    return np.clip(out, 0.0, 1.0).reshape(maps.shape)


# ------------------------------------------------------------------------------------------------ image-only branch
def attention_rollout(vision_attentions: Any, add_identity: bool = True) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020) through the fusion layers: `[B, T, T]`, row-stochastic.

    For each layer `l`: `A_l` = attention averaged over heads; `Â_l = (A_l + I) / row-sums` (the identity stands
    for the residual connection around the attention; since the rows of `A_l` sum to 1 this is `(A_l + I) / 2`);
    `R = Â_L ... Â_2 Â_1`. `R[i, j]` is how much output token `i` draws on input token `j` through all layers.
    With `add_identity=False` the plain product of the head-averaged attentions is returned.
    """
    stacked = _stack_layers(vision_attentions, "vision_attentions")  # [layers, B, heads, T, T]
    per_layer = stacked.mean(axis=2)  # heads averaged -> [layers, B, T, T]
    tokens = per_layer.shape[-1]
    rollout = np.broadcast_to(np.eye(tokens), per_layer.shape[1:]).copy()
    for attention in per_layer:
        if add_identity:
            attention = attention + np.eye(tokens)
        attention = attention / np.clip(attention.sum(axis=-1, keepdims=True), 1e-12, None)
        rollout = attention @ rollout  # later layers act on the left
    return rollout


def image_attention_map(
    vision_attentions: Any,
    grid: Union[int, Sequence[int]],
    num_scales: int,
    method: str = "rollout",
    normalize: str = "max",
) -> np.ndarray:
    """Heat map over the image grid from the image-only branch's fusion attention: `[B, H_grid, W_grid]` in [0, 1].

    Args:
        vision_attentions: the image-only rows of `AesformerOutput.attentions` ([`branch_attentions`]), one
            `[B, heads, T, T]` tensor per fusion layer, `T = num_scales * H_grid * W_grid`, scale-major (all tokens
            of stage 1, then stage 2, ...), plus zero-attention padding when the batch mixed both branches.
        grid: the last Swin stage's grid `(H_grid, W_grid)` (or one int for a square grid), e.g. 7 for
            Aesformer-T at 224x224, 2 for the `tiny` preset at 32x32.
        num_scales: number of Swin stages in the multi-scale tokens (4).
        method: "rollout" (attention rollout, see [`attention_rollout`]) or "mean" (the attention of each layer,
            heads and layers averaged, no rollout).
        normalize: "max" (default; 1 = the most attended cell, a uniform map stays uniform at 1), "minmax"
            (stretch to the full 0..1 range; a uniform map is all ones) or "sum" (shares of the cells, summing to 1).

    Method: the vision head reads the MEAN of all output tokens, so the relevance of input token `j` is the mean
    over the output tokens of the rollout, `r_j = (1/T) sum_i R[i, j]` (a distribution over the `T` tokens). Every
    Swin stage is pooled (average pooling) to the last stage's grid before the fusion, so token `s * G + k`
    (scale `s`, cell `k` of the row-major `H_grid x W_grid` grid, `G = H_grid * W_grid`) covers the same image
    cell for every `s`: cell `k`'s value is the average over the scales, `mean_s r[s * G + k]`, i.e.
    `r.reshape(num_scales, H_grid, W_grid).mean(0)`, then normalised per sample.
    """
    if method not in ("rollout", "mean"):
        raise ValueError(f"method must be 'rollout' or 'mean', got {method!r}")
    h, w = _grid_hw(grid)
    if num_scales < 1:
        raise ValueError(f"num_scales must be >= 1, got {num_scales}")
    stacked = _stack_layers(vision_attentions, "vision_attentions")
    tokens = stacked.shape[-1]
    if tokens < num_scales * h * w:
        raise ValueError(
            f"the attention covers {tokens} tokens but num_scales x grid = {num_scales} x {h}x{w} = "
            f"{num_scales * h * w}"
        )
    stacked = _crop_padding(stacked, num_scales * h * w, "vision_attentions")
    if method == "rollout":
        per_query = attention_rollout(stacked)  # [B, T, T]
    else:
        per_query = stacked.mean(axis=(0, 2))  # layers and heads averaged -> [B, T, T]
    received = per_query.mean(axis=1)  # [B, T]: the mean over the output (query) tokens the head pools
    cells = received.reshape(received.shape[0], num_scales, h, w).mean(axis=1)
    return normalize_maps(cells, normalize).astype(np.float32)


# --------------------------------------------------------------------------------------------- with-comments branch
def comment_attention(
    vision_language_attentions: Any,
    attention_mask: Any,
    num_image_tokens: int,
    grid: Union[int, Sequence[int]],
    normalize: str = "max",
) -> Dict[str, np.ndarray]:
    """Image <-> comment attention of the with-comments branch's fusion layers (heads and layers averaged).

    Args:
        vision_language_attentions: the with-comments rows of `AesformerOutput.attentions`
            ([`branch_attentions`]), one `[n, heads, L, L]` tensor per fusion layer, image tokens first
            (`num_image_tokens` of them), then the comment tokens (and zero-attention padding when the batch
            mixed both branches).
        attention_mask: the comments' mask `[n, L_text']` for the `n` samples with comments, or the whole batch's
            `[B, L_text']` (then the rows with a 1 are taken, in order, as the model does). Columns past the text
            length the model used (it drops columns no sample of the group uses) must be all zero and are dropped.
        num_image_tokens: the image tokens in front (`H_grid * W_grid`, 49 for Aesformer-T).
        grid: `(H_grid, W_grid)` of those image tokens (row-major), or one int for a square grid.
        normalize: normalisation of the region maps, see [`image_attention_map`].

    Returns a dict of numpy arrays:
        - `word_weights` `[n, L_text]`: attention the image tokens pay to each comment token (mean over heads,
          layers and the image-token queries); exactly zero on padding, normalised to sum to 1 over the real
          tokens ([CLS] and [SEP] included; drop them and renormalise for display).
        - `region_map` `[n, H_grid, W_grid]` in [0, 1]: attention the real comment tokens ([CLS] and the words)
          pay to each image token, averaged over them (padding queries excluded), then normalised.
        - `cls_region_map` `[n, H_grid, W_grid]` in [0, 1]: the same for the [CLS] token alone (the text head's
          input; the first real token of each row).
        - `token_mask` `[n, L_text]` (bool): the real tokens.
    """
    stacked = _stack_layers(vision_language_attentions, "vision_language_attentions")
    mean = stacked.mean(axis=(0, 2))  # [n, L, L]
    n, length = mean.shape[0], mean.shape[-1]
    h, w = _grid_hw(grid)
    if num_image_tokens != h * w:
        raise ValueError(f"num_image_tokens={num_image_tokens} but the grid {h}x{w} has {h * w} cells")
    text_length = length - num_image_tokens
    if text_length < 1:
        raise ValueError(f"the attention covers {length} tokens: no comment tokens after {num_image_tokens} image ones")

    mask = _as_numpy(attention_mask)
    if mask.ndim == 1:
        mask = mask[None]
    mask = mask != 0
    if mask.shape[0] != n:
        rows = mask.any(axis=1)
        if int(rows.sum()) != n:
            raise ValueError(
                f"attention_mask has {mask.shape[0]} rows ({int(rows.sum())} with comments) but the attention "
                f"has {n} samples"
            )
        mask = mask[rows]
    if mask.shape[1] > text_length:
        if mask[:, text_length:].any():
            raise ValueError(
                f"attention_mask has real tokens past the {text_length} comment tokens the attention covers"
            )
        mask = mask[:, :text_length]
    elif mask.shape[1] < text_length:  # a batch mixing both branches: the comment rows are padded
        stacked = _crop_padding(stacked, num_image_tokens + mask.shape[1], "vision_language_attentions")
        mean = stacked.mean(axis=(0, 2))
        length, text_length = mean.shape[-1], mask.shape[1]
    if not mask.any(axis=1).all():
        raise ValueError("a row of attention_mask has no real token: that sample took the image-only branch")

    image = slice(0, num_image_tokens)
    text = slice(num_image_tokens, length)
    real = mask.astype(np.float64)

    words = mean[:, image, text].mean(axis=1) * real  # image queries -> comment keys; zero on padding
    totals = words.sum(axis=1, keepdims=True)
    words = np.divide(words, totals, out=np.zeros_like(words), where=totals > 0)

    to_image = mean[:, text, image]  # [n, L_text, G]: comment queries -> image keys
    region = (to_image * real[:, :, None]).sum(axis=1) / real.sum(axis=1, keepdims=True)
    cls_index = mask.argmax(axis=1)  # first real token ([CLS]; also right for left padding)
    cls_region = to_image[np.arange(n), cls_index]

    return {
        "word_weights": words.astype(np.float32),
        "region_map": normalize_maps(region.reshape(n, h, w), normalize).astype(np.float32),
        "cls_region_map": normalize_maps(cls_region.reshape(n, h, w), normalize).astype(np.float32),
        "token_mask": mask,
    }


# ------------------------------------------------------------------------------------------------------ comment words
def merge_wordpieces(
    tokens: Sequence[Tuple[str, float]], special_tokens: Sequence[str] = ()
) -> List[Tuple[str, float]]:
    """Merge WordPiece continuation pieces (`##...`) into the word before them, summing the weights; drop the
    special tokens; renormalise the weights to sum to 1 (all zeros stay zeros)."""
    specials = set(special_tokens)
    words: List[List[Any]] = []
    for token, weight in tokens:
        if token in specials:
            continue
        if token.startswith("##") and words:
            words[-1][0] += token[2:]
            words[-1][1] += float(weight)
        else:
            words.append([token[2:] if token.startswith("##") else token, float(weight)])
    total = sum(weight for _, weight in words)
    return [(word, weight / total if total > 0 else 0.0) for word, weight in words]


def word_attention(tokenizer, input_ids: Any, weights: Any) -> List[Tuple[str, float]]:
    """`(word, weight)` of one comment from its real tokens' ids and weights (e.g. `comment_attention`'s
    `word_weights` row over its `token_mask`): [`merge_wordpieces`] of the tokenizer's pieces."""
    ids = [int(i) for i in np.asarray(input_ids.tolist() if hasattr(input_ids, "tolist") else input_ids).reshape(-1)]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    tokens = [(str(p), float(w)) for p, w in zip(pieces, _as_numpy(weights).reshape(-1))]
    return merge_wordpieces(tokens, getattr(tokenizer, "all_special_tokens", ()))


def token_grid(config, pixel_shape: Sequence[int]) -> Tuple[int, int]:
    """The last Swin stage's grid for an input of `pixel_shape = (H, W)`: the patch grid, halved (rounded up,
    as Swin pads odd maps) at each of the `num_stages - 1` patch mergings."""
    vision = config.vision_config
    patch = vision.patch_size
    ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
    h, w = math.ceil(pixel_shape[0] / ph), math.ceil(pixel_shape[1] / pw)
    for _ in range(len(vision.depths) - 1):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return h, w


__all__ = [
    "NORMALIZATIONS",
    "UNIFORM_SPAN",
    "attention_rollout",
    "branch_attentions",
    "comment_attention",
    "image_attention_map",
    "merge_wordpieces",
    "normalize_maps",
    "token_grid",
    "word_attention",
]
