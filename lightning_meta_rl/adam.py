"""Adam state as tensors, for the student's update (learner.py): torch's own functional Adam run on the state
tensors of ``torch.optim.Adam`` optimizers, so that the optimizers, their ``state_dict`` and the checkpoints stay
torch's. Adam is elementwise, so one Adam over stacked tensors is one independent Adam per member; a
population's members also keep one step count each (``per_member_steps``), so that they can step apart."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, cast

import torch
from torch import nn
from torch.optim.adam import adam

from lightning_meta_rl.members import copy_members_, member_slices

# one map per parameter of a network, from an ordinary student's layout to one member's (``member_layout``)
Layout = Sequence[Callable[[torch.Tensor], torch.Tensor]]
# the members that step: None (all), their indices, or (in a compiled update) a [M] bool tensor
Active = list[int] | torch.Tensor | None


def make_adam(params: Iterable[nn.Parameter] | Any, lr: float) -> torch.optim.Adam:
    """Adam, fused where torch supports it for these tensors (CPU and CUDA in recent torch)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr)


# ---------------------------------------------------------------------------- Adam state as tensors
class AdamState(NamedTuple):
    """One Adam's per-parameter tensors, in ``torch.optim.Adam``'s layout, and its settings."""

    exp_avg: list[torch.Tensor]
    exp_avg_sq: list[torch.Tensor]
    step: list[torch.Tensor]
    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    fused: bool | None

    @classmethod
    def of(cls, opt: torch.optim.Optimizer) -> AdamState:
        """The optimizer's own state tensors (updating them updates the optimizer). Its state is created the
        way its first step creates it, if it has none yet."""
        if type(opt) is not torch.optim.Adam or len(opt.param_groups) != 1:
            raise TypeError(f"the student's update needs a torch.optim.Adam with one parameter group, got {opt}")
        group = opt.param_groups[0]
        if group["amsgrad"] or group["maximize"] or group["differentiable"] or torch.is_tensor(group["lr"]):
            raise TypeError("the student's Adam must be plain: no amsgrad, maximize, differentiable or tensor lr")
        params: list[torch.Tensor] = group["params"]
        if not all(opt.state.get(p) for p in params):
            _create_state(opt, params)
        states = [opt.state[p] for p in params]
        return cls(
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["step"] for s in states],
            float(group["lr"]),
            (float(group["betas"][0]), float(group["betas"][1])),
            float(group["eps"]),
            float(group["weight_decay"]),
            group["fused"],
        )

    @staticmethod
    def stack(states: list[AdamState], layout: Layout | None = None) -> AdamState:
        """The Adam states of several students as one for their stacked members (``Student.stack``): moments
        ``[M, ...]``, in the members' layout (``layout``: one map per parameter, ``member_layout``), and one
        step count per member (``[M]``), so that members may step apart (masked steps)."""
        first = states[0]
        return first._replace(
            exp_avg=[torch.stack(ts) for ts in zip(*(_in(s.exp_avg, layout) for s in states), strict=True)],
            exp_avg_sq=[torch.stack(ts) for ts in zip(*(_in(s.exp_avg_sq, layout) for s in states), strict=True)],
            step=[torch.stack(ts) for ts in zip(*(s.step for s in states), strict=True)],
        )

    def members(self, keep: Iterable[int]) -> AdamState:
        """Every moment and (per-member) step count split into the slices of the members in ``keep`` (views)."""
        return self._replace(
            exp_avg=member_slices(self.exp_avg, keep),
            exp_avg_sq=member_slices(self.exp_avg_sq, keep),
            step=member_slices(self.step, keep),
        )

    def repeat(self, members: int | None, grouped: bool = False, layout: Layout | None = None) -> AdamState:
        """A copy with its own tensors, each moment repeated ``members`` times along a new leading dimension
        (None: the same shapes), in the members' layout (``layout``, as in ``stack``); with ``grouped``, the
        state of a stacked student, whose N members each repeat ``members`` times along the member dimension
        (``Student.stacked``), their step counts too. Otherwise the step counts stay one per parameter tensor:
        members step together."""

        def rep(t: torch.Tensor, i: int) -> torch.Tensor:
            if members is None:
                return t.clone()
            if grouped:
                return t.repeat_interleave(members, 0)
            t = t if layout is None else layout[i](t)
            return t.unsqueeze(0).repeat(members, *[1] * t.dim())

        return self._replace(
            exp_avg=[rep(t, i) for i, t in enumerate(self.exp_avg)],
            exp_avg_sq=[rep(t, i) for i, t in enumerate(self.exp_avg_sq)],
            step=[rep(t, i) if grouped and t.dim() > 0 else t.clone() for i, t in enumerate(self.step)],
        )

    @torch.no_grad()
    def copy_from(self, source: AdamState, layout: Layout | None = None) -> AdamState:
        """``source``'s state in this copy's tensors (each member of a repeated copy takes the state it
        repeats; ``layout``: as in ``repeat``, for a source that is an ordinary student's)."""
        dst = [*self.exp_avg, *self.exp_avg_sq, *self.step]
        src = [*_in(source.exp_avg, layout), *_in(source.exp_avg_sq, layout), *source.step]
        for d, s in zip(dst, src, strict=True):
            copy_members_(d, s)
        return source._replace(exp_avg=self.exp_avg, exp_avg_sq=self.exp_avg_sq, step=self.step)


