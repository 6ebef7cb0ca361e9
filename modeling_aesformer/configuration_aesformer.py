"""Aesformer model configuration.

Shipped to the Hugging Face Hub as remote code: imports only the standard library and transformers.
"""

import json
import os
from types import MappingProxyType
from typing import Optional, Sequence, Union

from transformers import BertConfig, PretrainedConfig, SwinConfig

_PRESETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets")


class AesformerConfig(PretrainedConfig):
    r"""
    Configuration of an [`AesformerModel`]: a Swin image encoder, a BERT comment encoder and a small
    Mixture-of-Modality-Experts fusion that predicts a distribution over aesthetic score bins. The defaults reproduce
    **Aesformer-T** (Swin-T + BERT-base-cased, 2 fusion layers, 10 bins) exactly as the released checkpoint has it.

    Args:
        vision_config (`dict` or `SwinConfig`, *optional*):
            The Swin image encoder. Defaults to Swin-T (embed 96, depths [2, 2, 6, 2], heads [3, 6, 12, 24], window 7).
        text_config (`dict` or `BertConfig`, *optional*):
            The BERT comment encoder. Defaults to BERT-base with the bert-base-cased vocabulary (28,996 rows).
            Its width is the fusion width; the fusion layers take their attention heads, FFN size, activation,
            dropout and LayerNorm epsilon from it.
        num_fusion_layers (`int`, *optional*, defaults to 2):
            Number of fusion layers (each: one shared self-attention, a `vl_ffn` and a `vision_ffn` expert).
            `from_vision_text_pretrained` builds them from the last `num_fusion_layers` text layers.
        num_score_bins (`int`, *optional*, defaults to 10):
            Number of score bins of the predicted distribution; bin `i` (1-based) stands for score `i`.
        score_range (`tuple(float, float)`, *optional*):
            Score of the first and last bin; the bins are evenly spaced between them. Defaults to
            `(1, num_score_bins)`, i.e. bin `i` stands for score `i` (AVA: 1..10).
        score_threshold (`float`, *optional*):
            Binary label: "low" when the mean score is `<= score_threshold`, "high" otherwise. Defaults to
            [`default_score_threshold`] of the scale: 5.0 on the default scale (AVA's 10 bins over 1..10, on which
            the paper pre-trains), the midpoint of `score_range` on any other.
        comment_head_mix (`float`, *optional*, defaults to 0.5):
            With comments the distribution is `mix * vl_image + (1 - mix) * vl_text`.
        adapter_reduction (`int`, *optional*, defaults to 4):
            Bottleneck of each multi-scale adapter is `hidden_size // adapter_reduction`.
        adapter_init_std (`float`, *optional*, defaults to 0.01):
            Std of the truncated-normal init of the adapter weights (biases start at zero).
        head_hidden_size (`int`, *optional*, defaults to 256):
            Hidden width of each score head (`Linear -> ReLU -> Linear`).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Std of the normal init of the other fresh linear layers.
        image_only_trained (`bool`, *optional*, defaults to `False`):
            Whether the model's own image-only modules ("base": multi-scale adapter, `vision_ffn`, vision norm and
            head) hold trained weights: true for a converted checkpoint, false for a model built from a config or
            after stage 1 (which trains only the with-comments heads; the image-only branch is trained in stage 2
            as a dataset adapter).
        default_adapter (`str`, *optional*):
            The dataset adapter (`adapters/<name>/` in the model folder) that answers images without comments when
            no adapter is named; `None` = "base". Set by stage 2 (`aesformer adapt`) to the adapter it trained, or
            by `aesformer set-default`. `from_pretrained` folds its weights into the image-only modules (no PEFT
            needed) unless told not to.
        merged_adapter (`str`, *optional*):
            The dataset adapter whose weights the image-only modules hold (written by that folding); `None` = their
            own weights.

    The vision width (Swin's last stage) may differ from the fusion width (Swin-B: 1024 vs 768); the model then adds
    a `vision_projection` (see [`~AesformerConfig.needs_vision_projection`]).

    Example:

    ```python
    >>> from modeling_aesformer import AesformerConfig, AesformerModel
    >>> config = AesformerConfig.from_preset("tiny")
    >>> model = AesformerModel(config)
    ```
    """

    model_type = "aesformer"
    sub_configs = {"vision_config": SwinConfig, "text_config": BertConfig}
    # Output fields `transformers.Trainer` leaves out of its predictions, so that `compute_metrics` receives exactly
    # `distribution`, `score`, `threshold`, `used_comments`, in that order (as documented): each row's scale, and the
    # fusion stack's hidden states / attentions (their length depends on the batch's comments, so batches would not
    # concatenate).
    keys_to_ignore_at_inference = ["bin_values", "std", "hidden_states", "attentions"]

    def __init__(
        self,
        vision_config: Optional[Union[dict, SwinConfig]] = None,
        text_config: Optional[Union[dict, BertConfig]] = None,
        num_fusion_layers: int = 2,
        num_score_bins: int = 10,
        score_range: Optional[Sequence[float]] = None,
        score_threshold: Optional[float] = None,
        comment_head_mix: float = 0.5,
        adapter_reduction: int = 4,
        adapter_init_std: float = 0.01,
        head_hidden_size: int = 256,
        initializer_range: float = 0.02,
        image_only_trained: bool = False,
        default_adapter: Optional[str] = None,
        merged_adapter: Optional[str] = None,
        **kwargs,
    ):
        if vision_config is None:
            vision_config = SwinConfig()
        elif isinstance(vision_config, dict):
            vision_config = SwinConfig(**{k: v for k, v in vision_config.items() if k != "model_type"})
        if text_config is None:
            text_config = BertConfig(vocab_size=28996)
        elif isinstance(text_config, dict):
            text_config = BertConfig(**{k: v for k, v in text_config.items() if k != "model_type"})
        if num_fusion_layers < 1:
            raise ValueError(f"num_fusion_layers must be >= 1, got {num_fusion_layers}")
        if num_score_bins < 2:
            raise ValueError(f"num_score_bins must be >= 2, got {num_score_bins}")
        if not 0.0 <= comment_head_mix <= 1.0:
            raise ValueError(f"comment_head_mix must be in [0, 1], got {comment_head_mix}")
        if text_config.hidden_size % adapter_reduction:
            raise ValueError(
                f"adapter_reduction ({adapter_reduction}) must divide the fusion width ({text_config.hidden_size})"
            )
        # Custom attributes are set before super().__init__ (transformers reads some of them there).
        self.vision_config = vision_config
        self.text_config = text_config
        self.num_fusion_layers = num_fusion_layers
        self.num_score_bins = num_score_bins
        self.score_range = [float(x) for x in (score_range or (1, num_score_bins))]
        if len(self.score_range) != 2 or self.score_range[0] >= self.score_range[1]:
            raise ValueError(f"score_range must be (low, high) with low < high, got {score_range}")
        if score_threshold is None:  # the default scale is AVA's (the pre-training set): its documented threshold
            default_scale = score_range is None and num_score_bins == 10
            score_threshold = default_score_threshold(self.score_range, "ava" if default_scale else None)
        self.score_threshold = float(score_threshold)
        self.comment_head_mix = float(comment_head_mix)
        self.adapter_reduction = adapter_reduction
        self.adapter_init_std = adapter_init_std
        self.head_hidden_size = head_hidden_size
        self.initializer_range = initializer_range
        self.image_only_trained = bool(image_only_trained)
        self.default_adapter = default_adapter or None
        self.merged_adapter = merged_adapter or None
        super().__init__(**kwargs)

    @property
    def hidden_size(self) -> int:
        """Fusion width (= the text encoder's width)."""
        return self.text_config.hidden_size

    @property
    def stage_widths(self) -> list:
        """Channel width of each Swin stage output (after its patch merging), e.g. [192, 384, 768, 768] for Swin-T."""
        dim, depths = self.vision_config.embed_dim, self.vision_config.depths
        return [dim * 2 ** min(i + 1, len(depths) - 1) for i in range(len(depths))]

    @property
    def vision_width(self) -> int:
        """Width of Swin's last stage."""
        return self.stage_widths[-1]

    @property
    def needs_vision_projection(self) -> bool:
        """Whether a Linear(vision_width, hidden_size) maps image tokens to the fusion width (Aesformer-B)."""
        return self.vision_width != self.hidden_size

    @classmethod
    def available_presets(cls) -> list:
        if not os.path.isdir(_PRESETS_DIR):
            return []
        return sorted(f[: -len(".json")] for f in os.listdir(_PRESETS_DIR) if f.endswith(".json"))

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "AesformerConfig":
        """Build a config from a named architecture preset ("aesformer-t", "aesformer-b", "tiny").

        `overrides` replace top-level fields; `vision_config`/`text_config` overrides given as dicts are merged
        into the preset's sub-config.
        """
        path = os.path.join(_PRESETS_DIR, f"{name}.json")
        if not os.path.isfile(path):
            raise ValueError(
                f"Unknown Aesformer preset {name!r}; available: {cls.available_presets()} "
                "(presets ship with the installed `aesformer` package, not with a model folder)."
            )
        with open(path, encoding="utf-8") as f:
            preset = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
        for sub in ("vision_config", "text_config"):
            if isinstance(overrides.get(sub), dict):
                overrides[sub] = {**preset.get(sub, {}), **overrides[sub]}
        preset.update(overrides)
        return cls(**preset)


