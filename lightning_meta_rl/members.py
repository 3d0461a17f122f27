"""The member form of the student's layers: M members' parameters stacked in one tensor, each member run on its
own inputs ``[M, B, ...]`` with its own parameters (batched matrix products, in the style of CORL's
``VectorizedLinear``), and the maps between an ordinary layer's parameters and one member's.

A member's parameters are kept in the layout the batched kernels read, so that a forward takes no view of a
parameter (a view is an autograd node of its own, about 10% of an eager stacked update; docs/learner.md): a
linear weight transposed, ``[in, out]``, and vectors as rows, ``[1, d]``. ``to_member`` and ``to_plain`` map
one member's slice between the two layouts; population checkpoints record the layout they hold (``LAYOUT``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

# the layout of a stacked student's parameters in a population checkpoint (population.py); 1: the ordinary layers'
LAYOUT = 2


class MemberLinear(nn.Linear):
    """A linear layer of stacked members, its parameters kept in the layout the batched product reads (no
    view taken per call): weight [M, in, out] (each member's weight transposed), bias [M, 1, out]; input
    [M, B, in]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class MemberLayerNorm(nn.LayerNorm):
    """A LayerNorm of stacked members: weight and bias [M, 1, d], input [M, B, d]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, F.layer_norm(x, self.normalized_shape, eps=self.eps), self.weight)


# the member form of each layer with parameters (layers without parameters run members as they are)
MEMBER_FORM: dict[type[nn.Module], type[nn.Module]] = {nn.Linear: MemberLinear, nn.LayerNorm: MemberLayerNorm}
PLAIN_FORM = {member: plain for plain, member in MEMBER_FORM.items()}


def stack_modules(modules: Sequence[nn.Module]) -> nn.Module:
    """One module whose members are the given modules (alike in shape): a copy of the first whose every parameter
    is ``[M, ...]``, member m's taken from ``modules[m]`` in the member layout, and whose linear and LayerNorm
    layers take their member form; its inputs are ``[M, B, ...]``. A vector parameter of any other module becomes
    rows ``[M, 1, d]``, which broadcast member by member where the module uses it elementwise; any other parameter
    has no member form. Buffers are kept once, so they must be equal in every module (action bounds, a fixed
    log-std)."""
    first = dict(modules[0].named_buffers())
    for module in modules[1:]:
        for name, b in module.named_buffers():
            if not torch.equal(b, first[name]):
                raise ValueError(f"the buffer '{name}' differs between the modules: a stacked module keeps one")
    out = copy.deepcopy(modules[0])
    sources = [dict(m.named_parameters()) for m in modules]
    for prefix, module in out.named_modules():
        layer = type(module) in MEMBER_FORM
        if layer:  # the same layer, run member by member (its state is unchanged)
            module.__class__ = MEMBER_FORM[type(module)]
        for name, p in list(module.named_parameters(recurse=False)):
            if not layer and p.dim() != 1:
                raise TypeError(f"no member form for the parameter '{name}' of {type(module).__name__}")
            full = f"{prefix}.{name}" if prefix else name
            stacked = torch.stack([to_member(module, name, src[full].detach()) for src in sources])
            setattr(module, name, nn.Parameter(stacked, requires_grad=p.requires_grad))
    return out


def to_member(layer: nn.Module, name: str, t: torch.Tensor) -> torch.Tensor:
    """Parameter ``name`` of a linear or LayerNorm ``layer`` (either form), from a plain layer's layout to one
    member's: a linear weight transposed ([out, in] -> [in, out]), a vector as a row ([d] -> [1, d]). A view.
    The same for anything shaped like the parameter (its Adam moments)."""
    if isinstance(layer, nn.Linear) and name == "weight":
        return t.mT
    return t.unsqueeze(0) if t.dim() == 1 else t


def to_plain(layer: nn.Module, name: str, t: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`to_member`: one member's slice in a plain layer's layout (a view)."""
    if isinstance(layer, nn.Linear) and name == "weight":
        return t.mT
    return t.squeeze(0)


def layers_of(net: nn.Module) -> list[tuple[nn.Module, str]]:
    """The layer and name of each of ``net``'s parameters, in ``net.parameters()`` order (the order of its
    optimizer's state)."""
    return [(m, n) for _, m in net.named_modules() for n, _ in m.named_parameters(recurse=False)]


def member_layout(net: nn.Module) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """For each parameter of the ordinary network ``net`` (``parameters()`` order), the map of a tensor of its
    shape to one member's layout: what a stacked copy's Adam moments need from the ordinary student's."""
    return [functools.partial(to_member, layer, name) for layer, name in layers_of(net)]


@torch.no_grad()
def load_member_(plain: nn.Module, stacked: nn.Module, k: int) -> None:
    """The plain network ``plain`` takes member k's parameters of its stacked twin ``stacked``."""
    pairs = zip(layers_of(plain), plain.parameters(), stacked.parameters(), strict=True)
    for (layer, name), dst, src in pairs:
        dst.copy_(to_plain(layer, name, src[k]))


def copy_members_(dst: torch.Tensor, src: torch.Tensor) -> None:
    """``dst`` takes ``src``'s values: the same shape; one tensor broadcast to every member of ``dst``
    (``[M, ...]`` from ``[...]``); or N members each to its group of ``dst`` (``[N * M, ...]`` from ``[N, ...]``,
    as ``Student.stacked`` groups them)."""
    if dst.shape == src.shape or dst.dim() != src.dim():
        dst.copy_(src.expand_as(dst))
    else:
        n = src.shape[0]
        dst.unflatten(0, (n, dst.shape[0] // n)).copy_(src.unsqueeze(1).expand(n, dst.shape[0] // n, *src.shape[1:]))


def upgrade_layout(stacked: nn.Module, optimized: list[nn.Module], checkpoint: dict[str, Any], prefix: str) -> None:
    """A checkpoint of a stacked network written in layout 1 (each member in the ordinary layers' layout),
    brought to this layout in place: the parameters of ``stacked`` (``prefix`` + their names in
    ``state_dict``) and the Adam moments of the optimizers of ``optimized`` (parts of it, in the checkpoint's
    order of optimizers)."""

    def upgrade(layer: nn.Module, name: str, t: torch.Tensor) -> torch.Tensor:
        return torch.stack([to_member(layer, name, row) for row in t.unbind(0)])

    weights = checkpoint["state_dict"]
    for (layer, name), (full, _) in zip(layers_of(stacked), stacked.named_parameters(), strict=True):
        weights[prefix + full] = upgrade(layer, name, weights[prefix + full])
    for net, opt in zip(optimized, checkpoint["optimizer_states"], strict=False):
        for i, (layer, name) in enumerate(layers_of(net)):
            state = opt["state"].get(i, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key] = upgrade(layer, name, state[key])


# ---------------------------------------------------------------------------- members' slices
def member_slices(tensors: Iterable[torch.Tensor], members: Iterable[int], kept: bool = True) -> list[torch.Tensor]:
    """Each stacked tensor's slices ``t[k]`` for the given members (views), tensor by tensor: what eager Adam
    steps and target averages take when members step apart. ``kept``: tensors that outlive an update
    (parameters, targets, Adam state), whose slices are made once within ``kept_slices``; otherwise each
    tensor is split by one ``unbind`` (about half the cost of indexing member by member)."""
    keep = list(members)
    out: list[torch.Tensor] = []
    for t in tensors:
        views = _member_views(t) if kept else t.unbind(0)
        out.extend(views if keep == list(range(len(views))) else [views[k] for k in keep])
    return out


# within ``kept_slices``: id(tensor) -> (the tensor, its slices); the tensor is held, so no other tensor can take
# its id while the entry lives
_kept: dict[int, tuple[torch.Tensor, tuple[torch.Tensor, ...]]] | None = None


def _member_views(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if _kept is None:
        return t.unbind(0)
    hit = _kept.get(id(t))
    if hit is None or hit[0] is not t:
        hit = _kept[id(t)] = (t, t.unbind(0))
    return hit[1]


@contextlib.contextmanager
def kept_slices() -> Iterator[None]:
    """Within it, ``member_slices`` of a kept tensor are made once, not at every update: the updates of one call
    share them (splitting some 100 tensors into views at every update cost about a tenth of an eager update of
    eight members whose Adam step counts differ: benchmarks/results/update_speed/update_speed.md). The tensors
    change in place, so the slices stay theirs; nothing may replace a tensor's storage (``.data =``, ``set_``)
    within it."""
    global _kept
    outer, _kept = _kept, {}
    try:
        yield
    finally:
        _kept = outer
