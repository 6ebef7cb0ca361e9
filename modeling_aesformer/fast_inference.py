"""Eval-mode fast path of the installed package (not shipped to the Hub): the same results as the model's own
modules up to float rounding, with less work (about 5 % of an fp32 forward on CPU).

- Swin blocks (`_swin_block_fast`): the cyclic shift and window partition as one gather (and one inverse gather),
  q/k/v as one GEMM, the relative position bias and shifted-window masks built once, no zero padding.
- The fusion attention's q/k/v as one GEMM (`fused_qkv`).

The derived tensors (fused weights, biases, window orders) are cached here, keyed by the identity, storage and
version counter of the parameters they come from, so any weight change rebuilds them. `install()` (run when the
package is imported) hands these functions to the model classes; a model loaded from a Hub folder without the
package, a model under `torch.compile`/`torch.export`, a model in train mode or with autograd on its weights, and a
model whose modules carry hooks (accelerate's `device_map`/offload hooks included) all run transformers' own modules.
"""

import weakref
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

# Tensors derived from parameters (fused q/k/v weights, Swin's per-window attention biases) are cached per module and
# rebuilt when any source parameter changes: the key holds each source's identity (a weak reference, so a new
# Parameter never matches an old entry), storage pointer and version counter (bumped by every in-place update:
# optimizer steps, `load_state_dict`, `copy_`). Nothing is cached while autograd must see the derivation (a source
# requires grad and grad mode is on) or under `torch.compile` (the compiler folds it); the cache lives outside the
# modules, so state dicts, deepcopy and pickling never see it.
_DERIVED = weakref.WeakKeyDictionary()
_GEOMETRY: Dict[tuple, Optional[Tuple[torch.Tensor, torch.Tensor]]] = {}
_CACHED_BIAS_MAX_BYTES = 32 * 2**20  # a per-window attention bias expanded to the batch is kept below this size


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return compiler is not None and any(
        callable(getattr(compiler, name, None)) and getattr(compiler, name)() for name in ("is_compiling", "is_exporting")
    )


def _plain_inputs(*tensors: torch.Tensor) -> bool:
    """Real tensors, outside any compiler or exporter: FakeTensors, functional tensors and proxies (torch.export,
    torch.compile, fx) must never be cached, nor reach a cache built from real tensors."""
    return not _is_compiling() and all(type(t) is torch.Tensor or type(t) is nn.Parameter for t in tensors)


def _derived(owner: nn.Module, name, sources: Sequence[torch.Tensor], build):
    """`build()` (a function of `sources`), cached on `owner` under `name` while the sources are unchanged."""
    if (torch.is_grad_enabled() and any(s.requires_grad for s in sources)) or _is_compiling():
        return build()
    key = tuple((s.data_ptr(), s._version, s.dtype, s.device) for s in sources)
    entries = _DERIVED.setdefault(owner, {})
    entry = entries.get(name)
    if entry is not None and entry[0] == key and all(ref() is s for ref, s in zip(entry[1], sources)):
        return entry[2]
    with torch.inference_mode(False), torch.no_grad():  # a normal tensor: usable outside inference mode too
        value = build()
    entries[name] = (key, [weakref.ref(s) for s in sources], value)
    return value


def _plain_linear(module) -> bool:
    """An unwrapped nn.Linear without hooks: its weights may be read directly (a PEFT layer or a hooked module is
    called as a module instead)."""
    return type(module) is nn.Linear and not (
        module._forward_hooks or module._forward_pre_hooks or hasattr(module, "_hf_hook")
    )


def _fused_projection(owner: nn.Module, linears: Sequence[nn.Module]) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """(weight, bias) of the given Linears concatenated along the output dimension (one GEMM instead of several), or
    None when they must run as separate modules: wrapped or hooked Linears, or autograd training them. The separate
    parameters stay the checkpoint format; the fused copy is derived (see `_derived`)."""
    if not all(_plain_linear(m) for m in linears):
        return None
    params = [m.weight for m in linears] + [m.bias for m in linears if m.bias is not None]
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        return None

    def build():
        weight = torch.cat([m.weight for m in linears], dim=0)
        biases = [m.bias if m.bias is not None else m.weight.new_zeros(m.out_features) for m in linears]
        return weight, torch.cat(biases, dim=0)

    return _derived(owner, "fused_projection", params, build)


