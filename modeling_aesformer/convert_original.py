"""Convert a checkpoint of the original AesFormer code (AiArt-HDU/aesformer) into an `AesformerModel` folder.

Package code only (not shipped to the Hub). The original code saves ONE flat state dict that holds the Swin image
encoder in the Microsoft/timm naming, a transformers `BertModel`, the two fusion layers (listed twice: once as
`cross_encoder.*` and once as their `vlmo_neck.layers.*` aliases), the image-only neck, three heads, and the
training-only state of stage 1 (momentum encoders, contrastive norms, queues, temperature).

The mapping is data, not code: `RENAME_RULES` (one regex -> one target), `SPLIT_RULES` (one regex -> several
targets, Swin's fused qkv), `DUPLICATE_RULES` (aliases that must equal their twin) and `DROP_RULES` (state the
model does not use). Every key must be placed by exactly one rule and every model key must be filled, or the
conversion is refused with the full list of what did not fit; nothing is ever loaded with `strict=False`.

    >>> from modeling_aesformer.convert_original import convert_original_checkpoint
    >>> report = convert_original_checkpoint("aesformer_t.pth", "aesformer-t", tokenizer_dir="bert-base-cased")
    >>> print(report.summary())

Command line: `aesformer convert-original CHECKPOINT --output DIR [--tokenizer DIR]`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Union

if TYPE_CHECKING:  # imported where used: `aesformer convert-original --help` must not wait for torch/transformers
    import torch

    from .configuration_aesformer import AesformerConfig

__all__ = [
    "ConversionError",
    "ConversionPlan",
    "ConversionReport",
    "DROP_RULES",
    "DUPLICATE_RULES",
    "Placement",
    "RENAME_RULES",
    "SPLIT_RULES",
    "add_subparser",
    "convert_original_checkpoint",
    "detect_config",
    "load_original_state_dict",
    "normalize_state_dict",
    "plan_conversion",
    "run",
]

# ---------------------------------------------------------------------------------------------------------------------
# The mapping tables. Patterns are matched with `re.fullmatch` against the original key (after `module.` is stripped);
# a replacement is a `re` template (`\1`, ...) or a function of the match (only where an index shifts by one).

_SWIN = r"feature_vit\.img_model\."
_BLOCK = _SWIN + r"layers\.(\d+)\.blocks\.(\d+)\."
_BLOCK_TO = r"vision_model.encoder.layers.\1.blocks.\2."
_FUSION = r"cross_encoder\.(\d+)\."
_NECK = r"vlmo_neck\.layers\.(\d+)\."
_WB = r"(weight|bias)"

Replacement = Union[str, Callable[["re.Match[str]"], str]]

RENAME_RULES: tuple[tuple[str, Replacement], ...] = (
    # Swin (Microsoft/timm names) -> transformers 5.23 `SwinModel`.
    (_SWIN + r"patch_embed\.proj\." + _WB, r"vision_model.embeddings.patch_embeddings.projection.\1"),
    (_SWIN + r"patch_embed\.norm\." + _WB, r"vision_model.embeddings.norm.\1"),
    (_BLOCK + r"norm1\." + _WB, _BLOCK_TO + r"layernorm_before.\3"),
    (_BLOCK + r"norm2\." + _WB, _BLOCK_TO + r"layernorm_after.\3"),
    (_BLOCK + r"attn\.proj\." + _WB, _BLOCK_TO + r"attention.o_proj.\3"),
    (
        _BLOCK + r"attn\.relative_position_bias_table",
        _BLOCK_TO + r"attention.relative_position_bias.relative_position_bias_table",
    ),
    (_BLOCK + r"mlp\.(fc1|fc2)\." + _WB, _BLOCK_TO + r"mlp.\3.\4"),
    (_SWIN + r"layers\.(\d+)\.downsample\.(reduction|norm)\." + _WB,
     r"vision_model.encoder.layers.\1.downsample.\2.\3"),
    # BERT (already transformers names); its pooler is dropped (see DROP_RULES).
    (r"feature\.bert_model\.((?:embeddings|encoder)\..+)", r"text_model.\1"),
    # Fusion layers: shared attention + VL-FFN from `cross_encoder`, V-FFN from `vlmo_neck`.
    (_FUSION + r"attention\.self\.(query|key|value)\." + _WB, r"fusion_layers.\1.attention.\2.\3"),
    (_FUSION + r"attention\.output\.dense\." + _WB, r"fusion_layers.\1.attention.output.\2"),
    (_FUSION + r"attention\.output\.LayerNorm\." + _WB, r"fusion_layers.\1.attention.layer_norm.\2"),
    (_FUSION + r"intermediate\.dense\." + _WB, r"fusion_layers.\1.vl_ffn.intermediate.\2"),
    (_FUSION + r"output\.dense\." + _WB, r"fusion_layers.\1.vl_ffn.output.\2"),
    (_FUSION + r"output\.LayerNorm\." + _WB, r"fusion_layers.\1.vl_ffn.layer_norm.\2"),
    (_NECK + r"intermediate_v\.dense\." + _WB, r"fusion_layers.\1.vision_ffn.intermediate.\2"),
    (_NECK + r"output_v\.dense\." + _WB, r"fusion_layers.\1.vision_ffn.output.\2"),
    (_NECK + r"output_v\.LayerNorm\." + _WB, r"fusion_layers.\1.vision_ffn.layer_norm.\2"),
    # Multi-scale neck (`stage1_linear` in the released code, `stages1_linear` in a later revision) and adapters.
    (r"feature_neck\.stages?(\d+)_linear\." + _WB,
     lambda m: f"multi_scale_adapter.stage_projections.{int(m[1]) - 1}.{m[2]}"),
    (r"adapter_(\d+)\.0\." + _WB, lambda m: f"multi_scale_adapter.bottlenecks.{int(m[1]) - 1}.down.{m[2]}"),
    (r"adapter_(\d+)\.2\." + _WB, lambda m: f"multi_scale_adapter.bottlenecks.{int(m[1]) - 1}.up.{m[2]}"),
    # Heads (`Linear -> ReLU -> Linear -> Softmax`: Sequential indices 0 and 2) and their norms.
    (r"heads_vl_v\.0\." + _WB, r"vl_image_head.dense.\1"),
    (r"heads_vl_v\.2\." + _WB, r"vl_image_head.out_proj.\1"),
    (r"heads_vl_l\.0\." + _WB, r"vl_text_head.dense.\1"),
    (r"heads_vl_l\.2\." + _WB, r"vl_text_head.out_proj.\1"),
    (r"head_v\.0\." + _WB, r"vision_head.dense.\1"),
    (r"head_v\.2\." + _WB, r"vision_head.out_proj.\1"),
    (r"norm\." + _WB, r"vl_image_norm.\1"),
    (r"norm_v\." + _WB, r"vision_norm.\1"),
    # Aesformer-B only: Linear(1024, 768) after Swin-B.
    (r"proj\." + _WB, r"vision_projection.\1"),
)

# One key -> equal chunks along `dim`, in the order of the targets.
SPLIT_RULES: tuple[tuple[str, tuple[str, ...], int], ...] = (
    (
        _BLOCK + r"attn\.qkv\." + _WB,
        (_BLOCK_TO + r"attention.q_proj.\3", _BLOCK_TO + r"attention.k_proj.\3", _BLOCK_TO + r"attention.v_proj.\3"),
        0,
    ),
)

# Aliases of shared modules: the original state dict lists the fusion attention and VL-FFN a second time. Each must
# equal its twin (checked), then only the twin is converted. A checkpoint holding only the alias is accepted too.
DUPLICATE_RULES: tuple[tuple[str, str], ...] = (
    (_NECK + r"sa\.(.+)", r"cross_encoder.\1.attention.\2"),
    (_NECK + r"intermediate_vl\.(.+)", r"cross_encoder.\1.intermediate.\2"),
    (_NECK + r"output_vl\.(.+)", r"cross_encoder.\1.output.\2"),
)

# State AesformerModel does not hold: (pattern, group reported).
DROP_RULES: tuple[tuple[str, str], ...] = (
    (r"visual_encoder_m\..+", "momentum Swin (visual_encoder_m.*, stage-1 ITC training only)"),
    (r"text_encoder_m\..+", "momentum BERT (text_encoder_m.*, stage-1 ITC training only)"),
    (r"norm_cl\..+", "contrastive norm (norm_cl.*, stage-1 ITC training only)"),
    (r"norm_cl_m\..+", "momentum contrastive norm (norm_cl_m.*, stage-1 ITC training only)"),
    (r"proj_m\..+", "momentum projection (proj_m.*, Aesformer-B stage-1 ITC training only)"),
    (r"image_queue|text_queue|queue_ptr", "ITC feature queues (image_queue, text_queue, queue_ptr)"),
    (r"temp", "ITC temperature (temp)"),
    (_SWIN + r"head\..+", "Swin classifier head (feature_vit.img_model.head.*, unused by the original)"),
    (_SWIN + r"norm\." + _WB, "Swin final norm (feature_vit.img_model.norm.*, unused: stage outputs are un-normed)"),
    (_SWIN + r".+\.(?:attn_mask|relative_position_index)",
     "Swin buffers (attn_mask, relative_position_index: recomputed)"),
    (r"feature\.bert_model\.pooler\..+", "BERT pooler (feature.bert_model.pooler.*: AesformerModel has no pooler)"),
    (r"feature\.bert_model\.embeddings\.(?:position_ids|token_type_ids)", "BERT buffers (embeddings.position_ids)"),
)

_WRAPPER_KEYS = ("model", "state_dict")
_MODULE_PREFIX = "module."
_BERT_BASE_CASED_VOCAB = 28996
_IN_MEMORY = "<in-memory state dict>"


class ConversionError(ValueError):
    """The checkpoint cannot be converted; the message lists everything that did not fit. Nothing was written."""


@dataclass(frozen=True)
class Placement:
    """Where a model key comes from: `source` whole, or chunk `chunk` of `chunks` equal chunks along `dim`."""

    source: str
    chunk: Optional[int] = None
    chunks: int = 1
    dim: int = 0

    def take(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.chunk is None:
            return tensor
        return tensor.chunk(self.chunks, dim=self.dim)[self.chunk]

    def __str__(self) -> str:
        if self.chunk is None:
            return self.source
        return f"{self.source}[chunk {self.chunk + 1}/{self.chunks} along dim {self.dim}]"


@dataclass
class ConversionPlan:
    """The result of `plan_conversion`: works on shapes only (meta tensors are fine).

    Unpacks as `mapping, dropped, unplaced, missing = plan`.

    Attributes:
        mapping: model key -> `Placement` (which checkpoint key, which chunk).
        dropped: group description -> checkpoint keys deliberately not converted.
        unplaced: checkpoint key -> why no rule placed it.
        missing: model parameters no checkpoint key fills.
        defaults: model buffers no checkpoint key fills (the original has no such state, e.g. a head's bin values):
            they keep the value a freshly built `AesformerModel(config)` computes from the config.
        duplicates: alias key -> its twin (to be checked equal; the twin is converted).
        shape_mismatches: human-readable lines, one per checkpoint key whose shape does not fit its target.
        config: the `AesformerConfig` the checkpoint is converted into.
        variant: "aesformer-t" or "aesformer-b" (the preset the config started from).
    """

    mapping: dict
    dropped: dict
    unplaced: dict
    missing: list
    defaults: list = field(default_factory=list)
    duplicates: dict = field(default_factory=dict)
    shape_mismatches: list = field(default_factory=list)
    config: Optional[AesformerConfig] = None
    variant: str = ""

    def __iter__(self):
        return iter((self.mapping, self.dropped, self.unplaced, self.missing))

    @property
    def consumed(self) -> list:
        """Checkpoint keys whose tensors end up in the model."""
        return sorted({p.source for p in self.mapping.values()})

    @property
    def ok(self) -> bool:
        return not (self.unplaced or self.missing or self.shape_mismatches)

    def problems(self) -> list:
        lines = []
        if self.unplaced:
            lines.append(f"{len(self.unplaced)} checkpoint key(s) could not be placed:")
            lines += [f"  - {key}  ({why})" for key, why in sorted(self.unplaced.items())]
        if self.missing:
            lines.append(f"{len(self.missing)} model key(s) would be left missing (no checkpoint key maps to them):")
            lines += [f"  - {key}" for key in self.missing]
        if self.shape_mismatches:
            lines.append(f"{len(self.shape_mismatches)} shape/dtype mismatch(es):")
            lines += [f"  - {line}" for line in self.shape_mismatches]
        return lines


@dataclass
class ConversionReport:
    """What `convert_original_checkpoint` did."""

    source: str
    sha256: Optional[str]
    output_dir: str
    variant: str
    config: AesformerConfig
    mapping: dict
    dropped: dict
    duplicates: dict
    defaults: list
    vocab_size: int
    num_parameters: int
    tokenizer_saved: bool
    notes: list = field(default_factory=list)

    @property
    def consumed(self) -> list:
        """Checkpoint keys converted into model weights."""
        return sorted({p.source for p in self.mapping.values()})

    @property
    def dropped_counts(self) -> dict:
        return {group: len(keys) for group, keys in self.dropped.items()}

    @property
    def accounted_keys(self) -> set:
        """Every checkpoint key (after `module.` stripping): converted, a verified duplicate, or dropped."""
        keys = set(self.consumed) | set(self.duplicates)
        for group in self.dropped.values():
            keys.update(group)
        return keys

    def summary(self) -> str:
        vision = self.config.vision_config
        lines = [
            f"Converted {self.source} -> {self.output_dir}",
            f"  architecture: {self.variant} (Swin embed {vision.embed_dim}, depths {list(vision.depths)}, "
            f"heads {list(vision.num_heads)}; text vocab {self.vocab_size}, "
            f"{self.config.num_fusion_layers} fusion layers, {self.config.num_score_bins} bins)",
            f"  {len(self.mapping)} model tensors from {len(self.consumed)} checkpoint keys "
            f"({self.num_parameters:,} parameters)",
            f"  {len(self.duplicates)} duplicate alias keys verified equal to their twins and not converted twice",
        ]
        if self.defaults:
            lines.append(f"  {len(self.defaults)} model buffers the original does not have, set from the config: "
                         + ", ".join(self.defaults))
        if self.sha256:
            lines.append(f"  sha256: {self.sha256}")
        lines.append(f"  dropped {sum(self.dropped_counts.values())} keys:")
        lines += [f"    {count:4d}  {group}" for group, count in self.dropped_counts.items()]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Loading


def load_original_state_dict(path: Union[str, os.PathLike]) -> dict:
    """`torch.load(path, map_location="cpu", weights_only=True)`, then `normalize_state_dict`."""
    return normalize_state_dict(_torch_load(Path(path)))[0]


def _torch_load(path: Path):
    import torch

    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist or is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # an UnpicklingError names the offending global
        raise ConversionError(
            f"torch.load({str(path)!r}, weights_only=True) refused the file: {error}\n"
            "Only tensors (optionally inside dicts) are loaded. If you trust the file, extract its state dict with "
            "`torch.save(torch.load(path, weights_only=False)['model'], 'clean.pth')` and convert that."
        ) from error


def normalize_state_dict(obj) -> tuple:
    """Unwrap `{"model": ...}` / `{"state_dict": ...}` (nested too) and strip `module.` prefixes.

    Returns `(state_dict, notes)`.
    """
    import torch

    notes = []
    path = []
    while isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        inner = next((name for name in _WRAPPER_KEYS if isinstance(obj.get(name), Mapping)), None)
        if inner is None:
            non_tensors = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
            raise ConversionError(
                "the checkpoint is neither a flat state dict (name -> tensor) nor a dict holding one under "
                f"{' / '.join(repr(k) for k in _WRAPPER_KEYS)}; entries that are not tensors: {non_tensors[:20]}"
            )
        path.append(inner)
        obj = obj[inner]
    if not isinstance(obj, Mapping):
        raise ConversionError(f"the checkpoint holds a {type(obj).__name__}, not a state dict")
    if not obj:
        raise ConversionError("the checkpoint's state dict is empty")
    if path:
        notes.append("state dict read from " + "".join(f"[{name!r}]" for name in path))
    state_dict, stripped = {}, 0
    for key, tensor in obj.items():
        name = str(key)
        while name.startswith(_MODULE_PREFIX):
            name = name[len(_MODULE_PREFIX):]
        stripped += name != key
        if name in state_dict:
            raise ConversionError(f"key {key!r} and another key both become {name!r} once 'module.' is stripped")
        state_dict[name] = tensor
    if stripped:
        notes.append(f"stripped the 'module.' prefix of {stripped} keys")
    return state_dict, notes


def _is_tensor_dict(obj: Mapping) -> bool:
    import torch

    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


# ---------------------------------------------------------------------------------------------------------------------
# Architecture detection


def _shape(state_dict: Mapping, key: str) -> Optional[tuple]:
    tensor = state_dict.get(key)
    return None if tensor is None else tuple(tensor.shape)


def _indices(state_dict: Mapping, pattern: str) -> dict:
    """{first group (int): set of second groups (int) or empty set} over the keys fully matching `pattern`."""
    found = {}
    regex = re.compile(pattern)
    for key in state_dict:
        m = regex.fullmatch(key)
        if m:
            entry = found.setdefault(int(m[1]), set())
            if regex.groups > 1:
                entry.add(int(m[2]))
    return found


def detect_config(state_dict: Mapping) -> tuple:
    """Read the architecture from the tensor shapes. Returns `(variant, AesformerConfig)`.

    Starts from the "aesformer-b" preset when the checkpoint has `proj.weight` (the Swin-B -> fusion projection),
    else from "aesformer-t", and overrides what the shapes tell: Swin embed dim, patch size, blocks per stage, heads
    and window (from the relative-position tables), MLP ratio; BERT vocab, width, layers, FFN size, positions, token
    types; the number of fusion layers; bins and head width; the adapter bottleneck. BERT's number of attention
    heads cannot be read from shapes: the preset's is kept when the width matches, else width // 64.
    """
    from .configuration_aesformer import AesformerConfig

    variant = "aesformer-b" if "proj.weight" in state_dict else "aesformer-t"
    preset = AesformerConfig.from_preset(variant)
    vision, text, top = {}, {}, {}

    patch = _shape(state_dict, "feature_vit.img_model.patch_embed.proj.weight")
    if patch is not None and len(patch) == 4:
        vision.update(embed_dim=patch[0], num_channels=patch[1], patch_size=patch[2])
    blocks = _indices(state_dict, _BLOCK + r".+")
    if blocks and sorted(blocks) == list(range(len(blocks))):
        vision["depths"] = [max(blocks[s]) + 1 for s in range(len(blocks))]
        tables = [_shape(state_dict, f"feature_vit.img_model.layers.{s}.blocks.0.attn.relative_position_bias_table")
                  for s in range(len(blocks))]
        if all(t is not None and len(t) == 2 for t in tables):
            vision["num_heads"] = [t[1] for t in tables]
            side = round(tables[0][0] ** 0.5)  # the table has (2 * window - 1) ** 2 rows
            if side % 2 and all(t[0] == side * side for t in tables):
                vision["window_size"] = (side + 1) // 2
        fc1 = _shape(state_dict, "feature_vit.img_model.layers.0.blocks.0.mlp.fc1.weight")
        if fc1 is not None and len(fc1) == 2 and fc1[1]:
            vision["mlp_ratio"] = fc1[0] / fc1[1]
        vision["qkv_bias"] = "feature_vit.img_model.layers.0.blocks.0.attn.qkv.bias" in state_dict

    bert = "feature.bert_model."
    words = _shape(state_dict, bert + "embeddings.word_embeddings.weight")
    if words is not None and len(words) == 2:
        text.update(vocab_size=words[0], hidden_size=words[1])
        if words[1] != preset.text_config.hidden_size:
            text["num_attention_heads"] = max(1, words[1] // 64)
    for name, attr in (
        ("position_embeddings", "max_position_embeddings"),
        ("token_type_embeddings", "type_vocab_size"),
    ):
        shape = _shape(state_dict, f"{bert}embeddings.{name}.weight")
        if shape is not None:
            text[attr] = shape[0]
    layers = _indices(state_dict, re.escape(bert) + r"encoder\.layer\.(\d+)\..+")
    if layers:
        text["num_hidden_layers"] = max(layers) + 1
    ffn = _shape(state_dict, bert + "encoder.layer.0.intermediate.dense.weight")
    if ffn is not None:
        text["intermediate_size"] = ffn[0]

    fusion = _indices(state_dict, _FUSION + r".+") or _indices(state_dict, _NECK + r".+")
    if fusion:
        top["num_fusion_layers"] = max(fusion) + 1
    for head in ("head_v", "heads_vl_v", "heads_vl_l"):
        first, last = _shape(state_dict, f"{head}.0.weight"), _shape(state_dict, f"{head}.2.weight")
        if first is not None and last is not None:
            top.update(head_hidden_size=first[0], num_score_bins=last[0])
            break
    down = _shape(state_dict, "adapter_1.0.weight")
    if down is not None and len(down) == 2 and down[0] and down[1] % down[0] == 0:
        top["adapter_reduction"] = down[1] // down[0]

    try:
        config = AesformerConfig.from_preset(variant, vision_config=vision, text_config=text, **top)
    except (ValueError, TypeError) as error:
        raise ConversionError(f"the checkpoint's shapes do not describe a valid Aesformer ({error})") from error
    return variant, config


# ---------------------------------------------------------------------------------------------------------------------
# Planning (shapes only) and conversion


def _expected_tensors(config: AesformerConfig) -> tuple:
    """`({model key: meta tensor} of AesformerModel(config).state_dict(), {parameter names})`, without allocating."""
    import torch

    from .modeling_aesformer import AesformerModel

    with torch.device("meta"):
        model = AesformerModel(config)
    return dict(model.state_dict()), {name for name, _ in model.named_parameters()}


def _expand(replacement: Replacement, match: "re.Match[str]") -> str:
    return replacement(match) if callable(replacement) else match.expand(replacement)


def _first_match(rules, key):
    for rule in rules:
        m = re.fullmatch(rule[0], key)
        if m:
            return rule, m
    return None, None


def plan_conversion(state_dict: Mapping, config: Optional[AesformerConfig] = None) -> ConversionPlan:
    """Map every key of an original state dict (or a dict wrapping one) onto `AesformerModel`'s keys.

    Works on shapes only: the tensors may live on the meta device. `config` fixes the target architecture;
    by default it is detected from the shapes (`detect_config`). Never raises for a checkpoint that does not fit:
    inspect `plan.unplaced`, `plan.missing`, `plan.shape_mismatches` (or `plan.problems()`).
    """
    state_dict, _ = normalize_state_dict(state_dict)
    if config is None:
        variant, config = detect_config(state_dict)
    else:
        variant = "aesformer-b" if config.needs_vision_projection else "aesformer-t"
    expected, parameters = _expected_tensors(config)

    mapping, dropped, unplaced, duplicates, mismatches = {}, {}, {}, {}, []

    def place(target: str, placement: Placement, key: str) -> None:
        if target not in expected:
            unplaced[key] = f"maps to {target!r}, which AesformerModel({variant}) does not have"
        elif target in mapping:
            unplaced[key] = f"maps to {target!r}, already filled from {mapping[target]}"
        else:
            mapping[target] = placement

    for key in sorted(state_dict):
        rule, m = _first_match(DROP_RULES, key)
        if rule:
            dropped.setdefault(rule[1], []).append(key)
            continue
        name = key
        rule, m = _first_match(DUPLICATE_RULES, key)
        if rule:
            twin = m.expand(rule[1])
            if twin in state_dict:
                duplicates[key] = twin
                if _shape(state_dict, twin) != _shape(state_dict, key):
                    mismatches.append(f"{key} {list(state_dict[key].shape)} vs its twin {twin} "
                                      f"{list(state_dict[twin].shape)}")
                continue
            name = twin  # only the alias is present: it stands in for its twin
        rule, m = _first_match(SPLIT_RULES, name)
        if rule:
            targets, dim = rule[1], rule[2]
            for index, template in enumerate(targets):
                place(m.expand(template), Placement(key, index, len(targets), dim), key)
            continue
        rule, m = _first_match(RENAME_RULES, name)
        if rule:
            place(_expand(rule[1], m), Placement(key), key)
            continue
        unplaced[key] = "no conversion rule matches this name"

    for target, placement in mapping.items():
        source = state_dict[placement.source]
        want = expected[target]
        if placement.chunk is not None and (
            source.dim() <= placement.dim or source.shape[placement.dim] % placement.chunks
        ):
            got = f"{list(source.shape)} (not divisible into {placement.chunks} chunks along dim {placement.dim})"
        else:
            got = list(placement.take(source).shape)
            if got == list(want.shape):
                if want.is_floating_point() and not source.is_floating_point():
                    mismatches.append(f"{placement} -> {target}: dtype {source.dtype}, the model needs floats")
                continue
        mismatches.append(f"{placement} -> {target}: checkpoint {got} vs model {list(want.shape)}")

    missing = [key for key in expected if key not in mapping and key in parameters]
    defaults = [key for key in expected if key not in mapping and key not in parameters]
    return ConversionPlan(
        mapping=mapping,
        dropped=dropped,
        unplaced=unplaced,
        missing=missing,
        defaults=defaults,
        duplicates=duplicates,
        shape_mismatches=mismatches,
        config=config,
        variant=variant,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_tokenizer(tokenizer_dir: Union[str, os.PathLike]):
    from transformers import AutoTokenizer, BertTokenizer

    path = Path(tokenizer_dir)
    if not path.is_dir():
        raise ConversionError(f"tokenizer folder {str(path)!r} does not exist")
    try:
        return AutoTokenizer.from_pretrained(str(path)), None
    except (OSError, ValueError, KeyError) as error:
        vocab = path / "vocab.txt"
        if not vocab.is_file():
            raise ConversionError(f"cannot load a tokenizer from {str(path)!r}: {error}") from error
        # A bare vocab.txt. `vocab=` (not `vocab_file=`, which builds a 5-token vocab in transformers 5.x).
        tokenizer = BertTokenizer(vocab=str(vocab), do_lower_case=False)
        return tokenizer, f"tokenizer built from the bare {vocab} (cased, like bert-base-cased)"


def _model_card(report: "ConversionReport") -> str:
    vision = report.config.vision_config
    source = os.path.basename(report.source) if report.source != _IN_MEMORY else report.source
    sha = report.sha256 or "n/a (converted from an in-memory state dict)"
    dropped = "\n".join(f"  - {group}: {count}" for group, count in report.dropped_counts.items()) or "  - nothing"
    tokenizer = (
        "The folder holds the processor (image processor + tokenizer)."
        if report.tokenizer_saved
        else "The folder has NO tokenizer yet: add one with `aesformer convert-original ... --tokenizer DIR` "
        "(a bert-base-cased folder) or `AesformerProcessor(AesformerImageProcessor(), tokenizer).save_pretrained(DIR)`."
    )
    return f"""---
library_name: transformers
pipeline_tag: image-classification
tags:
- image-aesthetics
- aesformer
---

# {report.variant} (converted from the original AesFormer checkpoint)

AesFormer image aesthetic assessment model (Swin + BERT + mixture-of-modality-experts fusion), converted into
`AesformerModel` by `aesformer convert-original`.

- Source checkpoint file: `{source}`
- Source sha256: `{sha}`
- Architecture: Swin embed {vision.embed_dim}, depths {list(vision.depths)}, heads {list(vision.num_heads)};
  BERT vocabulary {report.vocab_size}; {report.config.num_fusion_layers} fusion layers;
  {report.config.num_score_bins} score bins.
- {len(report.mapping)} tensors ({report.num_parameters:,} parameters) converted; keys dropped (state the model
  does not use):
{dropped}

{tokenizer}

## Licence

The original AesFormer code (github.com/AiArt-HDU/aesformer) and its released weights carry
**no licence statement**. No licence is granted or implied for these converted weights; ask the original authors
before any use beyond what the law allows without one.

## Usage

```python
import modeling_aesformer  # registers the Aesformer classes
from transformers import AutoModel

model = AutoModel.from_pretrained("path/to/this/folder")
```
"""


def convert_original_checkpoint(
    checkpoint: Union[str, os.PathLike, Mapping],
    output_dir: Union[str, os.PathLike],
    tokenizer_dir: Optional[Union[str, os.PathLike]] = None,
    *,
    config: Optional[AesformerConfig] = None,
) -> ConversionReport:
    """Convert an original AesFormer checkpoint into an `AesformerModel` folder.

    Args:
        checkpoint: path of the `.pth` file (loaded with `weights_only=True`), or an in-memory state dict. A flat
            dict, or one wrapped under "model"/"state_dict", with or without a `module.` prefix.
        output_dir: folder to write `model.safetensors`, `config.json`, the remote-code files and `README.md` into.
        tokenizer_dir: optional folder of the BERT tokenizer the checkpoint was trained with (bert-base-cased for
            Aesformer-T); its size must equal the checkpoint's `word_embeddings` rows. The processor is then saved too.
        config: the target architecture; detected from the shapes when not given.

    Raises:
        ConversionError: a key could not be placed, a model key would be missing, a shape does not fit, an alias
            differs from its twin, or the tokenizer does not fit. Nothing is written then.
    """
    import torch

    from .modeling_aesformer import AesformerModel

    if isinstance(checkpoint, Mapping):
        source, sha256 = _IN_MEMORY, None
        state_dict, notes = normalize_state_dict(checkpoint)
    else:
        path = Path(checkpoint)
        obj = _torch_load(path)
        source, sha256 = str(path), _sha256(path)
        state_dict, notes = normalize_state_dict(obj)
        del obj

    plan = plan_conversion(state_dict, config)
    problems = plan.problems()
    for alias, twin in sorted(plan.duplicates.items()):
        same_shape = _shape(state_dict, alias) == _shape(state_dict, twin)
        if same_shape and not torch.equal(state_dict[alias], state_dict[twin]):
            problems.append(f"alias {alias} differs from its twin {twin} (they must be the same shared tensor)")
    if problems:
        raise ConversionError(
            f"cannot convert {source} into AesformerModel ({plan.variant}, "
            f"{'given config' if config is not None else 'architecture detected from the shapes'}):\n"
            + "\n".join(problems)
            + "\nNothing was written."
        )

    vocab_rows = plan.config.text_config.vocab_size
    tokenizer = None
    if tokenizer_dir is not None:
        tokenizer, note = _load_tokenizer(tokenizer_dir)
        if note:
            notes.append(note)
        if len(tokenizer) != vocab_rows:
            raise ConversionError(
                f"the tokenizer in {str(tokenizer_dir)!r} has {len(tokenizer):,} tokens but the checkpoint's "
                f"word_embeddings have {vocab_rows:,} rows: it is not the tokenizer this model was trained with "
                f"(Aesformer-T uses bert-base-cased, {_BERT_BASE_CASED_VOCAB:,} tokens). Nothing was written."
            )

    # A normally built model: its config-derived buffers (plan.defaults) get their proper values; every parameter
    # is then overwritten by the strict load.
    plan.config.image_only_trained = True  # the released checkpoint's image-only branch is trained (stage 2)
    model = AesformerModel(plan.config)
    converted = {target: placement.take(state_dict[placement.source]).contiguous()
                 for target, placement in plan.mapping.items()}
    fresh = model.state_dict()
    converted.update({key: fresh[key] for key in plan.defaults})
    del fresh
    model.load_state_dict(converted, strict=True)
    del converted
    model.eval()

    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    num_parameters = sum(p.numel() for p in model.parameters())
    del model

    if tokenizer is not None:
        from aesformer_processing import AesformerImageProcessor, AesformerProcessor

        AesformerProcessor(AesformerImageProcessor(), tokenizer).save_pretrained(output)
    else:
        notes.append(
            f"{output} has no tokenizer yet (comments cannot be tokenized from this folder). Add it with "
            "`aesformer convert-original CHECKPOINT --output DIR --tokenizer BERT_DIR` (a bert-base-cased folder, "
            f"{vocab_rows:,} tokens) or "
            "`AesformerProcessor(AesformerImageProcessor(), tokenizer).save_pretrained(DIR)`."
        )

    report = ConversionReport(
        source=source,
        sha256=sha256,
        output_dir=str(output),
        variant=plan.variant,
        config=plan.config,
        mapping=plan.mapping,
        dropped=plan.dropped,
        duplicates=plan.duplicates,
        defaults=plan.defaults,
        vocab_size=vocab_rows,
        num_parameters=num_parameters,
        tokenizer_saved=tokenizer is not None,
        notes=notes,
    )
    (output / "README.md").write_text(_model_card(report), encoding="utf-8")
    from .file_modes import follow_umask

    follow_umask(output)  # transformers writes model.safetensors 0600
    return report
