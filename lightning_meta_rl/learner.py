"""The student's DDPG update, written once, and the ways it is used.

:func:`ddpg_step` is the update (the student's step of Algorithm 1): the critic on the TD target, then the
actor on -Q(s, mu(s)) with the critic just updated, then polyak averaging of the targets. It works on a
:class:`~lightning_meta_rl.networks.Student` whose parameters may carry a leading member dimension, and on
Adam state held as tensors (:class:`AdamState`). Every use is a call of it:

- the live student: its own parameters and the state tensors of its ``torch.optim.Adam`` optimizers;
- the look-ahead student of the Meta arm: a copy of the student and of that Adam state (``K = 1``), or K
  copies stacked along the member dimension, each trained on its own D0 segment (``K > 1``);
- ``--model.compile=true``: ``torch.compile(ddpg_step)``. Only the way gradients are taken differs:
  ``torch.autograd.grad`` in eager mode (the cheapest there) and ``torch.func.grad_and_value`` when compiled
  (dynamo traces it, and not ``autograd.grad``); both differentiate the same losses.

Adam is torch's own functional ``torch.optim.adam.adam`` on the optimizers' state tensors (adam.py): the
optimizers, their ``state_dict`` and so the checkpoints stay torch's.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad_and_value

from lightning_meta_rl.adam import Active, AdamState, Layout, adam_step, masked
from lightning_meta_rl.losses import actor_loss, critic_loss, polyak_update, td_target
from lightning_meta_rl.members import kept_slices, layers_of, load_member_, member_layout, to_member
from lightning_meta_rl.networks import Actor, Student
from lightning_meta_rl.types import Batch, Rollout

Params = dict[str, torch.Tensor]
# a loss of a network (called as given: the module itself, or a functional view of it) and its parameters:
# returns the loss ([] or [M], one per member) and one auxiliary tensor
LossOf = Callable[[Callable[..., torch.Tensor], Params], tuple[torch.Tensor, torch.Tensor]]
Gradients = Callable[..., tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]]
Reduce = Callable[[list[torch.Tensor]], list[torch.Tensor]]
# a kept look-ahead copy: the student's copy, its actor's and critic's Adam state, the plain actors its members
# are returned as, and the maps of the student's Adam moments into the copy's layout (actor, critic)
Copy = tuple[Student, AdamState, AdamState, list[Actor], tuple[Layout | None, Layout | None]]


# ---------------------------------------------------------------------------- gradients, two ways
def autograd_gradients(loss_of: LossOf, net: nn.Module, params: Params) -> tuple[list[torch.Tensor], Any, Any]:
    """Gradients of the members' summed loss with respect to ``params`` (the module's own), by autograd. Only
    ``params`` get gradients: a network the loss also goes through (the critic, in the actor's loss) is not
    differentiated, whether its parameters require gradients or not."""
    loss, aux = loss_of(net, params)
    return list(torch.autograd.grad(loss.sum(), list(params.values()))), loss.detach(), aux


def functional_gradients(loss_of: LossOf, net: nn.Module, params: Params) -> tuple[list[torch.Tensor], Any, Any]:
    """The same gradients by ``torch.func.grad_and_value`` over ``functional_call``: what ``torch.compile``
    traces into one graph (it also works under ``torch.no_grad``, where the compiled update runs)."""

    def total(p: Params) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        loss, aux = loss_of(lambda *x: functional_call(net, p, x), p)
        return loss.sum(), (loss, aux)

    grads, (_, (loss, aux)) = grad_and_value(total, has_aux=True)({n: t.detach() for n, t in params.items()})
    return [grads[n] for n in params], loss.detach(), aux


# ---------------------------------------------------------------------------- the update
def ddpg_step(
    student: Student,
    actor_adam: AdamState,
    critic_adam: AdamState,
    batch: Batch,
    gamma: float,
    tau: float,
    critic_l2: float,
    gradients: Gradients = autograd_gradients,
    reduce: Reduce | None = None,
    active: Active = None,
) -> dict[str, torch.Tensor]:
    """One DDPG step, in place on ``student`` and the Adam states. With stacked members, every field of
    ``batch`` is ``[M, B, ...]`` and member m learns from its own minibatch. ``reduce`` averages gradients
    across processes (DDP) before each Adam step. ``active``: the members that step (None: all; their indices,
    or a [M] bool tensor, the form a compiled update takes); the others' parameters, targets and Adam state
    stay as they were (their rows of the batch are ignored). Returns
    detached metrics, one per member (``[M]`` or ``[]``)."""
    with torch.no_grad():
        next_q = student.critic_target(batch.next_obs, student.actor_target(batch.next_obs))
        target = td_target(batch.reward, next_q, batch.terminated, gamma)

    def q_loss(critic: Callable[..., torch.Tensor], p: Params) -> tuple[torch.Tensor, torch.Tensor]:
        q = critic(batch.obs, batch.action)
        return critic_loss(q, target, [p[n] for n in student.critic_l2_names], critic_l2), q.detach().mean(-1)

    nets = student.params()
    grads, loss_q, q_mean = gradients(q_loss, student.critic, nets.critic)
    adam_step(list(nets.critic.values()), reduce(grads) if reduce else grads, critic_adam, active)

    def pi_loss(actor: Callable[..., torch.Tensor], p: Params) -> tuple[torch.Tensor, torch.Tensor]:
        loss = actor_loss(student.critic(batch.obs, actor(batch.obs)))  # the critic just updated
        return loss, loss

    grads, loss_pi, _ = gradients(pi_loss, student.actor, nets.actor)
    adam_step(list(nets.actor.values()), reduce(grads) if reduce else grads, actor_adam, active)

    if isinstance(active, torch.Tensor):  # a compiled masked step: every member's targets, then put back
        with masked(active, [*nets.actor_target, *nets.critic_target]):
            polyak_update(nets.actor_target, list(nets.actor.values()), tau)
            polyak_update(nets.critic_target, list(nets.critic.values()), tau)
    else:
        polyak_update(nets.actor_target, list(nets.actor.values()), tau, active)
        polyak_update(nets.critic_target, list(nets.critic.values()), tau, active)
    return {"critic_loss": loss_q, "actor_loss": loss_pi, "q": q_mean}


# guards that tell one call of the compiled update from another: what the graph depends on
_KEPT_GUARDS = frozenset(
    {"TENSOR_MATCH", "CONSTANT_MATCH", "EQUALS_MATCH", "ID_MATCH", "TYPE_MATCH", "CLOSURE_MATCH", "SEQUENCE_LENGTH"}
    | {"GRAD_MODE", "GLOBAL_STATE", "DEFAULT_DEVICE", "TORCH_FUNCTION_STATE", "FUNCTORCH_STACK_MATCH"}
)


def update_guards(entries: list[Any]) -> list[bool]:
    """The guards the compiled update checks before each call (``torch.compile``'s ``guard_filter_fn``).

    Kept: every tensor's shape, dtype, device and strides (parameters, targets, Adam state, batch), the values
    of the update's arguments (gamma, tau, the L2 weight, Adam's settings, which gradient and reduce functions)
    and the global autograd state. Skipped: the ~1,000 guards on the networks' module internals (hook and
    attribute dictionaries, types: the student's modules are built once and never changed, and none has
    training-mode behaviour), on module-level globals (this package's functions) and on inputs aliasing each
    other (parameters, optimizer state and batches are distinct tensors by construction). A change of network
    size, dtype, device, hyperparameter or member count still compiles a new graph. The skipped guards cost a
    large share of a small update's time on CPU (benchmarks/update_speed.py measures it)."""
    return [
        e.guard_type == "TENSOR_MATCH"
        or (e.guard_type in _KEPT_GUARDS and not e.is_global and not e.orig_guard.source.is_unspecialized_nn_module())
        for e in entries
    ]


class Learner:
    """Runs :func:`ddpg_step`: eager or compiled, on the live student or on look-ahead copies of it.

    The look-ahead copies (and their Adam states) are kept between iterations and copied into, so a compiled
    step sees the same tensors every iteration and is not compiled again.
    """

    def __init__(self, gamma: float, tau: float, critic_l2: float, compile: bool = False) -> None:
        self.gamma, self.tau, self.critic_l2 = gamma, tau, critic_l2
        self.compiled = compile
        self._reset()

    def _reset(self) -> None:
        # static shapes: each network size gets its own graph, never dynamic-shape kernels
        options: dict[str, str | int | bool | Callable[..., Any]] = {"guard_filter_fn": update_guards}
        self._step = torch.compile(ddpg_step, dynamic=False, options=options) if self.compiled else ddpg_step
        self._copies: dict[int | None, Copy] = {}

    # compiled code and look-ahead copies are rebuilt, never pickled or deep-copied with the module
    def __getstate__(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "tau": self.tau, "critic_l2": self.critic_l2, "compiled": self.compiled}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def step(
        self,
        student: Student,
        actor_adam: AdamState,
        critic_adam: AdamState,
        batch: Batch,
        reduce: Reduce | None,
        active: list[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        args = (student, actor_adam, critic_adam, batch, self.gamma, self.tau, self.critic_l2)
        if not self.compiled or (active is not None and actor_adam.step[0].dim() == 0):
            return ddpg_step(*args, autograd_gradients, reduce, active)
        if active is not None:  # compiled, the members that step are a mask: one graph for every set of them
            mask = torch.zeros(len(actor_adam.step[0]), dtype=torch.bool)
            mask[active] = True
            active_mask: torch.Tensor | None = mask.to(actor_adam.step[0].device)
        else:
            active_mask = None
        with torch.no_grad():  # torch.func takes its gradients anyway; no outer graph is built
            return self._step(*args, functional_gradients, reduce, active_mask)

    def update(
        self,
        student: Student,
        actor_opt: torch.optim.Optimizer,
        critic_opt: torch.optim.Optimizer,
        batches: Iterable[Batch],
        reduce: Reduce | None = None,
    ) -> dict[str, float]:
        """The live student's updates, one per batch, with its optimizers' Adam state; mean metrics."""
        return mean_metrics(self.steps(student, actor_opt, critic_opt, batches, reduce))

    def steps(
        self,
        student: Student,
        actor_opt: torch.optim.Optimizer,
        critic_opt: torch.optim.Optimizer,
        batches: Iterable[Batch],
        reduce: Reduce | None = None,
        actives: Iterable[list[int] | None] | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """The live student's updates, one per batch; each update's metrics, per member. ``actives``: the
        members that step in each update (None: all, every time)."""
        actor_adam, critic_adam = AdamState.of(actor_opt), AdamState.of(critic_opt)
        masks = itertools.repeat(None) if actives is None else actives
        with kept_slices():
            return [
                self.step(student, actor_adam, critic_adam, b, reduce, m) for b, m in zip(batches, masks, strict=False)
            ]

    def lookahead_on(
        self,
        student: Student,
        actor_opt: torch.optim.Optimizer,
        critic_opt: torch.optim.Optimizer,
        segments: list[Rollout],
        sample: Callable[[Rollout], Batch],
        updates: int,
        inplace: bool = False,
        reduce: Reduce | None = None,
    ) -> tuple[list[Actor], dict[str, float]]:
        """pi'_k = DDPG(pi, D0_k): ``updates`` updates on minibatches ``sample``d from segment k only. One copy of
        the student (the paper's), K stacked copies for K segments, or (``inplace``) the live student itself,
        whose updates alone are averaged across processes (``reduce``)."""
        if inplace:
            batches = (sample(segments[0]) for _ in range(updates))
            return [student.actor], self.update(student, actor_opt, critic_opt, batches, reduce)
        if len(segments) == 1:
            batches = (sample(segments[0]) for _ in range(updates))
            return self.lookahead(student, actor_opt, critic_opt, None, batches)
        stacked = (Batch.stack([sample(s) for s in segments]) for _ in range(updates))
        return self.lookahead(student, actor_opt, critic_opt, len(segments), stacked)

    def lookahead(
        self,
        student: Student,
        actor_opt: torch.optim.Optimizer,
        critic_opt: torch.optim.Optimizer,
        members: int | None,
        batches: Iterable[Batch],
        rows: list[int] | None = None,
    ) -> tuple[list[Actor], dict[str, float]]:
        """Copies of the student with its Adam state (``members=None``: one plain copy; else that many stacked,
        each batch then ``[members, B, ...]``), trained on ``batches``; returns each copy's actor. ``rows``: the
        stacked rows the metrics average over (None: all)."""
        live_actor, live_critic = AdamState.of(actor_opt), AdamState.of(critic_opt)
        clone, actor_adam, critic_adam, actors, layouts = self._copy(student, members, live_actor, live_critic)
        clone.copy_from(student)
        actor_adam = actor_adam.copy_from(live_actor, layouts[0])
        critic_adam = critic_adam.copy_from(live_critic, layouts[1])
        with kept_slices():
            history = [self.step(clone, actor_adam, critic_adam, b, None) for b in batches]
        metrics = mean_metrics(history if rows is None else [{k: v[rows] for k, v in m.items()} for m in history])
        if members is None or student.members is not None:  # one copy, or copies of a population: stacked
            return [clone.actor], metrics
        for k, actor in enumerate(actors):
            load_member_(actor, clone.actor, k)
        return actors, metrics

    def _copy(self, student: Student, members: int | None, actor_adam: AdamState, critic_adam: AdamState) -> Copy:
        """The kept copy for ``members`` (made on first use, or again when the student's layout changed), with
        the maps of the student's Adam moments into the copy's layout (None: the same layout)."""
        kept = self._copies.get(members)
        if kept is None or not _same_layout(kept[0], student, members):
            clone = copy.deepcopy(student) if members is None else student.stacked(members)
            grouped = student.members is not None  # a population's: copies of each member, grouped by member
            actors = [] if grouped else [copy.deepcopy(student.actor) for _ in range(members or 0)]
            into = members is not None and not grouped  # an ordinary student's copies, stacked
            layouts = (member_layout(student.actor), member_layout(student.critic)) if into else (None, None)
            actor_copy = actor_adam.repeat(members, grouped, layouts[0])
            kept = (clone, actor_copy, critic_adam.repeat(members, grouped, layouts[1]), actors, layouts)
            self._copies[members] = kept
        return kept


def _same_layout(clone: Student, student: Student, members: int | None) -> bool:
    def shape(layer: nn.Module, name: str, s: torch.Tensor) -> tuple[int, ...]:  # the copy's tensor of s
        if members is None:
            return tuple(s.shape)
        if student.members is not None:
            return (s.shape[0] * members, *s.shape[1:])
        return (members, *to_member(layer, name, s).shape)

    if sum(1 for _ in clone.parameters()) != sum(1 for _ in student.parameters()):
        return False
    pairs = zip(layers_of(student), clone.parameters(), student.parameters(), strict=True)
    return all(
        c.shape == shape(layer, name, s) and c.dtype == s.dtype and c.device == s.device
        for (layer, name), c, s in pairs
    )


def mean_metrics(history: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Each metric's mean over updates (and members): one reduction per metric, not one addition per update."""
    return {k: float(torch.stack([m[k] for m in history]).mean()) for k in history[0]} if history else {}


def member_metrics(history: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Each metric's mean over updates, per member (``[M]``)."""
    return {k: torch.stack([m[k] for m in history]).mean(0) for k in history[0]} if history else {}