def _window_geometry(height: int, width: int, window: int, shift: int, device) -> Optional[Tuple[torch.Tensor, ...]]:
    """(order, inverse) token indices: `tokens[:, order]` is Swin's cyclic shift by `-shift` followed by the window
    partition (window-major, row-major inside a window) in one gather; `inverse` undoes it. None = identity."""
    key = (height, width, window, shift, str(device))
    if key not in _GEOMETRY:
        if shift == 0 and window == height and window == width:
            _GEOMETRY[key] = None
        else:
            with torch.inference_mode(False):  # normal tensors: autograd may save them (index_select's backward)
                rows = (torch.arange(height) + shift) % height
                cols = (torch.arange(width) + shift) % width
                grid = rows[:, None] * width + cols[None, :]  # grid[h, w] = source of shifted position (h, w)
                order = grid.view(height // window, window, width // window, window).transpose(1, 2).reshape(-1)
                _GEOMETRY[key] = (order.to(device), torch.argsort(order).to(device))
    return _GEOMETRY[key]


def _shift_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """Swin's shifted-window mask [num_windows, N, N]: 0 inside a region, -100 across regions (as transformers)."""
    h_idx, w_idx = torch.arange(height), torch.arange(width)
    h_region = (h_idx >= height - window).long() + (h_idx >= height - shift).long()
    w_region = (w_idx >= width - window).long() + (w_idx >= width - shift).long()
    regions = (h_region[:, None] * 3 + w_region[None, :]).float()
    windows = regions.view(height // window, window, width // window, window).transpose(1, 2).reshape(-1, window**2)
    mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0)


def _window_attention_bias(block, window: int, shift: int, height: int, width: int, batch: int) -> torch.Tensor:
    """Relative position bias (+ the shifted-window mask) for one Swin block, shaped for SDPA over
    `[batch * windows, heads, N, N]`: `[1, heads, N, N]` without shift, else expanded to every window of the batch."""
    bias_module = block.attention.relative_position_bias
    table = bias_module.relative_position_bias_table
    area = window * window

    def relative():
        bias = table[bias_module.relative_position_index.view(-1)].view(area, area, -1)
        return bias.permute(2, 0, 1).unsqueeze(0)  # [1, heads, N, N]

    if shift == 0:
        return _derived(block, ("bias", window), [table], lambda: relative().contiguous())

    def combined():
        mask = _shift_mask(height, width, window, shift).to(device=table.device, dtype=table.dtype)
        return relative() + mask.unsqueeze(1)  # [windows, heads, N, N]

    per_window = _derived(block, ("bias", window, shift, height, width), [table], combined)
    expanded_shape = (batch * per_window.shape[0],) + tuple(per_window.shape[1:])

    def expand():
        return per_window.unsqueeze(0).expand((batch,) + tuple(per_window.shape)).reshape(expanded_shape)

    if per_window.numel() * batch * per_window.element_size() > _CACHED_BIAS_MAX_BYTES:
        return expand()
    return _derived(block, ("bias", window, shift, height, width, batch), [table], expand)


def _swin_block_fast(block, hidden_states: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """One SwinLayer in eval mode, equal to `block(hidden_states, (height, width))[0]` up to float rounding, with
    less work: the cyclic shift and window partition are one gather (and one inverse gather), q/k/v are one GEMM,
    the attention bias and masks are built once, no zero padding. Falls back to the block itself where padding or
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
    geometry = _window_geometry(height, width, window, shift, hidden_states.device)
    if geometry is not None:
        hidden_states = hidden_states.index_select(1, geometry[0])
    fused = _fused_projection(attention, (attention.q_proj, attention.k_proj, attention.v_proj))
    if fused is not None:
        query, key, value = F.linear(hidden_states, *fused).view(windows, area, 3, heads, head_dim).unbind(2)
    else:
        query, key, value = (
            proj(hidden_states).view(windows, area, heads, head_dim)
            for proj in (attention.q_proj, attention.k_proj, attention.v_proj)
        )
    bias = _window_attention_bias(block, window, shift, height, width, batch)
    context = F.scaled_dot_product_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_mask=bias, scale=attention.scaling
    )
    context = attention.o_proj(context.transpose(1, 2).reshape(batch, length, channels))
    if geometry is not None:
        context = context.index_select(1, geometry[1])
    hidden_states = shortcut + context
    return hidden_states + block.mlp(block.layernorm_after(hidden_states))


def vision_stage_tokens(swin, pixel_values: torch.Tensor) -> Optional[List[Tuple[torch.Tensor, int, int]]]:
    """The patch embedding, then every Swin stage's output (after its patch merging), as `(tokens [B, H*W, C], H, W)`,
    with `_swin_block_fast`;
    None (the caller runs the modules) when the inputs are not real tensors or a module carries a hook."""
    if not _plain_inputs(pixel_values) or any(
        hasattr(m, "_hf_hook") or m._forward_hooks or m._forward_pre_hooks for m in swin.modules()
    ):
        return None
    hidden_states, (height, width) = swin.embeddings(pixel_values)
    stages = [(hidden_states, height, width)]
    for stage in swin.encoder.layers:
        for block in stage.blocks:
            hidden_states = _swin_block_fast(block, hidden_states, height, width)
        if stage.downsample is not None:
            hidden_states = stage.downsample(hidden_states, (height, width))
            height, width = (height + 1) // 2, (width + 1) // 2
        stages.append((hidden_states, height, width))
    return stages


def fused_qkv(attention: nn.Module, hidden_states: torch.Tensor) -> Optional[torch.Tensor]:
    """`[q | k | v]` of an `AesformerFusionAttention` in one GEMM, or None where the three Linears must run."""
    if not _plain_inputs(hidden_states) or hasattr(attention, "_hf_hook"):
        return None
    fused = _fused_projection(attention, (attention.query, attention.key, attention.value))
    return None if fused is None else F.linear(hidden_states, *fused)


def install() -> None:
    """Give the model classes of `modeling_aesformer.modeling_aesformer` this fast path."""
    from .modeling_aesformer import AesformerFusionAttention, AesformerModel

    AesformerModel.fast_vision_stages = staticmethod(vision_stage_tokens)
    AesformerFusionAttention.fast_qkv = staticmethod(fused_qkv)