def _in(moments: list[torch.Tensor], layout: Layout | None) -> list[torch.Tensor]:
    """One moment per parameter, in the members' layout (views)."""
    return moments if layout is None else [f(t) for f, t in zip(layout, moments, strict=True)]


def per_member_steps(opt: torch.optim.Optimizer, members: int) -> None:
    """Give a stacked student's Adam one step count per member (``[members]`` instead of one per tensor; its
    state is created first if it has none), so that members can take different numbers of steps."""
    AdamState.of(opt)
    for state in opt.state.values():
        if state["step"].dim() == 0:
            state["step"] = state["step"].expand(members).clone()


def _create_state(opt: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
    """Let torch create its Adam state (its own layout: dtypes, devices) by a step on zero gradients, which
    moves no parameter (the first moment is zero), then set the step count back to zero."""
    if any(opt.state.get(p) for p in params):
        raise RuntimeError("an Adam with state for some of its parameters only")
    saved = [p.grad for p in params]
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    for p, g in zip(params, saved, strict=True):
        opt.state[p]["step"].zero_()
        p.grad = g


def adam_step(params: list[torch.Tensor], grads: list[torch.Tensor], state: AdamState, active: Active = None) -> None:
    """One Adam step by torch's functional Adam, in place on ``params`` and ``state``.

    With one step count per member (``per_member_steps``), each member steps by its own count and only
    ``active`` members (None: all; a list of members, or in a compiled update a [M] bool tensor) move: torch's
    Adam keeps one count per tensor, so it is given each member's slices as tensors of their own. When every member steps and all members' bias corrections are the same
    (equal counts, as always in the DDPG arm; or counts so large that beta^t is below float32 resolution
    for each of them, after about 16,600 steps with beta2 = 0.999), it runs on the whole tensors instead,
    with member 0's count, and every member's count goes up by one: the same arithmetic element by element
    (to float32 rounding), in fewer and larger kernels. In a compiled update the whole tensors are given to
    torch's capturable Adam with each member's count broadcast over its slice, and the members that do not
    step are put back as they were (``masked``).
    """
    # autograd.grad returns a gradient in the layout its backward made (a transposed view, for some layers),
    # while the fused kernel pairs elements by memory: give it the parameters' layout (a no-op when it is)
    grads = [g.contiguous() for g in grads]
    counts = state.step[0] if state.step and state.step[0].dim() == 1 else None
    if counts is None:
        if active is not None:
            raise ValueError("masked members need one Adam step count per member (per_member_steps)")
        _adam(params, grads, state)
    elif torch.compiler.is_compiling():
        # traced: torch's capturable form computes the bias corrections from the step tensors, so each member's
        # count, viewed [M, 1, ...], corrects its own slice of the whole tensors (a graph; no branch on counts).
        # Members outside ``active`` (a [M] bool tensor here) step too, and are then put back as they were.
        steps = [t.view(-1, *[1] * (p.dim() - 1)) for t, p in zip(state.step, params, strict=True)]
        with masked(cast(torch.Tensor | None, active), [*params, *state.exp_avg, *state.exp_avg_sq, *steps]):
            _adam(params, grads, state._replace(step=steps), capturable=True)
    elif active is None and _one_correction(counts, state.betas):
        _adam(params, grads, state._replace(step=[s[0].clone() for s in state.step]))
        with torch.no_grad():
            torch._foreach_add_(state.step, 1.0)
    else:
        keep = range(len(counts)) if active is None else cast(list[int], active)
        _adam(member_slices(params, keep), member_slices(grads, keep, kept=False), state.members(keep))


@contextlib.contextmanager
def masked(active: torch.Tensor | None, tensors: list[torch.Tensor]) -> Iterator[None]:
    """Within it, ``tensors`` ([M, ...], members first) may change; on leaving, the rows of the members that are
    not ``active`` (a [M] bool tensor; None: every member is) get their values from before back, exactly."""
    if active is None:
        yield
        return
    before = [t.clone() for t in tensors]
    yield
    with torch.no_grad():
        for t, old in zip(tensors, before, strict=True):
            t.copy_(torch.where(active.view(-1, *[1] * (t.dim() - 1)), t, old))


def _one_correction(counts: torch.Tensor, betas: tuple[float, float]) -> bool:
    """Whether Adam's bias corrections 1 - beta^t are the same for every member's count t in float32."""
    return bool((counts == counts[0]).all()) or max(betas) ** float(counts.min()) < 2.0**-24


def _adam(params: list[torch.Tensor], grads: list[torch.Tensor], state: AdamState, capturable: bool = False) -> None:
    """torch's functional Adam. Eager: the optimizer's own kernel choice (fused); compiled: the single-tensor
    form, which dynamo traces (the fused one it skips); ``capturable``: bias corrections as tensor operations."""
    compiling = torch.compiler.is_compiling()
    with torch.no_grad():
        adam(
            params,
            grads,
            state.exp_avg,
            state.exp_avg_sq,
            [],
            state.step,
            foreach=False if compiling else None,
            capturable=capturable,
            fused=False if compiling else state.fused,
            amsgrad=False,
            beta1=state.betas[0],
            beta2=state.betas[1],
            lr=state.lr,
            weight_decay=state.weight_decay,
            eps=state.eps,
            maximize=False,
        )
