"""Channel mixers: the plain MLP, the GLU family (Shazeer 2020), and the gated causal
convolution of Dauphin et al. 2017 (a time mixer, kept here beside the GLU it is built from)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gatesearch.primitives.activations import make_activation
from gatesearch.primitives.base import NoDecodeState, Primitive, Prunable
from gatesearch.primitives.pruning import PruningGate, make_gate, prune_param
from gatesearch.registry import Categorical, FloatRange, IntRange, ParamSpec, Role, register

# The activation applied to the gating half of each GLU variant; None is the identity.
GLU_VARIANTS: dict[str, str | None] = {
    "glu": "sigmoid",
    "bilinear": None,
    "reglu": "relu",
    "geglu": "gelu",
    "swiglu": "silu",
}


def hidden_width(d_model: int, expand: float, hidden: int | None) -> int:
    """The hidden width: `hidden` when pinned (by pruning), else round(expand·d_model)."""
    if hidden is not None:
        if hidden < 1:
            raise ValueError(f"hidden must be at least 1, got {hidden}")
        return int(hidden)
    if expand <= 0:
        raise ValueError(f"expand must be positive, got {expand}")
    return max(1, round(expand * d_model))


@torch.no_grad()
def shrink_linear(
    linear: nn.Linear,
    out_index: torch.Tensor | None = None,
    in_index: torch.Tensor | None = None,
    in_scale: torch.Tensor | None = None,
) -> nn.Linear:
    """A new Linear keeping the rows `out_index` and columns `in_index` of `linear`'s weight,
    with the kept columns multiplied by `in_scale` (gate values folded into the weight)."""
    weight: torch.Tensor = linear.weight
    bias: torch.Tensor | None = linear.bias
    if out_index is not None:
        weight = weight.index_select(0, out_index)
        bias = bias.index_select(0, out_index) if bias is not None else None
    if in_index is not None:
        weight = weight.index_select(1, in_index)
    if in_scale is not None:
        weight = weight * in_scale.to(weight)[None, :]
    out = nn.Linear(
        weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
        dtype=weight.dtype,
    )  # fmt: skip
    out.weight.copy_(weight)
    if bias is not None:
        out.bias.copy_(bias)
    return out


@torch.no_grad()
def shrink_per_channel_params(module: nn.Module, width: int, keep: torch.Tensor) -> None:
    """Slice every parameter of `module` whose first dimension is `width` (per-channel
    parameters such as swish_beta's β, sized by the hidden width) down to the channels `keep`."""
    for name, param in list(module.named_parameters()):
        if param.dim() >= 1 and param.shape[0] == width:
            owner_path, _, attr = name.rpartition(".")
            owner = module.get_submodule(owner_path) if owner_path else module
            setattr(owner, attr, nn.Parameter(param.index_select(0, keep).clone()))


def _kept_channels(gate: PruningGate) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices of open units, all final gate values); at least one unit is kept so the
    module keeps a valid shape (a closed unit kept has its zero gate folded in: no change)."""
    values = gate.final_values()
    keep = torch.nonzero(values > 0).flatten()
    if keep.numel() == 0:
        keep = torch.zeros(1, dtype=torch.long, device=values.device)
    return keep, values


class _HiddenChannels(Primitive, Prunable):
    """Shared pruning for mixers with a hidden layer of `hidden` channels gated by
    `channel_gate`: the gate scales each hidden channel before the down projection W₂."""

    hidden: int
    prune: str
    channel_gate: PruningGate | None
    down: nn.Linear

    def open_units(self) -> int:
        if self.channel_gate is None:
            return self.hidden
        return max(1, int(self.channel_gate.keep_mask().sum()))

    @torch.no_grad()
    def prune_(self) -> dict[str, Any]:
        if self.channel_gate is not None:
            keep, values = _kept_channels(self.channel_gate)
            self._shrink_inputs(keep)
            self.down = shrink_linear(self.down, in_index=keep, in_scale=values[keep])
            self.hidden = int(keep.numel())
            self.channel_gate = None
            self.prune = "none"
        return {"hidden": self.hidden, "prune": "none"}

    @abstractmethod
    def _shrink_inputs(self, keep: torch.Tensor) -> None:
        """Keep only the hidden channels `keep` on the up projection and the activation."""

    def _gated(self, h: torch.Tensor) -> torch.Tensor:
        return h if self.channel_gate is None else h * self.channel_gate()


_EXPAND_DOC = "hidden width = round(expand·d_model)"
_HIDDEN_DOC = "hidden width pinned by pruning; overrides expand"


@register(
    "mlp",
    Role.CHANNEL,
    [
        ParamSpec("expand", FloatRange(0.25, 16.0), default=4.0, doc=_EXPAND_DOC),
        ParamSpec("act", None, default="gelu", ref=Role.ACTIVATION),
        prune_param("trainable gates over hidden channels; pruning removes channels"),
        ParamSpec("hidden", IntRange(1, 1 << 20), default=None, internal=True, doc=_HIDDEN_DOC),
    ],
)
class MLP(_HiddenChannels):
    """y = W₂ act(W₁ x), W₁: d → h, W₂: h → d, h = round(expand·d), no biases.

    With pruning gates z: y = W₂ (act(W₁ x) ⊙ z); prune_() removes channels with z = 0 and
    folds z into W₂'s columns. Parameters: 2·d·h (expand 4: 8·d²), plus the activation's own
    (swish_beta: h) and h pruning gates.
    """

    def __init__(
        self,
        d_model: int,
        expand: float = 4.0,
        act: str = "gelu",
        prune: str = "none",
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        self.hidden = hidden_width(d_model, expand, hidden)
        self.prune = prune
        self.up = nn.Linear(d_model, self.hidden, bias=False)
        self.act = make_activation(act, self.hidden)
        self.down = nn.Linear(self.hidden, d_model, bias=False)
        self.channel_gate = make_gate(prune, self.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self._gated(self.act(self.up(x))))

    def _shrink_inputs(self, keep: torch.Tensor) -> None:
        shrink_per_channel_params(self.act, self.hidden, keep)
        self.up = shrink_linear(self.up, out_index=keep)


@register(
    "glu",
    Role.CHANNEL,
    [
        ParamSpec("variant", Categorical(tuple(GLU_VARIANTS)), default="swiglu"),
        ParamSpec("expand", FloatRange(0.25, 16.0), default=8.0 / 3.0, doc=_EXPAND_DOC),
        prune_param("trainable gates over hidden channels; pruning removes channels"),
        ParamSpec("hidden", IntRange(1, 1 << 20), default=None, internal=True, doc=_HIDDEN_DOC),
    ],
)
class GLU(_HiddenChannels):
    """y = (act(x W) ⊙ x V) W₂ (Shazeer 2020), W, V: d → h, W₂: h → d, no biases.

    act by variant: glu σ, bilinear identity, reglu ReLU, geglu GELU, swiglu SiLU.
    h = round(expand·d). Shazeer's 2/3 scaling, which matches a plain FFN's parameters, is
    written through expand: a LLaMA-style SwiGLU is expand = 8/3 (= 2/3 · 4); Hawk's GeGLU is
    expand = 3. W and V are one fused d → 2·h GEMM, then chunked.
    Parameters: 3·d·h (expand 8/3: 8·d²; expand 3: 9·d²), plus h pruning gates.
    """

    def __init__(
        self,
        d_model: int,
        variant: str = "swiglu",
        expand: float = 8.0 / 3.0,
        prune: str = "none",
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        if variant not in GLU_VARIANTS:
            raise ValueError(f"variant must be one of {tuple(GLU_VARIANTS)}, got {variant!r}")
        self.hidden = hidden_width(d_model, expand, hidden)
        self.prune = prune
        self.variant = variant
        act_name = GLU_VARIANTS[variant]
        self.act = nn.Identity() if act_name is None else make_activation(act_name, self.hidden)
        self.up = nn.Linear(d_model, 2 * self.hidden, bias=False)  # rows: [W | V]
        self.down = nn.Linear(self.hidden, d_model, bias=False)
        self.channel_gate = make_gate(prune, self.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.up(x).chunk(2, dim=-1)  # (B, T, h) each
        return self.down(self._gated(self.act(a) * b))

    def _shrink_inputs(self, keep: torch.Tensor) -> None:
        shrink_per_channel_params(self.act, self.hidden, keep)
        self.up = shrink_linear(self.up, out_index=torch.cat((keep, keep + self.hidden)))


@register(
    "gcnn",
    Role.MIXER,
    [ParamSpec("kernel", IntRange(1, 64), default=4, doc="convolution width k")],
    context=("d_model", "causal"),
)
class GatedConv(Primitive):
    """Gated convolution block (Dauphin et al. 2017): y = h W_O,
    h = (X∗W + b) ⊙ σ(X∗V + c).

    ∗ is a 1-D convolution over time of width k; causal tasks pad k − 1 on the left so y_t
    sees x_{t−k+1..t}; non-causal ones pad (k − 1)//2 on the left and the rest on the right.
    W and V are one convolution to 2·d channels, chunked; W_O is a bias-free d → d Linear,
    the block's output projection. Parameters: 2·k·d² + 2·d (conv with biases b, c) + d².
    """

    def __init__(self, d_model: int, causal: bool, kernel: int = 4) -> None:
        super().__init__()
        if kernel < 1:
            raise ValueError(f"kernel must be at least 1, got {kernel}")
        self.kernel = kernel
        self.causal = bool(causal)
        self.conv = nn.Conv1d(d_model, 2 * d_model, kernel)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    takes_lengths = True

    def decode_state(self, context: int) -> int:
        """The last k − 1 inputs the causal convolution reads besides the current one."""
        if not self.causal:
            raise NoDecodeState("a centred convolution reads later positions")
        return (self.kernel - 1) * self.conv.in_channels

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is not None and not self.causal:
            # A centred kernel reads up to k//2 positions ahead: zeroing the padding makes the
            # last real positions read zeros, as the convolution's own padding gives them when
            # the sequence is not padded.
            real = torch.arange(x.shape[1], device=x.device) < lengths.to(x.device)[:, None]
            x = x * real.unsqueeze(-1).to(x.dtype)  # (B, T, d)
        left = self.kernel - 1 if self.causal else (self.kernel - 1) // 2
        right = self.kernel - 1 - left
        u = F.pad(x.transpose(1, 2), (left, right))  # (B, d, T + k − 1)
        u = self.conv(u).transpose(1, 2)  # (B, T, 2·d)
        return self.proj(F.glu(u, dim=-1))


# For the code exporter (gatesearch.export): the module-level names each definition here uses,
# copied with it, and the engine-only methods an exported copy leaves out (pruning is done before
# export; Prunable's own methods are always left out).
EXPORT_DEPS: dict[str, tuple[str, ...]] = {
    "_HiddenChannels": ("PruningGate",),
    "MLP": ("hidden_width", "make_activation", "make_gate"),
    "GLU": ("GLU_VARIANTS", "hidden_width", "make_activation", "make_gate"),
}
EXPORT_OMIT: dict[str, tuple[str, ...]] = {
    "_HiddenChannels": ("_shrink_inputs",),
    "MLP": ("_shrink_inputs",),
    "GLU": ("_shrink_inputs",),
}
