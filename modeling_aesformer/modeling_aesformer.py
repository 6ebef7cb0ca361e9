"""PyTorch Aesformer model: Swin + BERT + Mixture-of-Modality-Experts fusion for image aesthetic assessment.

Shipped to the Hugging Face Hub as remote code: imports only the standard library, torch and transformers, and its
sibling `configuration_aesformer`.
"""

import copy
import math
import threading
import weakref
from dataclasses import dataclass
from contextlib import contextmanager, nullcontext
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
import transformers
from transformers import BertModel, PreTrainedModel, SwinModel
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput, logging

from .adapter_weights_aesformer import BASE_ADAPTER, fold_default_adapter, image_only_answer
from .configuration_aesformer import AesformerConfig

logger = logging.get_logger(__name__)

VISION = "vision"
VISION_LANGUAGE = "vision_language"


@dataclass
class AesformerOutput(ModelOutput):
    r"""
    Output of [`AesformerModel`]: the answer for every sample of the batch, in batch order.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
            Batch mean of the per-sample EMD (r=2) of each head the sample used, summed over those heads; float32
            whatever the weights' dtype. With a dataset adapter enabled, the mean over the image-only samples (the
            branch the adapter trains).
        distribution (`torch.FloatTensor` of shape `(batch_size, num_score_bins)`):
            Predicted score distribution: `mix * vl_image + (1 - mix) * vl_text` with comments, `vision` without.
        score (`torch.FloatTensor` of shape `(batch_size,)`):
            Mean score `sum_i v_i * p_i` over the bin values `v` of the answering head's scale (1..10 for the
            base heads; a dataset adapter may bring its own bins and range).
        threshold (`torch.FloatTensor` of shape `(batch_size,)`):
            The high/low threshold of the scale each sample's score is on (label "high" iff `score > threshold`).
        used_comments (`torch.ByteTensor` (uint8) of shape `(batch_size,)`):
            1 for the samples that went through the with-comments branch, 0 for the image-only ones. A 0/1 number
            rather than a bool so that the output compares and subtracts like its other tensors (`torch.allclose`,
            transformers' output checks); `out.used_comments.bool()` is the mask.
        bin_values (`torch.FloatTensor` of shape `(batch_size, num_score_bins)`):
            The scale each row was answered on: the score each bin of the answering head stands for (the
            with-comments heads' for rows with comments; for the others the image-only head that answered, a
            dataset adapter's own or the base one). Same width as `distribution`; a row of a head with fewer bins
            (e.g. a 7-bin adapter in a batch whose rows with comments have 10) is NaN past its last bin, so that
            `num_bins = bin_values.isfinite().sum(-1)` and its score range is `bin_values[i, 0]` to
            `bin_values[i, num_bins[i] - 1]`.
        std (`torch.FloatTensor` of shape `(batch_size,)`):
            Standard deviation of each row's distribution on that scale, `sqrt(sum_i p_i (v_i - score)^2)`.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
            The fusion stack's input, then every fusion layer's output, `(batch_size, L, hidden_size)` each. A row
            with comments holds its image tokens (the last Swin stage's grid, row-major) then its comment tokens
            (up to the longest comment of the batch's rows with comments); an image-only row holds the multi-scale
            tokens (scale-major: the grid of stage 1, then stage 2, ...). `L` is the longer of the two branches'
            lengths; a row of the shorter branch is zero past its own length. The towers' own states:
            [`~AesformerModel.get_image_features`] / [`~AesformerModel.get_text_features`].
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
            One tensor per fusion layer, `(batch_size, num_heads, L, L)`, the softmax weights of the fusion
            attention over the tokens described under `hidden_states`. Keys past a row's own length (and comment
            padding) get weight 0; the weights of queries past a row's own length carry no meaning.
            `attention_maps_aesformer.branch_attentions` gives each branch's rows at their own length.

    With `output_hidden_states` or `output_attentions` the fusion runs as one padded batch (so that these tensors
    are the ones the answer is computed from, gradients included); the answer is the same up to float rounding.

    Two attributes (not fields: they are not tensors) say which image-only head answered when some samples took
    the image-only branch: `image_only_adapter` (the dataset adapter, or "base" for the model's own modules) and
    `image_only_trained` (False when no training or conversion produced that head, e.g. "base" after stage 1).
    """

    loss: Optional[torch.FloatTensor] = None
    distribution: Optional[torch.FloatTensor] = None
    score: Optional[torch.FloatTensor] = None
    threshold: Optional[torch.FloatTensor] = None
    used_comments: Optional[torch.ByteTensor] = None
    # after the fields above, so that positional readers (`to_tuple()`, Trainer's predictions) keep their indices
    bin_values: Optional[torch.FloatTensor] = None
    std: Optional[torch.FloatTensor] = None
    hidden_states: Optional[Tuple[torch.FloatTensor, ...]] = None
    attentions: Optional[Tuple[torch.FloatTensor, ...]] = None


@dataclass
class AesformerHeadOutputs:
    """What the training objectives read besides the answer: [`AesformerModel.forward_heads`].

    Every tensor has the full batch size; rows of a head a sample did not use are NaN, and a head no sample used
    is absent from the dicts. Head names: "vl_image", "vl_text" (with comments), "vision" (image-only).

    Args:
        output (`AesformerOutput`): the forward's answer (loss included when labels were given).
        logits (`dict[str, torch.FloatTensor]`, `(batch_size, bins)` each): pre-softmax output of each head.
        distributions (`dict[str, torch.FloatTensor]`, `(batch_size, bins)` each): softmax output of each head.
        embeds (`dict[str, torch.FloatTensor]`, `(batch_size, hidden_size)` each): each head's input (normed image
            tokens after fusion, mean-pooled; the comment's [CLS] token after fusion; normed multi-scale tokens
            after fusion, mean-pooled).
        unimodal_image_embeds (`torch.FloatTensor` `(batch_size, image_tokens, hidden_size)`, *optional*): with
            comments, the last Swin stage's tokens (projected to the fusion width) before fusion.
        unimodal_text_embeds (`torch.FloatTensor` `(batch_size, hidden_size)`, *optional*): with comments, BERT's
            [CLS] token before fusion. These two feed the stage-1 contrastive loss.
    """

    output: AesformerOutput
    logits: Dict[str, torch.Tensor]
    distributions: Dict[str, torch.Tensor]
    embeds: Dict[str, torch.Tensor]
    unimodal_image_embeds: Optional[torch.Tensor] = None
    unimodal_text_embeds: Optional[torch.Tensor] = None


def earth_movers_distance(predicted: torch.Tensor, target: torch.Tensor, r: int = 2) -> torch.Tensor:
    """Per-sample EMD between two distributions over ordered bins: `(mean_k |CDF_p[k] - CDF_t[k]|^r)^(1/r)`.

    r=2 is the training loss of the paper, r=1 the EMD its tables report.
    """
    cdf_diff = torch.cumsum(predicted, dim=-1) - torch.cumsum(target, dim=-1)
    if r == 1:
        return cdf_diff.abs().mean(dim=-1)
    return cdf_diff.abs().pow(r).mean(dim=-1).pow(1.0 / r)


def normalize_labels(labels: torch.Tensor) -> torch.Tensor:
    """Vote counts or distributions [B, bins] -> distributions; a row with no mass is an error."""
    labels = labels.float()
    if _is_tracing(labels):  # data-dependent checks cannot be traced (torch.export / torch.compile)
        return labels / labels.sum(dim=-1, keepdim=True)
    if (labels < 0).any():
        raise ValueError("labels must be non-negative vote counts or probabilities")
    total = labels.sum(dim=-1, keepdim=True)
    if (total <= 0).any():
        bad = (total.squeeze(-1) <= 0).nonzero().flatten().tolist()
        raise ValueError(f"labels rows {bad} have no votes")
    return labels / total


def _is_tracing(tensor: Optional[torch.Tensor] = None) -> bool:
    """Whether this forward is being traced (torch.compile, torch.export, fx) rather than run: routing then takes
    no Python decision on tensor values."""
    compiler = getattr(torch, "compiler", None)
    for name in ("is_compiling", "is_exporting"):
        check = getattr(compiler, name, None)
        if callable(check) and check():
            return True
    return tensor is not None and type(tensor) is not torch.Tensor and type(tensor) is not nn.Parameter


@torch.compiler.assume_constant_result
def _dynamic_shapes_capturable() -> bool:
    """Whether the compiler tracing this forward captures data-dependent shapes (`nonzero`) in one graph: torch.export
    and `torch.compile(fullgraph=True)` do; plain `torch.compile` (graph breaks allowed) does not, and an error
    inside `torch.cond` cannot become a graph break. Read once per trace (a constant for dynamo); True when the
    tracer cannot be asked (then the `torch.cond` path, as before)."""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        return bool(InstructionTranslator.current_tx().output.shape_env.allow_dynamic_output_shape_ops)
    except Exception:  # not under dynamo (non-strict export, fx) or another torch's internals
        return True


def _hooked(module: nn.Module) -> bool:
    """Whether a module (or one below it) carries hooks: accelerate's `_hf_hook` (device_map dispatch, offload,
    which replaces `forward`) or ordinary forward hooks. Such modules must be called, never read directly."""
    return any(hasattr(m, "_hf_hook") or m._forward_hooks or m._forward_pre_hooks for m in module.modules())