# The thresholds the datasets' papers report accuracy at (AesMamba keeps 5.0 on Photo.net's 1..7 scale).
DOCUMENTED_THRESHOLDS = MappingProxyType({"ava": 5.0, "photonet": 5.0, "jas": 0.5})  # read-only


def default_score_threshold(score_range: Sequence[float], dataset: Optional[str] = None) -> float:
    """The high/low threshold of a scale when none is given, for every part of Aesformer (config, adapters, dataset
    loaders, synthetic data): a dataset named in `DOCUMENTED_THRESHOLDS` (case, spaces, dots and dashes ignored:
    "Photo.net" is "photonet") keeps its documented threshold; any other scale gets the midpoint of `score_range`."""
    key = "".join(ch for ch in str(dataset or "").lower() if ch.isalnum())
    if key in DOCUMENTED_THRESHOLDS:
        return DOCUMENTED_THRESHOLDS[key]
    low, high = (float(v) for v in score_range)
    return (low + high) / 2


def comment_max_length(config, requested: int = 512) -> int:
    """The most tokens (special tokens included) a comment may have for the text encoder of `config` (an
    `AesformerConfig` or its `text_config`): `requested` (BERT's 512 by default) clamped to the encoder's position
    table, `max_position_embeddings` (128 in the tiny and demo presets)."""
    positions = getattr(getattr(config, "text_config", config), "max_position_embeddings", None)
    return min(int(requested), int(positions)) if positions else int(requested)


__all__ = ["AesformerConfig", "DOCUMENTED_THRESHOLDS", "comment_max_length", "default_score_threshold"]