def _swin_layout_known(swin: SwinModel) -> bool:
    """Whether `swin` has the module layout the direct stage calls below are written for (transformers 5.x:
    `attention.{q,k,v,o}_proj`, `attention.relative_position_bias`, `mlp`, stages returning the merged tokens
    first). Other layouts (transformers 4.x, where a Hub folder may also be loaded) use SwinModel's own forward."""
    try:
        block = swin.encoder.layers[0].blocks[0]
        attention = block.attention
        return (
            all(hasattr(attention, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj", "num_attention_heads",
                                                      "head_dim", "scaling"))
            and hasattr(getattr(attention, "relative_position_bias", None), "relative_position_bias_table")
            and all(hasattr(block, name) for name in ("layernorm_before", "layernorm_after", "mlp", "window_size",
                                                      "shift_size"))
        )
    except (AttributeError, IndexError, TypeError):
        return False


# Swin's parameter names, old (transformers 4.x, and what `save_pretrained` writes on 5.x: its conversion mapping is
# undone on save) and new (transformers 5.x modules). Trainer's checkpoint loaders (resume, `load_best_model_at_end`)
# call plain `load_state_dict`, which knows no conversion: `_accept_either_swin_layout` renames on the way in.
_SWIN_KEY_RENAMES = (
    ("attention.self.query.", "attention.q_proj."),
    ("attention.self.key.", "attention.k_proj."),
    ("attention.self.value.", "attention.v_proj."),
    ("attention.self.relative_position_bias_table", "attention.relative_position_bias.relative_position_bias_table"),
    ("attention.self.relative_position_index", "attention.relative_position_bias.relative_position_index"),
    ("attention.output.dense.", "attention.o_proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
)


# transformers 4.x saves Swin's computed `relative_position_index` buffers; 5.x computes them on load (a constant of
# the installed version, decided once at import).
_SWIN_INDEX_IS_SAVED = int(transformers.__version__.split(".")[0]) < 5


def _accept_either_swin_layout(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                               error_msgs):
    """`load_state_dict` pre-hook of the Swin encoder: a key in the other layout's naming (old or new, see
    `_SWIN_KEY_RENAMES`) is renamed to this module's own name; Swin's final LayerNorm, which Aesformer drops, is
    ignored, and so are the computed `relative_position_index` buffers (a persistent buffer on transformers 4.x, none
    on 5.x): one the checkpoint lacks keeps its computed value. Works under any wrapper (PEFT, DDP, Trainer), since
    torch calls it with this module's prefix."""
    own = module.state_dict(keep_vars=True)
    for key in [k for k in state_dict if k.startswith(prefix)]:
        local = key[len(prefix):]
        if local in own:
            continue
        renamed = next((local.replace(source, target, 1) for old, new in _SWIN_KEY_RENAMES
                        for source, target in ((old, new), (new, old))
                        if source in local and local.replace(source, target, 1) in own), None)
        if renamed is not None and prefix + renamed not in state_dict:
            state_dict[prefix + renamed] = state_dict.pop(key)
        elif local.endswith("relative_position_index") or (
                local in ("layernorm.weight", "layernorm.bias") and isinstance(module.layernorm, nn.Identity)):
            del state_dict[key]
    for local, tensor in own.items():
        if local.endswith("relative_position_index") and prefix + local not in state_dict:
            state_dict[prefix + local] = tensor.detach()


def _swin_stage_tokens(swin: SwinModel, pixel_values: torch.Tensor) -> List[Tuple[torch.Tensor, int, int]]:
    """The patch embedding, then the output of every Swin stage (after its patch merging), each as
    `(tokens [B, H*W, C], H, W)`.

    Calls transformers' own modules stage by stage (drop path, gradient checkpointing, hooks and all), without the
    final LayerNorm (Aesformer takes the un-normed stage outputs) and without hidden-state recording."""
    hidden_states, (height, width) = swin.embeddings(pixel_values)
    stages = [(hidden_states, height, width)]
    for stage in swin.encoder.layers:
        hidden_states = stage(hidden_states, (height, width))[0]
        if stage.downsample is not None:
            height, width = (height + 1) // 2, (width + 1) // 2
        stages.append((hidden_states, height, width))
    return stages


# ---------------------------------------------------------------------------------------------- eval fast path
# In eval (no autograd through the weights, not traced, no hooks) the fusion attention computes q/k/v with one GEMM
# and Swin's blocks do their window work once per shape: the same results as the modules' own forwards up to float
# rounding, with less work. The tensors this derives from parameters are cached on the instance that uses them
# (`_DerivedTensors`), never at module level and never in a state dict.
_CACHED_BIAS_MAX_BYTES = 32 * 2**20  # a per-window attention bias expanded to the batch is kept below this size


class _DerivedTensors:
    """Tensors derived from parameters (a fused q/k/v weight, Swin's window orders and attention biases), kept in
    the `__dict__` of the module instance that uses them: not a parameter or buffer, so never in a state dict; a
    deepcopy or pickle of the module gets an empty cache.

    An entry is reused while each of its sources is the same tensor object (a weak reference, so a replacing
    Parameter never matches), with the same storage, version counter (bumped by every in-place update: optimizer
    steps, `load_state_dict`, `copy_`), dtype and device. Nothing is cached while autograd must see the derivation
    (grad mode on and a source requires grad)."""

    __slots__ = ("entries",)

    def __init__(self):
        self.entries = {}

    def __reduce__(self):  # copies and pickles start empty: weak references do not pickle, and data pointers move
        return (type(self), ())

    @staticmethod
    def of(module: nn.Module) -> "_DerivedTensors":
        cache = module.__dict__.get("_derived_tensors")
        if cache is None:
            cache = module.__dict__.setdefault("_derived_tensors", _DerivedTensors())
        return cache

    def get(self, name, sources: Sequence[torch.Tensor], build, shape_key=()):
        """`build()` (a function of `sources`, made for `shape_key`), reused while the sources are unchanged; one
        entry per `name` (a new `shape_key` replaces it, so memory stays bounded)."""
        # weights made under inference_mode have no version counter to check a cache entry against
        if any(s.is_inference() or (s.requires_grad and torch.is_grad_enabled()) for s in sources):
            return build()
        key = (shape_key,) + tuple((s.data_ptr(), s._version, s.dtype, s.device) for s in sources)
        entry = self.entries.get(name)
        if entry is not None and entry[0] == key and all(ref() is s for ref, s in zip(entry[1], sources)):
            return entry[2]
        with torch.inference_mode(False), torch.no_grad():  # a normal tensor: usable outside inference mode too
            value = build()
        self.entries[name] = (key, tuple(weakref.ref(s) for s in sources), value)
        return value


def _plain_linear(module: nn.Module) -> bool:
    """An unwrapped nn.Linear without hooks: its weights may be read directly (a PEFT layer or a hooked module is
    called as a module instead)."""
    return type(module) is nn.Linear and not (
        module._forward_hooks or module._forward_pre_hooks or hasattr(module, "_hf_hook")
    )


def _fused_linear(owner: nn.Module, name, linears: Sequence[nn.Module]) -> Optional[Tuple[torch.Tensor, ...]]:
    """(weight, bias) of the given Linears joined along the output dimension (one GEMM instead of several), or None
    when they must run as modules: wrapped or hooked Linears, or autograd training them. The separate Linears stay
    the checkpoint format; the joined copy is derived and cached on `owner` under `name`."""
    if not all(_plain_linear(m) for m in linears):
        return None
    params = [m.weight for m in linears] + [m.bias for m in linears if m.bias is not None]
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        return None

    def build():
        weight = torch.cat([m.weight for m in linears], dim=0)
        biases = [m.bias if m.bias is not None else m.weight.new_zeros(m.out_features) for m in linears]
        return weight, torch.cat(biases, dim=0)

    return _DerivedTensors.of(owner).get(name, params, build)


def _swin_window_order(height: int, width: int, window: int, shift: int, device) -> Optional[Tuple[torch.Tensor, ...]]:
    """(order, inverse) token indices: `tokens[:, order]` is Swin's cyclic shift by `-shift` followed by the window
    partition (window-major, row-major inside a window) in one gather; `inverse` undoes it. None = identity."""
    if shift == 0 and window == height and window == width:
        return None
    rows = (torch.arange(height) + shift) % height
    cols = (torch.arange(width) + shift) % width
    grid = rows[:, None] * width + cols[None, :]  # grid[h, w] = source of the shifted position (h, w)
    order = grid.view(height // window, window, width // window, window).transpose(1, 2).reshape(-1)
    return order.to(device), torch.argsort(order).to(device)


def _swin_shift_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """Swin's shifted-window mask [num_windows, N, N]: 0 inside a region, -100 across regions (as transformers)."""
    h_idx, w_idx = torch.arange(height), torch.arange(width)
    h_region = (h_idx >= height - window).long() + (h_idx >= height - shift).long()
    w_region = (w_idx >= width - window).long() + (w_idx >= width - shift).long()
    regions = (h_region[:, None] * 3 + w_region[None, :]).float()
    windows = regions.view(height // window, window, width // window, window).transpose(1, 2).reshape(-1, window**2)
    mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0)


def _swin_window_bias(cache: _DerivedTensors, where, block, window: int, shift: int, height: int, width: int,
                      batch: int) -> torch.Tensor:
    """Relative position bias (+ the shifted-window mask) of one Swin block, shaped for SDPA over
    `[batch * windows, heads, N, N]`: `[1, heads, N, N]` without shift, else expanded to every window of the batch."""
    bias_module = block.attention.relative_position_bias
    table = bias_module.relative_position_bias_table
    area = window * window

    def relative():
        bias = table[bias_module.relative_position_index.view(-1)].view(area, area, -1)
        return bias.permute(2, 0, 1).unsqueeze(0)  # [1, heads, N, N]

    if shift == 0:
        return cache.get((where, "bias"), [table], lambda: relative().contiguous(), (window,))

    def combined():
        mask = _swin_shift_mask(height, width, window, shift).to(device=table.device, dtype=table.dtype)
        return relative() + mask.unsqueeze(1)  # [windows, heads, N, N]

    shape = (window, shift, height, width)
    per_window = cache.get((where, "shifted_bias"), [table], combined, shape)
    expanded_shape = (batch * per_window.shape[0],) + tuple(per_window.shape[1:])

    def expand():
        return per_window.unsqueeze(0).expand((batch,) + tuple(per_window.shape)).reshape(expanded_shape)

    if per_window.numel() * batch * per_window.element_size() > _CACHED_BIAS_MAX_BYTES:
        return expand()
    return cache.get((where, "batch_bias"), [table], expand, shape + (batch,))


def _swin_block_eval(owner: nn.Module, where, block, hidden_states: torch.Tensor, height: int,
                     width: int) -> torch.Tensor:
    """One SwinLayer in eval mode, equal to `block(hidden_states, (height, width))[0]` up to float rounding, with
    less work: the cyclic shift and window partition are one gather (and one inverse gather), q/k/v are one GEMM,
    the attention bias and masks are built once per shape, no zero padding. Runs the block itself where padding or
    a clamped window would be needed."""
    window, shift = block.window_size, block.shift_size
    if min(height, width) <= window:  # transformers' own clamp (set_shift_and_window_size), without mutating
        window, shift = min(height, width), 0
    attention = block.attention
    if window != attention.relative_position_bias.window_size[0] or height % window or width % window:
        return block(hidden_states, (height, width))[0]
    batch, length, channels = hidden_states.shape
    area = window * window
    windows = batch * (length // area)
    heads, head_dim = attention.num_attention_heads, attention.head_dim

    shortcut = hidden_states
    hidden_states = block.layernorm_before(hidden_states)
    cache = _DerivedTensors.of(owner)
    order = cache.get(("window_order", height, width, window, shift, str(hidden_states.device)), (),
                      lambda: _swin_window_order(height, width, window, shift, hidden_states.device))
    if order is not None:
        hidden_states = hidden_states.index_select(1, order[0])
    fused = _fused_linear(owner, (where, "qkv"), (attention.q_proj, attention.k_proj, attention.v_proj))
    if fused is not None:
        query, key, value = F.linear(hidden_states, *fused).view(windows, area, 3, heads, head_dim).unbind(2)
    else:
        query, key, value = (
            proj(hidden_states).view(windows, area, heads, head_dim)
            for proj in (attention.q_proj, attention.k_proj, attention.v_proj)
        )
    bias = _swin_window_bias(cache, where, block, window, shift, height, width, batch)
    context = F.scaled_dot_product_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_mask=bias, scale=attention.scaling
    )
    context = attention.o_proj(context.transpose(1, 2).reshape(batch, length, channels))
    if order is not None:
        context = context.index_select(1, order[1])
    hidden_states = shortcut + context
    return hidden_states + block.mlp(block.layernorm_after(hidden_states))


def _swin_stage_tokens_eval(swin: SwinModel, pixel_values: torch.Tensor,
                            owner: nn.Module) -> List[Tuple[torch.Tensor, int, int]]:
    """`_swin_stage_tokens` for eval mode (no hooks, not traced, the known Swin layout), with `_swin_block_eval`;
    what it derives from the weights is cached on `owner` (the model)."""
    hidden_states, (height, width) = swin.embeddings(pixel_values)
    stages = [(hidden_states, height, width)]
    for s, stage in enumerate(swin.encoder.layers):
        for b, block in enumerate(stage.blocks):
            hidden_states = _swin_block_eval(owner, (s, b), block, hidden_states, height, width)
        if stage.downsample is not None:
            hidden_states = stage.downsample(hidden_states, (height, width))
            height, width = (height + 1) // 2, (width + 1) // 2
        stages.append((hidden_states, height, width))
    return stages


class AesformerFusionAttention(nn.Module):
    """BERT-style self-attention with its output projection and post-LN residual, shared by both modalities."""

    # Eval fast path (see `_fused_qkv`); False on an instance always runs the three Linears.
    fast_qkv_path = True

    def __init__(self, config: AesformerConfig):
        super().__init__()
        text = config.text_config
        self.num_heads = text.num_attention_heads
        self.head_dim = text.hidden_size // text.num_attention_heads
        self.query = nn.Linear(text.hidden_size, text.hidden_size)
        self.key = nn.Linear(text.hidden_size, text.hidden_size)
        self.value = nn.Linear(text.hidden_size, text.hidden_size)
        self.output = nn.Linear(text.hidden_size, text.hidden_size)
        self.layer_norm = nn.LayerNorm(text.hidden_size, eps=text.layer_norm_eps)
        self.attention_dropout = text.attention_probs_dropout_prob
        self.dropout = nn.Dropout(text.hidden_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor] = None,
        output_attentions: bool = False,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        batch, length, width = hidden_states.shape

        def split_heads(x):
            return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

        fused = self._fused_qkv(hidden_states)
        if fused is not None:  # one GEMM for q, k and v (the checkpoint keeps the three Linears)
            q, k, v = (split_heads(x) for x in fused.chunk(3, dim=-1))
        else:
            q, k, v = (split_heads(proj(hidden_states)) for proj in (self.query, self.key, self.value))
        # key_padding_mask: [B, L] bool, True = may be attended to.
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
        dropout = self.attention_dropout if self.training else 0.0
        weights = None
        if output_attentions:
            # Eager path: the only one that can return the attention weights.
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            weights = scores.float().softmax(dim=-1)  # fp32 in a bf16/fp16 model too (returned for explanations)
            context = F.dropout(weights, p=dropout, training=self.training).to(v.dtype) @ v
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        context = context.transpose(1, 2).reshape(batch, length, width)
        hidden_states = self.layer_norm(self.dropout(self.output(context)) + hidden_states)
        return hidden_states, weights

    def _fused_qkv(self, hidden_states: torch.Tensor) -> Optional[torch.Tensor]:
        """`[q | k | v]` in one GEMM over a weight joined from `query`/`key`/`value` (cached on this instance, rebuilt
        when one of them changes), or None where the three Linears must run as modules: switched off, traced
        (torch.compile/export), hooked (accelerate), wrapped (PEFT/LoRA) or trained (autograd through them)."""
        if not self.fast_qkv_path or _is_tracing(hidden_states) or hasattr(self, "_hf_hook"):
            return None
        fused = _fused_linear(self, "qkv", (self.query, self.key, self.value))
        return None if fused is None else F.linear(hidden_states, *fused)


class AesformerFeedForward(nn.Module):
    """One modality expert: BERT's FFN (dense -> act -> dense) with its post-LN residual."""

    def __init__(self, config: AesformerConfig):
        super().__init__()
        text = config.text_config
        self.intermediate = nn.Linear(text.hidden_size, text.intermediate_size)
        self.activation = ACT2FN[text.hidden_act]
        self.output = nn.Linear(text.intermediate_size, text.hidden_size)
        self.layer_norm = nn.LayerNorm(text.hidden_size, eps=text.layer_norm_eps)
        self.dropout = nn.Dropout(text.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        update = self.dropout(self.output(self.activation(self.intermediate(hidden_states))))
        return self.layer_norm(update + hidden_states)


class AesformerFusionLayer(GradientCheckpointingLayer):
    """Mixture-of-Modality-Experts layer: shared self-attention, then `vl_ffn` or `vision_ffn` by `modality` (one
    name for the whole batch, or a `[B]` bool tensor: True = that row has comments and takes `vl_ffn`)."""

    def __init__(self, config: AesformerConfig):
        super().__init__()
        self.attention = AesformerFusionAttention(config)
        self.vl_ffn = AesformerFeedForward(config)
        self.vision_ffn = AesformerFeedForward(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        modality: str,
        key_padding_mask: Optional[torch.Tensor] = None,
        output_attentions: bool = False,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        hidden_states, weights = self.attention(hidden_states, key_padding_mask, output_attentions)
        if isinstance(modality, torch.Tensor):  # a padded batch of both branches: each row to its own expert
            vl_rows, vision_rows = modality.nonzero().flatten(), (~modality).nonzero().flatten()
            if len(vision_rows) == 0:
                return self.vl_ffn(hidden_states), weights
            if len(vl_rows) == 0:
                return self.vision_ffn(hidden_states), weights
            with_comments = self.vl_ffn(hidden_states.index_select(0, vl_rows))
            image_only = self.vision_ffn(hidden_states.index_select(0, vision_rows))
            hidden_states = hidden_states.index_copy(0, vl_rows, with_comments)
            return hidden_states.index_copy(0, vision_rows, image_only), weights
        if modality == VISION_LANGUAGE:
            hidden_states = self.vl_ffn(hidden_states)
        elif modality == VISION:
            hidden_states = self.vision_ffn(hidden_states)
        else:
            raise ValueError(f"modality must be {VISION!r} or {VISION_LANGUAGE!r}, got {modality!r}")
        return hidden_states, weights


class AesformerAdapterLinear(nn.Linear):
    """A Linear of the adapter bottlenecks: its own type only so `_init_weights` gives it the adapter init
    (transformers initialises leaf modules; a parent without parameters of its own is never visited)."""


class AesformerAdapterBottleneck(nn.Module):
    """Residual bottleneck `x + up(gelu(down(x)))` (no norm, no scaling), one per scale."""

    def __init__(self, hidden_size: int, bottleneck_size: int):
        super().__init__()
        self.down = AesformerAdapterLinear(hidden_size, bottleneck_size)
        self.activation = nn.GELU()
        self.up = AesformerAdapterLinear(bottleneck_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.up(self.activation(self.down(hidden_states)))


class AesformerMultiScaleAdapter(nn.Module):
    """Image-only branch neck: every Swin stage pooled to the last stage's grid, projected to the last stage's width
    (stages that are narrower), optionally through the backbone's `vision_projection`, then one residual bottleneck
    per scale; the scales are concatenated (no position or scale embedding).

    One module with its own forward so that PEFT can keep a copy of it per dataset adapter.
    """

    def __init__(self, config: AesformerConfig):
        super().__init__()
        widths, vision_width = config.stage_widths, config.vision_width
        self.stage_projections = nn.ModuleList(
            nn.Linear(width, vision_width) if width != vision_width else nn.Identity() for width in widths
        )
        bottleneck = config.hidden_size // config.adapter_reduction
        self.bottlenecks = nn.ModuleList(
            AesformerAdapterBottleneck(config.hidden_size, bottleneck) for _ in widths
        )

    def forward(self, stage_maps, vision_projection: Optional[nn.Module] = None) -> torch.Tensor:
        """stage_maps: one [B, C_k, H_k, W_k] map per Swin stage. Returns [B, num_stages * H * W, hidden]."""
        grid = stage_maps[-1].shape[-2:]
        scales = []
        for stage_map, projection, bottleneck in zip(stage_maps, self.stage_projections, self.bottlenecks):
            if stage_map.shape[-2:] != grid:
                # Equal to AvgPool2d(kernel=stride=ratio) when the grids divide (28 -> 7, 14 -> 7 for Swin-T).
                stage_map = F.adaptive_avg_pool2d(stage_map, grid)
            tokens = projection(stage_map.flatten(2).transpose(1, 2))
            if vision_projection is not None:
                tokens = vision_projection(tokens)
            scales.append(bottleneck(tokens))
        return torch.cat(scales, dim=1)


class AesformerScoreHead(nn.Module):
    """`Linear -> ReLU -> Linear` to score-bin logits (the softmax is applied by the model), plus the head's scale.

    The scale lives in buffers so that a dataset adapter's copy of `vision_head` carries its own (PEFT saves the
    buffers of `modules_to_save`): `bin_values` (the score each bin stands for), `num_active_bins` (an adapter with
    fewer bins than the base head, e.g. Photo.net's 7, uses the first ones; the head keeps the base width so that
    PEFT can load it into a copy of the base head) and `threshold` (high/low label).
    """

    def __init__(self, hidden_size: int, head_hidden_size: int, num_bins: int):
        super().__init__()
        # fp32 whatever the default dtype at construction (a model built under a bf16/fp16 default keeps its heads in
        # fp32, as `_keep_in_fp32_modules_strict` promises for loads)
        self.dense = nn.Linear(hidden_size, head_hidden_size, dtype=torch.float32)
        self.activation = nn.ReLU()
        self.out_proj = nn.Linear(head_hidden_size, num_bins, dtype=torch.float32)
        self.register_buffer("bin_values", torch.arange(1, num_bins + 1, dtype=torch.float32))
        self.register_buffer("num_active_bins", torch.tensor(num_bins, dtype=torch.long))
        self.register_buffer("threshold", torch.tensor(5.0, dtype=torch.float32))

    @torch.no_grad()
    def set_scale(self, num_bins: int, score_range: Sequence[float], threshold: float) -> None:
        """Use the first `num_bins` outputs, evenly spaced over `score_range`, labelled high above `threshold`."""
        width = self.out_proj.out_features
        if not 2 <= num_bins <= width:
            raise ValueError(f"num_bins must be in [2, {width}] (the head's width), got {num_bins}")
        low, high = float(score_range[0]), float(score_range[1])
        values = torch.zeros(width, dtype=torch.float32)
        values[:num_bins] = torch.linspace(low, high, num_bins)
        self.bin_values.copy_(values.to(self.bin_values.device))
        self.num_active_bins.fill_(num_bins)
        self.threshold.fill_(float(threshold))

    def forward(self, pooled: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns the logits of the active bins, their score values, the threshold and the number of active bins
        (a 0-d tensor: a dataset adapter's copy of the head brings its own).

        Traced (torch.export / torch.compile), the number of active bins is not known at trace time: the head then
        answers at its full width with the inactive bins' logits at -inf (probability 0, score unchanged)."""
        # A bf16/fp16 model feeds its pooled features to an fp32 head; the logits leave in fp32 (even when the head
        # itself was cast), so the softmax, the distribution and the score are computed in fp32.
        pooled = pooled.to(self.dense.weight.dtype)
        logits = self.out_proj(self.activation(self.dense(pooled))).float()
        if _is_tracing(pooled):
            inactive = torch.arange(logits.shape[-1], device=logits.device) >= self.num_active_bins
            return (logits.masked_fill(inactive, float("-inf")), self.bin_values.float(), self.threshold.float(),
                    self.num_active_bins)
        k = int(self.num_active_bins)
        return logits[..., :k], self.bin_values[:k].float(), self.threshold.float(), self.num_active_bins


@dataclass
class _Branch:
    """What one branch answered for its rows (internal)."""

    distribution: torch.Tensor
    bin_values: torch.Tensor
    threshold: torch.Tensor
    num_bins: torch.Tensor  # 0-d: the answering head's active bins (`bin_values` may be wider when traced)
    heads: dict  # head name -> (embeds, logits, distribution)
    unimodal: Optional[dict] = None  # encoder outputs before fusion (with comments)
    valid: Optional[torch.Tensor] = None  # traced only: [batch] bool, the rows this branch answered (NaN elsewhere)


def _grad_only_if_trainable(module: nn.Module):
    """Autograd off for a fully frozen sub-model (saves its activations); unchanged otherwise."""
    if torch.is_grad_enabled() and not any(p.requires_grad for p in module.parameters()):
        return torch.no_grad()
    return nullcontext()


class AesformerPreTrainedModel(PreTrainedModel):
    config_class = AesformerConfig
    base_model_prefix = "aesformer"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["SwinStage", "BertLayer", "AesformerFusionLayer"]
    _supports_sdpa = True
    # The loss is a batch mean (see `AesformerOutput.loss`), not a sum to be divided by Trainer's
    # `num_items_in_batch`: without this, gradient accumulation would scale the logged loss and the gradients.
    accepts_loss_kwargs = False
    # Swin's final LayerNorm is not part of the model (Aesformer reads un-normed stage outputs); folders saved
    # before it was removed still hold it.
    _keys_to_ignore_on_load_unexpected = [r"vision_model\.layernorm\.(weight|bias)"]
    # Swin's `relative_position_index` is computed from the window size: a persistent buffer on transformers 4.x,
    # which a folder saved on 5.x does not hold; never "not initialized" there. On 5.x it is not persistent, so
    # nothing is missing and nothing is to be ignored (transformers' tests hold an ignored key to be a saved one).
    _keys_to_ignore_on_load_missing = [r"relative_position_index"] if _SWIN_INDEX_IS_SAVED else None
    # `from_pretrained(..., dtype=torch.bfloat16 / float16)` keeps the score heads (0.6 M parameters, < 0.1 % of the
    # FLOPs) and their scale buffers in fp32: logits, distribution, score and EMD then never round to 8 bits.
    # (Whole module names: transformers 4.x accepts nothing else. The integer `num_active_bins` may come back as
    # fp32 from such a load; it is only ever read with `int()`.)
    _keep_in_fp32_modules_strict = ["vision_head", "vl_image_head", "vl_text_head"]

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, AesformerAdapterLinear):
            nn.init.trunc_normal_(module.weight, std=self.config.adapter_init_std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, (SwinModel, BertModel)):
            pass  # the sub-models initialise their own modules (they are PreTrainedModels too)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, AesformerScoreHead):
            module.set_scale(self.config.num_score_bins, self.config.score_range, self.config.score_threshold)


class AesformerModel(AesformerPreTrainedModel):
    """Aesformer: predicts an aesthetic score distribution for an image, with or without its comments.

    Routing is per sample: a sample whose `attention_mask` row has at least one 1 goes through the with-comments
    branch (last Swin stage + comment tokens, `vl_ffn`, both VL heads); a sample without comments (no text inputs,
    or an all-zero mask row) goes through the image-only branch (multi-scale adapter, `vision_ffn`, `vision_head`).

    `model(...)` answers with one `AesformerOutput` (one dataset adapter: `adapter=`); `forward_adapters` answers
    for several adapters in one pass; `forward_heads` adds the per-head tensors the training objectives read.
    """

    # Swin's eval fast path (`_swin_stage_tokens_eval`: same results as transformers' own modules up to float
    # rounding, less work); False on an instance runs transformers' own Swin modules instead.
    fast_vision_path = True

    def __init__(self, config: AesformerConfig):
        super().__init__(config)
        self.vision_model = SwinModel(config.vision_config, add_pooling_layer=False)
        # Swin's final LayerNorm would only norm `last_hidden_state`, which Aesformer never reads: dropped, so that
        # every parameter gets a gradient (DDP with `find_unused_parameters=False`, as Trainer sets it with gradient
        # checkpointing). SwinModel's own forward (hooked/offloaded path) then returns un-normed last states.
        self.vision_model.layernorm = nn.Identity()
        if hasattr(self.vision_model, "register_load_state_dict_pre_hook"):  # torch >= 2.5
            self.vision_model.register_load_state_dict_pre_hook(_accept_either_swin_layout)
        self.text_model = BertModel(config.text_config, add_pooling_layer=False)
        self.vision_projection = (
            nn.Linear(config.vision_width, config.hidden_size) if config.needs_vision_projection else None
        )
        self.multi_scale_adapter = AesformerMultiScaleAdapter(config)
        self.fusion_layers = nn.ModuleList(AesformerFusionLayer(config) for _ in range(config.num_fusion_layers))
        eps = config.vision_config.layer_norm_eps
        self.vl_image_norm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.vision_norm = nn.LayerNorm(config.hidden_size, eps=eps)
        head_args = (config.hidden_size, config.head_hidden_size, config.num_score_bins)
        self.vl_image_head = AesformerScoreHead(*head_args)
        self.vl_text_head = AesformerScoreHead(*head_args)
        self.vision_head = AesformerScoreHead(*head_args)
        # PEFT layers switch adapters in place: forwards of this instance that run or switch its dataset adapters
        # take turns (see `_image_only_adapter`); other instances, and models without adapters, never wait.
        self._adapter_lock = threading.RLock()
        self.post_init()

    def __getstate__(self):  # a lock cannot be copied or pickled: a copy gets its own (`copy.deepcopy`, torch.save)
        state = dict(super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__)
        state.pop("_adapter_lock", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._adapter_lock = threading.RLock()

    def get_input_embeddings(self) -> nn.Module:
        """The comment encoder's word embeddings."""
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_model.set_input_embeddings(value)

    # ------------------------------------------------------------------ features
    def _output_flags(self, output_attentions, output_hidden_states, return_dict) -> Tuple[bool, bool, bool]:
        """The call's choices, the config's where the call leaves them None."""
        config = self.config
        return (
            config.output_attentions if output_attentions is None else output_attentions,
            config.output_hidden_states if output_hidden_states is None else output_hidden_states,
            config.return_dict if return_dict is None else return_dict,
        )

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ) -> Union[BaseModelOutputWithPooling, tuple]:
        r"""
        Runs the Swin image encoder.

        Returns:
            [`~modeling_outputs.BaseModelOutputWithPooling`] (a tuple with `return_dict=False`):

            - **last_hidden_state** `[B, H*W, C]`: the last stage's tokens (un-normed: what the fusion layers take,
              before `vision_projection`), `[B, 49, 768]` for Aesformer-T at 224 px;
            - **pooler_output** `[B, C]`: their mean;
            - **hidden_states** (with `output_hidden_states`): the patch embedding, then every stage's output after
              its patch merging as `[B, H_k*W_k, C_k]` (`[B, 3136, 96], [B, 784, 192], [B, 196, 384], [B, 49, 768],
              [B, 49, 768]` for Aesformer-T);
            - **attentions** (with `output_attentions`): Swin's attention weights, one tensor per block.
        """
        output_attentions, output_hidden_states, return_dict = self._output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        stages, attentions = self._vision_tokens(pixel_values, output_attentions=output_attentions)
        last = stages[-1][0]
        output = BaseModelOutputWithPooling(
            last_hidden_state=last,
            pooler_output=last.mean(dim=1),
            hidden_states=tuple(tokens for tokens, _, _ in stages) if output_hidden_states else None,
            attentions=attentions,
        )
        return output if return_dict else output.to_tuple()

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ) -> Union[BaseModelOutputWithPooling, tuple]:
        r"""
        Runs the BERT comment encoder.

        Returns:
            [`~modeling_outputs.BaseModelOutputWithPooling`] (a tuple with `return_dict=False`):
            **last_hidden_state** `[B, T, hidden]`, **pooler_output** `[B, hidden]` (the [CLS] token: the unimodal
            text embedding of the stage-1 contrastive loss; BERT's own pooler is not part of the model), and BERT's
            **hidden_states** / **attentions** on request.
        """
        output_attentions, output_hidden_states, return_dict = self._output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        # A frozen encoder (stage 2) runs without autograd: nothing below it needs gradients.
        with _grad_only_if_trainable(self.text_model):
            outputs = self.text_model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
            )
        output = BaseModelOutputWithPooling(
            last_hidden_state=outputs.last_hidden_state,
            pooler_output=outputs.last_hidden_state[:, 0],
            hidden_states=outputs.hidden_states if output_hidden_states else None,
            attentions=outputs.attentions if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()

    def _vision_tokens(self, pixel_values, output_attentions: bool = False):
        """(`[(tokens [B, H*W, C], H, W)]` for the patch embedding and every Swin stage, Swin's attentions or None)."""
        vision = self.vision_model
        pixel_values = pixel_values.to(vision.dtype)  # fp32 images into a bf16/fp16 model (no-op otherwise)
        with _grad_only_if_trainable(vision):
            if output_attentions or _hooked(vision) or not _swin_layout_known(vision):
                # Attention weights, a dispatched/offloaded or hooked encoder (the hooks move weights and inputs), or
                # another transformers' Swin layout: SwinModel's own forward.
                outputs = vision(
                    pixel_values=pixel_values, output_hidden_states=True, output_attentions=output_attentions,
                    return_dict=True,
                )
                stages = [
                    (tokens, grid.shape[-2], grid.shape[-1])
                    for tokens, grid in zip(outputs.hidden_states, outputs.reshaped_hidden_states)
                ]
                return stages, (outputs.attentions if output_attentions else None)
            stages = None
            if not vision.training and not _is_tracing(pixel_values):
                compiled = self._compiled("vision")
                if compiled is not None:
                    stages = compiled(pixel_values)
                elif self.fast_vision_path:
                    stages = _swin_stage_tokens_eval(vision, pixel_values, self)
            if stages is None:
                stages = _swin_stage_tokens(vision, pixel_values)
        return stages, None

    @staticmethod
    def _stage_maps(stages):
        """The Swin stage outputs as `[B, C, H, W]` maps (channels-last views of the stage tokens: no copies)."""
        return [tokens.view(tokens.shape[0], h, w, tokens.shape[-1]).permute(0, 3, 1, 2) for tokens, h, w in stages[1:]]

    # ------------------------------------------------------------------ opt-in compiled inference
    def compile_for_inference(self, mode: Optional[str] = None, dynamic: Optional[bool] = None,
                              freezing: bool = True, fusion: bool = False) -> "AesformerModel":
        """Opt in to `torch.compile` for inference (eval mode, no autograd: under `torch.inference_mode()` or
        `torch.no_grad()`); returns the model. Everything else runs as before: training, autograd, train mode and
        `output_attentions` take the eager path, so does a model whose weights changed after this call (compile
        again then).

        Compiled: the Swin encoder (the many small, memory-bound operations of the early stages are where compiling
        pays) and, with `fusion=True`, also the fusion layers of the image-only branch (large GEMMs already near the
        matmul peak: no measurable gain on CPU, a longer compilation, and one more compilation per dataset adapter).
        `freezing=True` lets inductor treat the weights as constants (prepacked GEMMs, bias and GELU fused into
        them); `mode` and `dynamic` go to `torch.compile` (`mode` replaces `freezing`). The first call per input
        shape compiles (slow: `bench/bench_inference.py --compile` measures it; inductor caches it on disk for later
        processes); later calls reuse it. Needs a C++ compiler on CPU (inductor). The compiled functions belong to
        this model instance.

        ```python
        model = AesformerModel.from_pretrained(path).eval().compile_for_inference()
        with torch.inference_mode():
            out = model(pixel_values)  # first call compiles
        ```
        """
        if not hasattr(torch, "compile"):
            raise RuntimeError("compile_for_inference needs torch.compile (torch >= 2.0)")
        options = None if mode is not None or not freezing else {"freezing": True}
        kwargs = {"mode": mode, "dynamic": dynamic, "options": options}
        vision = self.vision_model

        def vision_stages(pixel_values):
            return _swin_stage_tokens(vision, pixel_values)

        def image_only_fusion(hidden_states):
            return self._fuse(hidden_states, VISION, None, False)[0]

        self.__dict__["_compiled_inference"] = {
            "vision": torch.compile(vision_stages, **kwargs),
            "fusion": torch.compile(image_only_fusion, **kwargs) if fusion else None,
            "key": self._weights_key(),
        }
        return self

    def _weights_key(self):
        return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in self.parameters()) + tuple(
            (t.data_ptr(), t._version) for t in self.buffers()
        )

    def _compiled(self, part: str):
        """The compiled callable for `part`, when compiled and usable for this call; otherwise None (eager)."""
        entry = self.__dict__.get("_compiled_inference")
        if entry is None or entry[part] is None or torch.is_grad_enabled() or self.training or _is_tracing():
            return None
        if entry.get("stale") or entry["key"] != self._weights_key():
            if not entry.get("stale"):
                entry["stale"] = True
                logger.warning(
                    "Aesformer: weights changed after compile_for_inference(); running eagerly. Call "
                    "compile_for_inference() again to compile the new weights."
                )
            return None
        return entry[part]

    # ------------------------------------------------------------------ branches
    def _fuse(self, hidden_states, modality, key_padding_mask, output_attentions, output_hidden_states=False):
        """The fusion layers: (last hidden states, attentions or None, [input + every layer's output] or None)."""
        attentions, states = [], [hidden_states]
        for layer in self.fusion_layers:
            hidden_states, weights = layer(
                hidden_states, modality=modality, key_padding_mask=key_padding_mask,
                output_attentions=output_attentions,
            )
            attentions.append(weights)
            states.append(hidden_states)
        return (hidden_states, tuple(attentions) if output_attentions else None,
                tuple(states) if output_hidden_states else None)

    def _comment_tokens(self, last_stage_map, input_ids, attention_mask, token_type_ids):
        """The with-comments branch's fusion input: (image tokens, BERT's comment tokens, key padding mask)."""
        image_tokens = last_stage_map.flatten(2).transpose(1, 2)
        if self.vision_projection is not None:
            image_tokens = self.vision_projection(image_tokens)
        if not _is_tracing(input_ids):
            # Drop columns no sample of this group uses: the processor pads to the whole batch's longest comment.
            length = int(attention_mask.any(dim=0).nonzero().max()) + 1
            input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
            token_type_ids = None if token_type_ids is None else token_type_ids[:, :length]
        text = self.get_text_features(
            input_ids, attention_mask, token_type_ids, output_attentions=False, output_hidden_states=False,
            return_dict=True,
        )
        key_padding_mask = torch.cat(
            [attention_mask.new_ones(attention_mask.shape[0], image_tokens.shape[1]), attention_mask], dim=1
        ).bool()
        return image_tokens, text.last_hidden_state, key_padding_mask

    def _comment_heads(self, fused, image_tokens, text_tokens) -> _Branch:
        """The with-comments heads on the fused tokens (image tokens first)."""
        num_image = image_tokens.shape[1]
        image_embeds = self.vl_image_norm(fused[:, :num_image]).mean(dim=1)
        text_embeds = fused[:, num_image]
        image_logits, values, threshold, num_bins = self.vl_image_head(image_embeds)
        text_logits = self.vl_text_head(text_embeds)[0]
        mix = self.config.comment_head_mix
        image_dist, text_dist = image_logits.softmax(-1), text_logits.softmax(-1)
        return _Branch(
            distribution=mix * image_dist + (1 - mix) * text_dist, bin_values=values, threshold=threshold,
            num_bins=num_bins,
            heads={"vl_image": (image_embeds, image_logits, image_dist), "vl_text": (text_embeds, text_logits, text_dist)},
            unimodal={"unimodal_image_embeds": image_tokens, "unimodal_text_embeds": text_tokens[:, 0]},
        )

    def _with_comments(self, last_stage_map, input_ids, attention_mask, token_type_ids) -> _Branch:
        image_tokens, text_tokens, key_padding_mask = self._comment_tokens(
            last_stage_map, input_ids, attention_mask, token_type_ids
        )
        fused = self._fuse(torch.cat([image_tokens, text_tokens], dim=1), VISION_LANGUAGE, key_padding_mask, False)[0]
        return self._comment_heads(fused, image_tokens, text_tokens)

    def _with_comments_traced(self, used_comments, last_stage_map, input_ids, attention_mask, token_type_ids):
        """Traced form of the with-comments branch: batch-sized results (NaN rows for samples without comments).

        `torch.cond` runs the branch only when a sample has comments (BERT cannot run on zero rows: its head split
        is ambiguous for an empty batch), and then on those rows only (`nonzero`: an unbacked size). Both sides
        return fresh contiguous tensors (`torch.cond` needs the two sides' outputs to agree in strides too)."""
        batch = used_comments.shape[0]
        num_image = last_stage_map.shape[-2] * last_stage_map.shape[-1]
        hidden, width = self.config.hidden_size, self.vl_image_head.out_proj.out_features
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        shapes = [(batch, width)] + [(batch, hidden), (batch, width), (batch, width)] * 2
        shapes += [(batch, num_image, hidden), (batch, hidden)]

        def run(used, stage_map, ids, mask, types):
            rows = used.nonzero().flatten()
            branch = self._with_comments(
                stage_map.index_select(0, rows), ids.index_select(0, rows), mask.index_select(0, rows),
                types.index_select(0, rows),
            )
            values = [branch.distribution]
            for head in ("vl_image", "vl_text"):
                values += list(branch.heads[head])
            values += [branch.unimodal["unimodal_image_embeds"], branch.unimodal["unimodal_text_embeds"]]
            return tuple(
                torch.full(shape, float("nan"), dtype=stage_map.dtype, device=stage_map.device).index_copy(
                    0, rows, value.to(stage_map.dtype).contiguous()
                ).contiguous()
                for shape, value in zip(shapes, values)
            )

        def skip(used, stage_map, ids, mask, types):
            return tuple(
                torch.full(shape, float("nan"), dtype=stage_map.dtype, device=stage_map.device) for shape in shapes
            )

        operands = (used_comments, last_stage_map, input_ids, attention_mask, token_type_ids)
        if torch.compiler.is_compiling() and not _dynamic_shapes_capturable():
            # plain torch.compile: the same computation, with graph breaks where the row count is read
            out = run(*operands) if bool(used_comments.any()) else skip(*operands)
        else:
            out = torch.cond(used_comments.any(), run, skip, operands)
        return _Branch(
            distribution=out[0], bin_values=self.vl_image_head.bin_values, threshold=self.vl_image_head.threshold,
            num_bins=self.vl_image_head.num_active_bins,
            heads={"vl_image": tuple(out[1:4]), "vl_text": tuple(out[4:7])},
            unimodal={"unimodal_image_embeds": out[7], "unimodal_text_embeds": out[8]}, valid=used_comments,
        )

    def _image_only_tokens(self, stage_maps):
        return self.multi_scale_adapter(stage_maps, vision_projection=self.vision_projection)

    def _image_only_heads(self, fused) -> _Branch:
        embeds = self.vision_norm(fused).mean(dim=1)
        logits, values, threshold, num_bins = self.vision_head(embeds)
        distribution = logits.softmax(-1)
        return _Branch(distribution=distribution, bin_values=values, threshold=threshold, num_bins=num_bins,
                       heads={"vision": (embeds, logits, distribution)})

    def _image_only(self, stage_maps) -> _Branch:
        tokens = self._image_only_tokens(stage_maps)
        compiled = self._compiled("fusion")
        fused = compiled(tokens) if compiled is not None else self._fuse(tokens, VISION, None, False)[0]
        return self._image_only_heads(fused)

    def _fuse_padded_batch(self, used_comments, rows, comment_inputs, stage_maps, output_attentions,
                           output_hidden_states):
        """Both branches' fusion as ONE padded batch, so that the returned hidden states and attentions are the
        tensors the answer is computed from: rows with comments hold image then comment tokens, image-only rows
        the multi-scale tokens, each zero-padded to the longer length (padded keys masked out, padded positions
        zeroed after every layer). Returns (with-comments branch or None, image-only branch or None, attentions,
        hidden states)."""
        vl_rows, vision_rows = rows
        pieces = []  # (rows, tokens [n, L_b, hidden], key mask [n, L_b])
        if comment_inputs is not None:
            image_tokens, text_tokens, comment_mask = self._comment_tokens(*comment_inputs)
            pieces.append((vl_rows, torch.cat([image_tokens, text_tokens], dim=1), comment_mask))
        if vision_rows is not None:
            tokens = self._image_only_tokens(stage_maps)
            pieces.append((vision_rows, tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)))
        if len(pieces) == 1:  # one branch: its own tokens as they are (the comments' mask as `_with_comments`)
            (_, hidden_states, key_mask), = pieces
            key_padding_mask, padded = (key_mask if comment_inputs is not None else None), None
        else:
            length = max(tokens.shape[1] for _, tokens, _ in pieces)
            width = pieces[0][1].shape[-1]
            batch = used_comments.shape[0]
            hidden_states = pieces[0][1].new_zeros(batch, length, width)
            key_mask = torch.zeros(batch, length, dtype=torch.bool, device=hidden_states.device)
            padded = torch.zeros(batch, length, dtype=torch.bool, device=hidden_states.device)
            for piece_rows, tokens, mask in pieces:
                pad = length - tokens.shape[1]
                hidden_states = hidden_states.index_copy(0, piece_rows, F.pad(tokens.to(hidden_states.dtype),
                                                                              (0, 0, 0, pad)))
                key_mask = key_mask.index_copy(0, piece_rows, F.pad(mask, (0, pad), value=False))
                padded[piece_rows, tokens.shape[1]:] = True
            key_padding_mask = key_mask
        modality = used_comments if len(pieces) > 1 else (VISION_LANGUAGE if comment_inputs is not None else VISION)
        attentions, states = [], [hidden_states]
        for layer in self.fusion_layers:
            hidden_states, weights = layer(hidden_states, modality=modality, key_padding_mask=key_padding_mask,
                                           output_attentions=output_attentions)
            if padded is not None:
                hidden_states = hidden_states.masked_fill(padded[..., None], 0.0)
            attentions.append(weights)
            states.append(hidden_states)
        with_comments = image_only = None
        if comment_inputs is not None:
            fused = hidden_states if padded is None else hidden_states[vl_rows, : pieces[0][1].shape[1]]
            with_comments = self._comment_heads(fused, image_tokens, text_tokens)
        if vision_rows is not None:
            fused = hidden_states if padded is None else hidden_states[vision_rows, : pieces[-1][1].shape[1]]
            image_only = self._image_only_heads(fused)
        return (with_comments, image_only, tuple(attentions) if output_attentions else None,
                tuple(states) if output_hidden_states else None)

    # ------------------------------------------------------------------ adapters (PEFT, duck-typed)
    def _adapter_layers(self) -> list:
        """PEFT layers (ModulesToSaveWrapper, LN-tuning, LoRA, ...) inside the image-only parts.

        Found by duck typing so this file never imports peft."""
        roots = [self.multi_scale_adapter, self.vision_norm, self.vision_head]
        roots += [layer.vision_ffn for layer in self.fusion_layers]
        return [
            module for root in roots for module in root.modules()
            if callable(getattr(module, "set_adapter", None)) and callable(getattr(module, "enable_adapters", None))
            and hasattr(module, "active_adapters")
        ]

    @contextmanager
    def _adapter_active(self, name: str):
        """Run the image-only parts with dataset adapter `name` ("base" = the model's own modules), then restore
        the previous adapter state exactly (active adapter, enabled flag, requires_grad)."""
        layers = self._adapter_layers()
        known = [BASE_ADAPTER] + list(getattr(self, "peft_config", {}) or {})
        if name not in known:
            raise ValueError(f"unknown adapter {name!r}; this model has {known}")
        saved_grad = [(p, p.requires_grad) for m in layers for p in m.parameters()]
        saved_state = [(m, list(m.active_adapters), bool(getattr(m, "disable_adapters", False))) for m in layers]
        try:
            for module in layers:
                if name == BASE_ADAPTER:
                    module.enable_adapters(False)
                else:
                    module.enable_adapters(True)
                    module.set_adapter(name)
            yield
        finally:
            for module, active, disabled in saved_state:
                module.enable_adapters(not disabled)
                module.set_adapter(active)
            for param, flag in saved_grad:
                param.requires_grad_(flag)

    @contextmanager
    def _image_only_adapter(self, name: Optional[str]):
        """The image-only parts running dataset adapter `name` (None = whatever is active). PEFT switches its
        layers in place, so forwards of this instance with dataset adapters take turns on its own lock: threads
        sharing one model never see each other's adapter."""
        if not self._adapter_layers():
            with self._adapter_active(name) if name is not None else nullcontext():
                yield
            return
        with self._adapter_lock, (self._adapter_active(name) if name is not None else nullcontext()):
            yield

    def _active_image_only_adapter(self) -> str:
        """The dataset adapter the image-only parts run now ("base" = none)."""
        for module in self._adapter_layers():
            if getattr(module, "disable_adapters", False):
                return BASE_ADAPTER
            active = module.active_adapters
            return str(active[0]) if active else BASE_ADAPTER
        return BASE_ADAPTER

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        adapter: Optional[str] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ) -> Union[AesformerOutput, tuple]:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`):
                Images as produced by [`AesformerImageProcessor`].
            input_ids, attention_mask, token_type_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*):
                Tokenised comments. An all-zero `attention_mask` row means "this image has no comments". Without
                `input_ids` every sample takes the image-only branch.
            labels (`torch.FloatTensor` of shape `(batch_size, bins)`, *optional*):
                Target distributions or raw vote counts (rows are normalised), in the bins of the scale that
                answers (the base bins, or the adapter's for image-only samples).
            adapter (`str`, *optional*):
                The dataset adapter (PEFT) of the image-only branch for this call ("base" = the model's own
                image-only modules). Default: whatever adapter is active. Several in one pass:
                [`~AesformerModel.forward_adapters`].
            output_attentions (`bool`, *optional*, defaults to `config.output_attentions`):
                Return the fusion layers' attention weights (`AesformerOutput.attentions`).
            output_hidden_states (`bool` or list of `int`, *optional*, defaults to `config.output_hidden_states`):
                Return the fusion stack's hidden states (`AesformerOutput.hidden_states`); a list of indices (as
                transformers' models take) keeps those entries and leaves the others None.
            return_dict (`bool`, *optional*, defaults to `config.return_dict`):
                An `AesformerOutput`, or its `to_tuple()`.

        Traced by `torch.export` or `torch.compile`, routing takes no Python decision on tensor values: each branch
        runs on the rows that use it (a data-dependent number, possibly zero), never on the others; a head with
        fewer active bins than its width then answers at full width (inactive bins have probability 0).
        """
        if "adapters" in kwargs:
            raise TypeError("AesformerModel.forward takes `adapter=NAME` (one dataset adapter); for several in one "
                            "pass call `model.forward_adapters(..., adapters=[...])`")
        output_attentions, output_hidden_states, return_dict = self._output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        # `forward_heads` passes a dict that receives the per-head tensors (the call still goes through
        # `__call__`: hooks, DDP and accelerate's wrappers see an ordinary forward)
        head_outputs = kwargs.pop("_head_outputs", None)
        output, heads = self._answer(pixel_values, input_ids, attention_mask, token_type_ids, labels, [adapter],
                                     output_attentions, output_hidden_states, with_heads=head_outputs is not None)[0]
        if head_outputs is not None:
            head_outputs.update(heads)
        return output if return_dict else output.to_tuple()

    def forward_adapters(
        self,
        pixel_values: torch.Tensor,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        adapters: Sequence[str] = (),
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
    ) -> Dict[str, AesformerOutput]:
        """Several dataset adapters in one pass: `{name: AesformerOutput}` in the order of `adapters`, each entry
        equal to `forward(..., adapter=name)`. The Swin work and the with-comments branch are done once (with
        `output_attentions` / `output_hidden_states` the padded fusion batch runs once per adapter)."""
        if isinstance(adapters, str) or not adapters:
            raise ValueError(f"adapters must be a non-empty list of adapter names, got {adapters!r} (one adapter: "
                             "`model(..., adapter=NAME)`)")
        names = [str(name) for name in adapters]
        if len(set(names)) != len(names):
            raise ValueError(f"adapters lists a name twice: {names}")
        output_attentions, output_hidden_states, _ = self._output_flags(output_attentions, output_hidden_states, True)
        answers = self._answer(pixel_values, input_ids, attention_mask, token_type_ids, labels, names,
                               output_attentions, output_hidden_states)
        return {name: output for name, (output, _) in zip(names, answers)}

    def forward_heads(
        self,
        pixel_values: torch.Tensor,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        adapter: Optional[str] = None,
    ) -> AesformerHeadOutputs:
        """The forward (same answer, same loss, one pass through `model(...)`, so hooks and wrappers apply) plus
        what the training objectives read: each head's logits, distribution and input, and the unimodal
        embeddings of the stage-1 contrastive loss. See [`AesformerHeadOutputs`]."""
        heads = {}
        output = self(pixel_values, input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                      labels=labels, adapter=adapter, output_attentions=False, output_hidden_states=False,
                      return_dict=True, _head_outputs=heads)
        return AesformerHeadOutputs(output=output, **heads)

    def _answer(self, pixel_values, input_ids, attention_mask, token_type_ids, labels, adapters,
                output_attentions, output_hidden_states, with_heads=False):
        """[(AesformerOutput, heads dict or None)] per name of `adapters` (None = the active adapter)."""
        batch = pixel_values.shape[0]
        tracing = _is_tracing(pixel_values)
        if input_ids is None:
            used_comments = torch.zeros(batch, dtype=torch.bool, device=pixel_values.device)
        else:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            if input_ids.shape[0] != batch or attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"pixel_values has {batch} images but input_ids/attention_mask have shapes "
                    f"{tuple(input_ids.shape)}/{tuple(attention_mask.shape)}"
                )
            used_comments = attention_mask.bool().any(dim=-1)

        stages, _ = self._vision_tokens(pixel_values)
        stage_maps = self._stage_maps(stages)
        vl_rows = None if tracing else used_comments.nonzero().flatten()  # traced: see _with_comments_traced
        vision_rows = (~used_comments).nonzero().flatten()
        # Eager: a branch no sample uses is skipped. Traced: the row counts are not known, both branches are
        # traced and each runs on its own (possibly empty) rows.
        has_vl = input_ids is not None and (tracing or len(vl_rows) > 0)
        has_vision = tracing or len(vision_rows) > 0
        padded_batch = bool(output_attentions) or bool(output_hidden_states)

        def take(x, rows):  # a branch that answers for the whole batch takes the tensors as they are (no copy)
            if x is None or (not tracing and len(rows) == batch):
                return x
            return x.index_select(0, rows)

        comment_inputs = None
        if has_vl and not tracing:
            comment_inputs = (take(stage_maps[-1], vl_rows), take(input_ids, vl_rows), take(attention_mask, vl_rows),
                              take(token_type_ids, vl_rows))
        with_comments = None
        if has_vl and tracing:
            if padded_batch:
                raise ValueError(
                    "output_attentions / output_hidden_states are not available while tracing (torch.export, "
                    "torch.compile) a batch with comment inputs: their row count is data-dependent"
                )
            with_comments = self._with_comments_traced(
                used_comments, stage_maps[-1], input_ids, attention_mask, token_type_ids
            )
            vl_rows = torch.arange(batch, device=used_comments.device)
        elif has_vl and not padded_batch:
            with_comments = self._with_comments(*comment_inputs)

        answers = []
        for adapter in adapters:
            image_only, attentions, hidden_states, adapted = None, None, None, None
            with self._image_only_adapter(adapter):
                if labels is not None:
                    adapted = self._enabled_dataset_adapter()
                if padded_batch:
                    with_comments, image_only, attentions, hidden_states = self._fuse_padded_batch(
                        used_comments, (vl_rows, vision_rows if has_vision else None),
                        comment_inputs, [take(m, vision_rows) for m in stage_maps] if has_vision else None,
                        bool(output_attentions), bool(output_hidden_states),
                    )
                elif has_vision:
                    image_only = self._image_only([take(m, vision_rows) for m in stage_maps])
                answered_by = adapter or self._active_image_only_adapter()
            output, heads = self._assemble(batch, used_comments, vl_rows, with_comments, vision_rows, image_only,
                                           labels, adapted, with_heads)
            if hidden_states is not None and isinstance(output_hidden_states, (list, tuple)):
                kept = {int(i) % len(hidden_states) for i in output_hidden_states}
                hidden_states = tuple(h if i in kept else None for i, h in enumerate(hidden_states))
            for name, value in (("hidden_states", hidden_states), ("attentions", attentions)):
                if value is not None:
                    output[name] = value
            if image_only is not None:
                output.image_only_adapter, output.image_only_trained = image_only_answer(self.config, answered_by)
            answers.append((output, heads))
        return answers

    def _assemble(self, batch, used_comments, vl_rows, with_comments, vision_rows, image_only, labels,
                  adapted=None, with_heads=False):
        """Scatter the branches' rows into batch-sized tensors: (AesformerOutput, the heads' batch-sized tensors
        (NaN rows where a head was not used) when `with_heads`, else None)."""
        ref = with_comments.distribution if with_comments is not None else image_only.distribution
        branches = [(rows, b) for rows, b in ((vl_rows, with_comments), (vision_rows, image_only)) if b is not None]
        # A mixed batch may answer on two scales (e.g. a 7-bin adapter): narrower rows are zero-padded.
        width = max(b.distribution.shape[-1] for _, b in branches)

        def full(rows, values):
            out = ref.new_full((batch,) + tuple(values.shape[1:]), float("nan"))
            return out.index_copy(0, rows, values.to(out.dtype))

        distribution = ref.new_zeros(batch, width)
        score, threshold, std = ref.new_zeros(batch), ref.new_zeros(batch), ref.new_zeros(batch)
        bin_values = ref.new_full((batch, width), float("nan"))
        columns = torch.arange(width, device=ref.device)
        heads = {"logits": {}, "distributions": {}, "embeds": {}} if with_heads else None
        for rows, branch in branches:
            padded = F.pad(branch.distribution, (0, width - branch.distribution.shape[-1]))
            distribution = distribution.index_copy(0, rows, padded.to(ref.dtype))
            values = branch.bin_values.to(ref.dtype)
            branch_score = branch.distribution @ values
            score = score.index_copy(0, rows, branch_score)
            threshold = threshold.index_copy(0, rows, branch.threshold.to(ref.dtype).expand(rows.shape[0]))
            # Bins past the head's active ones have probability 0 (traced: the head answers at full width).
            spread = (branch.distribution * (values - branch_score[:, None]) ** 2).sum(-1)
            std = std.index_copy(0, rows, spread.clamp_min(0).sqrt())
            # The head's scale, NaN past its active bins (a tensor comparison: no Python decision when traced).
            scale = F.pad(values, (0, width - values.shape[-1]))
            scale = torch.where(columns < branch.num_bins.to(columns.device), scale, float("nan"))
            bin_values = bin_values.index_copy(0, rows, scale.expand(rows.shape[0], width))
            if with_heads:
                for head, (embeds, logits, dist) in branch.heads.items():
                    heads["embeds"][head] = full(rows, embeds)
                    heads["logits"][head] = full(rows, logits)
                    heads["distributions"][head] = full(rows, dist)
                for key, values in (branch.unimodal or {}).items():
                    heads[key] = full(rows, values)

        loss = None
        if labels is not None:
            loss = self._loss(labels, branches, with_comments, image_only, adapted)

        output = AesformerOutput(
            loss=loss,
            distribution=distribution,
            score=score,
            threshold=threshold,
            used_comments=used_comments.to(torch.uint8),
            bin_values=bin_values,
            std=std,
        )
        return output, heads

    # ------------------------------------------------------------------ loss
    def _enabled_dataset_adapter(self) -> Optional[str]:
        """Name of the enabled adapter when it lives in the image-only parts only (a dataset adapter: it trains
        the image-only branch), else None (no adapter, or one that also changes the with-comments branch)."""

        def enabled(module):
            return not getattr(module, "disable_adapters", False) and bool(module.active_adapters)

        image_only = self._adapter_layers()
        names = [module.active_adapters[0] for module in image_only if enabled(module)]
        if not names:
            return None
        own = {id(module) for module in image_only}
        for module in self.modules():
            if id(module) not in own and callable(getattr(module, "set_adapter", None)) and \
                    callable(getattr(module, "enable_adapters", None)) and hasattr(module, "active_adapters") and \
                    enabled(module):
                return None
        return names[0]

    def _branch_parameters(self, modality: str) -> List[nn.Parameter]:
        """The parameters only `modality`'s branch uses (the Swin encoder, the vision projection and the fusion
        attention serve both)."""
        if modality == VISION_LANGUAGE:
            modules = [self.text_model, self.vl_image_norm, self.vl_image_head, self.vl_text_head]
            modules += [layer.vl_ffn for layer in self.fusion_layers]
        else:
            modules = [self.multi_scale_adapter, self.vision_norm, self.vision_head]
            modules += [layer.vision_ffn for layer in self.fusion_layers]
        return [p for m in modules for p in m.parameters()]

    def _loss(self, labels, branches, with_comments, image_only, adapted):
        """Mean over the counted samples of the EMD (r=2) of each head a sample used, summed over those heads.

        Always fp32 (bf16 weights or autocast included). With a dataset adapter enabled only the image-only samples
        count (the adapter trains that branch; the with-comments heads are the frozen base model's)."""
        counted = [(rows, b) for rows, b in branches if adapted is None or b is image_only]
        if not counted:
            raise ValueError(
                f"dataset adapter {adapted!r} trains the image-only branch, but every sample of this batch has "
                "comments: its loss has nothing to count. Give the adapter images without comments (e.g. "
                "`AestheticCollator(processor, include_comments=False)`), or disable the adapter to train or "
                "evaluate the with-comments branch."
            )
        target = normalize_labels(labels.to(counted[0][1].distribution.device))  # float32
        per_sample = target.new_zeros(target.shape[0])
        for rows, branch in counted:
            t = target[rows]
            if t.shape[-1] != branch.distribution.shape[-1]:
                raise ValueError(
                    f"labels have {t.shape[-1]} bins but the answering head has {branch.distribution.shape[-1]}"
                )
            emd = sum(earth_movers_distance(dist.float(), t) for _, _, dist in branch.heads.values())
            if branch.valid is not None:  # traced with-comments branch: rows of other samples are NaN
                emd = torch.where(branch.valid, emd, torch.zeros_like(emd))
            per_sample = per_sample.index_add(0, rows, emd)
        if len(counted) == len(branches):
            loss = per_sample.mean()
        else:  # an adapted model: the image-only rows only
            loss = per_sample[counted[0][0]].mean()
        if torch.is_grad_enabled():
            # A branch no counted sample went through would leave its trainable parameters out of the graph, and
            # DDP with `find_unused_parameters=False` (Trainer's choice with gradient checkpointing) then fails or
            # hangs on a rank whose batch holds one kind of sample only. A zero-weighted term keeps them in the
            # graph with a zero gradient (what their gradient is on such a batch); the loss value is unchanged.
            present = {VISION_LANGUAGE: with_comments is not None and adapted is None, VISION: image_only is not None}
            idle = [p for modality, used in present.items() if not used
                    for p in self._branch_parameters(modality) if p.requires_grad]
            if idle:
                loss = loss + 0.0 * sum(p.sum().float() for p in idle)
        return loss

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, load_default_adapter: bool = True,
                        **kwargs):
        """`PreTrainedModel.from_pretrained`, then the config's `default_adapter` (`adapters/<name>/` of the same
        folder or Hub repository) folded into the image-only modules, so that images without comments get the
        trained answer without PEFT. `load_default_adapter=False` keeps the model's own image-only weights (to
        train, or to load PEFT adapters on top)."""
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        if load_default_adapter and pretrained_model_name_or_path is not None:
            fold_default_adapter(model, pretrained_model_name_or_path, kwargs)
        return loaded

    @classmethod
    def from_vision_text_pretrained(
        cls, vision_model_name_or_path, text_model_name_or_path, **config_kwargs
    ) -> "AesformerModel":
        """Start stage 1 from a pretrained Swin and BERT (folders or Hub ids).

        The fusion layers are built from the last `num_fusion_layers` BERT layers: the shared attention and the
        `vl_ffn` copy that layer's attention and FFN, and the `vision_ffn` starts as another copy of the same FFN
        (as in the paper). The two image norms start as copies of Swin's final LayerNorm when the widths match
        (Aesformer-T); heads, adapters and the vision projection are freshly initialised.
        """
        vision = SwinModel.from_pretrained(vision_model_name_or_path, add_pooling_layer=False)
        text = BertModel.from_pretrained(text_model_name_or_path, add_pooling_layer=False)
        config = AesformerConfig(
            vision_config=vision.config.to_dict(), text_config=text.config.to_dict(), **config_kwargs
        )
        if config.num_fusion_layers > config.text_config.num_hidden_layers:
            raise ValueError(
                f"num_fusion_layers={config.num_fusion_layers} but the text model has only "
                f"{config.text_config.num_hidden_layers} layers to copy"
            )
        model = cls(config)
        # Swin's final LayerNorm is not part of AesformerModel (see __init__); it only seeds the two image norms.
        vision_state = {k: v for k, v in vision.state_dict().items() if not k.startswith("layernorm.")}
        model.vision_model.load_state_dict(vision_state)
        model.text_model.load_state_dict(text.state_dict())
        source_layers = text.encoder.layer[-config.num_fusion_layers:]
        for fusion, bert_layer in zip(model.fusion_layers, source_layers):
            fusion.load_state_dict(bert_layer_to_fusion_state(bert_layer.state_dict()))
        if not config.needs_vision_projection:
            for norm in (model.vl_image_norm, model.vision_norm):
                norm.load_state_dict(copy.deepcopy(vision.layernorm.state_dict()))
        return model


def bert_layer_to_fusion_state(bert_layer_state: dict) -> dict:
    """Map one `BertLayer` state dict to an `AesformerFusionLayer` one (both experts get the layer's FFN)."""
    attention = {
        "attention.self.query": "attention.query",
        "attention.self.key": "attention.key",
        "attention.self.value": "attention.value",
        "attention.output.dense": "attention.output",
        "attention.output.LayerNorm": "attention.layer_norm",
    }
    ffn = {"intermediate.dense": "intermediate", "output.dense": "output", "output.LayerNorm": "layer_norm"}
    state = {}
    for key, tensor in bert_layer_state.items():
        module, _, param = key.rpartition(".")
        if module in attention:
            state[f"{attention[module]}.{param}"] = tensor.clone()
        elif module in ffn:
            for expert in ("vl_ffn", "vision_ffn"):
                state[f"{expert}.{ffn[module]}.{param}"] = tensor.clone()
        else:
            raise KeyError(f"unexpected BertLayer key {key!r}")
    return state


__all__ = [
    "AesformerHeadOutputs",
    "AesformerModel",
    "AesformerOutput",
    "AesformerPreTrainedModel",
    "earth_movers_distance",
]
