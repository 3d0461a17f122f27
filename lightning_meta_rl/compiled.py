"""``--model.compile=true``: the DDPG update of :func:`~lightning_meta_rl.student.ddpg_update` compiled with
``torch.compile`` (inductor), in one of two forms.

* **One graph** (:func:`_fused_update`), wherever the backward is plain autograd: the live student on the
  fast path (one process, nothing listening to Lightning's hooks, fast_path.py) and the look-ahead copy.
  The gradients come from ``torch.func.grad_and_value`` over ``functional_call`` rather than from
  ``loss.backward`` (a graph break), so the critic's loss, gradient and Adam step, the actor's, and the
  polyak averaging compile into one function. It writes no ``.grad``: nothing after the update reads one.
* **Pieces**, where something must see the backward (DDP's gradient averaging, a callback's
  ``on_before_backward``, ...): the critic loss (target computation included), the actor loss and the Adam
  steps are compiled separately, and the backwards stay where they are (``manual_backward``). The polyak
  averaging stays one eager foreach kernel (compiled on its own, it was slower).

Every compiled function takes the modules or tensors it works on as arguments; dynamo guards on their
types and tensor shapes, not on their identity, so the look-ahead student reuses the code compiled for
the live student (benchmarks/compile_speed.py counts the graphs). The look-ahead student is one persistent
copy whose parameters and Adam moments are overwritten with the student's at every iteration (1.2 ms
against 7.3 ms for the eager path's fresh deep copy, 64-64; the values it trains from are the same).

The Adam step is a compiled function of the optimizer's own state tensors (``exp_avg``, ``exp_avg_sq``,
``step``, in the layout ``torch.optim.Adam`` uses), not a compiled ``optimizer.step`` (which guards on its
optimizer object, and measured 0.168 ms against 0.120 ms for this function and 0.128 ms for the eager
fused Adam, 64-64 critic). The optimizers, their ``state_dict`` and so the checkpoints are those of the
eager path. Optimizers the function does not cover (weight decay, amsgrad, maximize, ...) and Lightning's
own optimizer step (taken when a callback listens to the optimizer hooks, see fast_path.py) run eagerly.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.func import functional_call, grad_and_value

from lightning_meta_rl.fast_path import CountedOptimizer
from lightning_meta_rl.losses import actor_loss, critic_loss, td_target
from lightning_meta_rl.networks import Actor, Critic
from lightning_meta_rl.student import Optimizer, Student, lookahead_copy
from lightning_meta_rl.types import Batch


def _critic_loss(
    critic: Critic,
    critic_target: Critic,
    actor_target: Actor,
    batch: Batch,
    gamma: float,
    critic_l2: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The critic's loss on the TD target (as in ddpg_update) and the batch's mean Q (detached)."""
    with torch.no_grad():
        next_q = critic_target(batch.next_obs, actor_target(batch.next_obs))
        target = td_target(batch.reward, next_q, batch.terminated, gamma)
    q = critic(batch.obs, batch.action)
    loss = critic_loss(q, target, critic.weight_matrices(), critic_l2)
    return loss, q.detach().mean()


def _actor_loss(actor: Actor, critic: Critic, obs: torch.Tensor) -> torch.Tensor:
    return actor_loss(critic(obs, actor(obs)))


def _adam(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: list[torch.Tensor],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """Adam (no weight decay, no amsgrad), in place, the same arithmetic as torch.optim.Adam's."""
    # no_grad inside, not as a decorator: every decorated function shares the decorator's code object,
    # and with it dynamo's cache (and recompile limit)
    with torch.no_grad():
        for p, g, m, v, step in zip(params, grads, exp_avgs, exp_avg_sqs, steps, strict=True):
            step += 1
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            bias1 = 1 - beta1**step
            bias2_sqrt = (1 - beta2**step).sqrt()
            p.sub_((lr / bias1) * m / (v.sqrt() / bias2_sqrt + eps))


def _polyak(student: Student, tau: float) -> None:
    """losses.polyak_update for both target networks, in one foreach call (the same arithmetic).

    Left eager: compiled, it took 0.082 ms against 0.048 ms for one 64-64 critic (guard checks cost more
    than the one foreach kernel they would replace)."""
    with torch.no_grad():
        torch._foreach_lerp_(
            [*student.actor_target.parameters(), *student.critic_target.parameters()],
            [*student.actor.parameters(), *student.critic.parameters()],
            tau,
        )


class _AdamState(NamedTuple):
    """One optimizer's per-parameter Adam tensors (the optimizer's own, updated in place) and settings."""

    exp_avgs: list[torch.Tensor]
    exp_avg_sqs: list[torch.Tensor]
    steps: list[torch.Tensor]
    lr: float
    beta1: float
    beta2: float
    eps: float


def _fused_update(
    student: Student,
    actor_params: dict[str, torch.Tensor],
    critic_params: dict[str, torch.Tensor],
    actor_adam: _AdamState,
    critic_adam: _AdamState,
    batch: Batch,
    gamma: float,
    tau: float,
    critic_l2: float,
    critic_weights: tuple[str, ...],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ddpg_update's arithmetic in one graph. ``*_params`` are detached views of the live parameters (by
    name), updated in place with the Adam state; returns the critic loss, the actor loss and the batch's
    mean Q."""

    def actor(params: dict[str, torch.Tensor], obs: torch.Tensor) -> torch.Tensor:
        return functional_call(student.actor, params, (obs,))

    def critic(params: dict[str, torch.Tensor], obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return functional_call(student.critic, params, (obs, action))

    with torch.no_grad():
        next_q = student.critic_target(batch.next_obs, student.actor_target(batch.next_obs))
        target = td_target(batch.reward, next_q, batch.terminated, gamma)

    def q_loss(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        q = critic(params, batch.obs, batch.action)
        return critic_loss(q, target, [params[n] for n in critic_weights], critic_l2), q.mean()

    critic_grads, (loss_q, q_mean) = grad_and_value(q_loss, has_aux=True)(critic_params)
    _adam(list(critic_params.values()), [critic_grads[n] for n in critic_params], *critic_adam)

    def pi_loss(params: dict[str, torch.Tensor]) -> torch.Tensor:  # the critic just updated, as in ddpg_update
        return actor_loss(critic(critic_params, batch.obs, actor(params, batch.obs)))

    actor_grads, loss_pi = grad_and_value(pi_loss)(actor_params)
    _adam(list(actor_params.values()), [actor_grads[n] for n in actor_params], *actor_adam)

    with torch.no_grad():
        torch._foreach_lerp_(
            [*student.actor_target.parameters(), *student.critic_target.parameters()],
            [*actor_params.values(), *critic_params.values()],
            tau,
        )
    return loss_q.detach(), loss_pi.detach(), q_mean.detach()


def _scalar_dtype() -> torch.dtype:
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class CompiledDDPG:
    """The compiled update and the persistent look-ahead copy, one per MetaRLModule (compiled lazily)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._fns: dict[str, Callable[..., Any]] | None = None
        self._clone: tuple[Student, torch.optim.Optimizer, torch.optim.Optimizer] | None = None
        self._layouts: weakref.WeakKeyDictionary[nn.Module, _Layout | None] = weakref.WeakKeyDictionary()

    # the compiled code and the look-ahead copy are rebuilt, not pickled or deep-copied
    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._reset()

    @property
    def fns(self) -> dict[str, Callable[..., Any]]:
        if self._fns is None:
            # static shapes: each network size gets its own graphs (a handful), never dynamic-shape kernels
            self._fns = {
                "fused": torch.compile(_fused_update, dynamic=False),
                "critic": torch.compile(_critic_loss, dynamic=False),
                "actor": torch.compile(_actor_loss, dynamic=False),
                "adam": torch.compile(_adam, dynamic=False),
            }
        return self._fns

    def update(
        self,
        student: Student,
        batch: Batch,
        actor_opt: Optimizer,
        critic_opt: Optimizer,
        *,
        gamma: float,
        tau: float,
        critic_l2: float,
        backward: Callable[[torch.Tensor], None],
    ) -> dict[str, torch.Tensor]:
        """What :func:`~lightning_meta_rl.student.ddpg_update` does, in the same order: in one compiled graph
        where the backward is plain autograd and both optimizers are the student's Adam, else in pieces."""
        fused = self._fused_inputs(student, actor_opt, critic_opt) if backward is torch.Tensor.backward else None
        if fused is not None:
            actor_params, critic_params, actor_adam, critic_adam, critic_l2_names = fused
            loss_q, loss_pi, q_mean = self.fns["fused"](
                student,
                actor_params,
                critic_params,
                actor_adam,
                critic_adam,
                batch,
                gamma,
                tau,
                critic_l2,
                critic_l2_names,
            )
            for opt in (critic_opt, actor_opt):  # counted in Lightning's step count, as self.step does
                if isinstance(opt, CountedOptimizer):
                    opt.lightning_optimizer._on_before_step()
                    opt.lightning_optimizer._on_after_step()
            return {"critic_loss": loss_q, "actor_loss": loss_pi, "q": q_mean}
        fns = self.fns
        loss_q, q_mean = fns["critic"](
            student.critic, student.critic_target, student.actor_target, batch, gamma, critic_l2
        )
        critic_opt.zero_grad()
        backward(loss_q)
        self.step(critic_opt)

        student.critic.requires_grad_(False)
        try:
            loss_pi = fns["actor"](student.actor, student.critic, batch.obs)
            actor_opt.zero_grad()
            backward(loss_pi)
            self.step(actor_opt)
        finally:
            student.critic.requires_grad_(True)

        _polyak(student, tau)
        return {"critic_loss": loss_q.detach(), "actor_loss": loss_pi.detach(), "q": q_mean}

    def _fused_inputs(
        self, student: Student, actor_opt: Optimizer, critic_opt: Optimizer
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], _AdamState, _AdamState, tuple[str, ...]] | None:
        """The one-graph update's inputs (actor and critic parameters, their Adam states, the names of the
        critic weights under L2), or None where it does not apply: each optimizer must be a plain Adam (raw,
        or counted by fast_path.py) with one group holding exactly its network's parameters."""
        found = []
        for opt, net in ((actor_opt, student.actor), (critic_opt, student.critic)):
            raw = opt.optimizer if isinstance(opt, CountedOptimizer) else opt
            if not isinstance(raw, torch.optim.Optimizer) or not _plain_adam(raw) or len(raw.param_groups) != 1:
                return None
            group = raw.param_groups[0]
            layout = self._layout(net)
            if layout is None or not layout.matches(net, group["params"]):
                # the module tree may have changed since the layout was built: build it again, once
                layout = self._layouts[net] = _Layout.of(net)
                if layout is None or not layout.matches(net, group["params"]):
                    return None
            live: list[torch.Tensor] = group["params"]  # the same tensors as ``params``, checked just above
            adam = self._adam_state(raw, group, live)
            found.append(({n: p.detach() for n, p in zip(layout.names, live, strict=True)}, adam, layout.l2_names))
        (actor_params, actor_adam, _), (critic_params, critic_adam, critic_l2_names) = found
        return actor_params, critic_params, actor_adam, critic_adam, critic_l2_names

    def _layout(self, net: nn.Module) -> _Layout | None:
        """``net``'s parameter layout, built on first use (walking the modules on every update cost about
        0.14 ms of a 1.7 ms update, 64-64) and rebuilt when it no longer matches the optimizer's parameters."""
        if net not in self._layouts:
            self._layouts[net] = _Layout.of(net)
        return self._layouts[net]

    # ------------------------------------------------------------------ optimizer steps
    def step(self, opt: Optimizer) -> None:
        """The compiled Adam step where it applies (counted in Lightning's step count), else ``opt.step()``."""
        if isinstance(opt, CountedOptimizer) and _plain_adam(opt.optimizer):
            opt.lightning_optimizer._on_before_step()
            self._adam_step(opt.optimizer)
            opt.lightning_optimizer._on_after_step()
        elif isinstance(opt, torch.optim.Optimizer) and _plain_adam(opt):
            self._adam_step(opt)
        else:
            opt.step()

    def _adam_step(self, opt: torch.optim.Optimizer) -> None:
        for group in opt.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            self.fns["adam"](params, [p.grad for p in params], *self._adam_state(opt, group, params))

    @classmethod
    def _adam_state(cls, opt: torch.optim.Optimizer, group: dict[str, Any], params: list[torch.Tensor]) -> _AdamState:
        """The group's Adam tensors for ``params`` (created on first use) and its settings."""
        states = [cls._state(opt, group, p) for p in params]
        beta1, beta2 = group["betas"]
        return _AdamState(
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["step"] for s in states],
            float(group["lr"]),
            float(beta1),
            float(beta2),
            float(group["eps"]),
        )

    @staticmethod
    def _state(opt: torch.optim.Optimizer, group: dict[str, Any], p: torch.Tensor) -> dict[str, torch.Tensor]:
        """The parameter's Adam state, created as torch.optim.Adam creates it on its first step."""
        state = opt.state[p]
        if not state:
            on_device = bool(group.get("fused") or group.get("capturable"))
            state["step"] = (
                torch.zeros((), dtype=_scalar_dtype(), device=p.device)
                if on_device
                else torch.tensor(0.0, dtype=_scalar_dtype())
            )
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    # ------------------------------------------------------------------ the look-ahead student
    def lookahead_copy(
        self, student: Student, actor_opt: torch.optim.Optimizer, critic_opt: torch.optim.Optimizer
    ) -> tuple[Student, torch.optim.Optimizer, torch.optim.Optimizer]:
        """What :func:`~lightning_meta_rl.student.lookahead_copy` returns, in one reused copy: the compiled
        functions see the same modules and tensors every iteration and are not compiled again."""
        if self._clone is None or not _same_layout(self._clone[0], student):
            self._clone = lookahead_copy(student, actor_opt, critic_opt)
            return self._clone
        clone, clone_actor_opt, clone_critic_opt = self._clone
        with torch.no_grad():
            for dst, src in zip(
                itertools.chain(clone.parameters(), clone.buffers()),
                itertools.chain(student.parameters(), student.buffers()),
                strict=True,
            ):
                dst.copy_(src)
        clone.requires_grad_(True)
        clone.actor_target.requires_grad_(False)
        clone.critic_target.requires_grad_(False)
        _copy_optimizer_state(clone_actor_opt, actor_opt)
        _copy_optimizer_state(clone_critic_opt, critic_opt)
        return self._clone


def _plain_adam(opt: torch.optim.Optimizer) -> bool:
    """An Adam whose every group the compiled step computes exactly (the student's, from make_adam)."""
    return type(opt) is torch.optim.Adam and all(
        not g.get("weight_decay")
        and not g.get("amsgrad")
        and not g.get("maximize")
        and not g.get("differentiable")
        and not g.get("capturable")
        and not torch.is_tensor(g.get("lr"))
        for g in opt.param_groups
    )


class _Layout(NamedTuple):
    """Where a network keeps its parameters: each parameter's name and slot (the submodule and attribute it is
    read from at every update, so a replaced parameter is seen), in ``named_parameters`` order, and the names of
    the weights the critic's L2 penalty applies to. A submodule replaced together with the optimizer's
    parameters makes ``matches`` fail, and the layout is built again; a submodule replaced behind the
    optimizer's back is not seen (eager training would not train it either)."""

    names: tuple[str, ...]
    slots: tuple[tuple[nn.Module | None, str], ...]  # None: the network itself (no reference kept to it)
    l2_names: tuple[str, ...]

    def params(self, net: nn.Module) -> list[torch.Tensor | None]:
        return [(net if module is None else module)._parameters.get(attr) for module, attr in self.slots]

    def matches(self, net: nn.Module, group_params: list[torch.Tensor]) -> bool:
        """Whether the tensors in the slots now are exactly the optimizer group's, in order."""
        params = self.params(net)
        return len(params) == len(group_params) and all(p is q for p, q in zip(params, group_params, strict=True))

    @classmethod
    def of(cls, net: nn.Module) -> _Layout | None:
        """None where the slots would not match ``named_parameters`` (a parameter shared by two modules)."""
        names, slots = [], []
        for prefix, module in net.named_modules():
            for attr, p in module._parameters.items():
                if p is not None:
                    names.append(f"{prefix}.{attr}" if prefix else attr)
                    slots.append((None if module is net else module, attr))
        if names != [n for n, _ in net.named_parameters()]:
            return None
        weights = {id(w) for w in net.weight_matrices()} if isinstance(net, Critic) else set()
        layout = cls(tuple(names), tuple(slots), ())
        l2 = tuple(n for n, p in zip(names, layout.params(net), strict=True) if id(p) in weights)
        return layout._replace(l2_names=l2)


def _same_layout(a: nn.Module, b: nn.Module) -> bool:
    ta = list(itertools.chain(a.parameters(), a.buffers()))
    tb = list(itertools.chain(b.parameters(), b.buffers()))
    return len(ta) == len(tb) and all(
        x.shape == y.shape and x.dtype == y.dtype and x.device == y.device for x, y in zip(ta, tb, strict=True)
    )


def _copy_optimizer_state(dst: torch.optim.Optimizer, src: torch.optim.Optimizer) -> None:
    """dst's hyperparameters and per-parameter state become src's, copied into dst's own tensors."""
    for g_dst, g_src in zip(dst.param_groups, src.param_groups, strict=True):
        g_dst.update({k: v for k, v in g_src.items() if k != "params"})
        for p_dst, p_src in zip(g_dst["params"], g_src["params"], strict=True):
            s_src = src.state.get(p_src)
            if not s_src:
                dst.state.pop(p_dst, None)
                continue
            s_dst = dst.state.get(p_dst)
            if s_dst and s_dst.keys() == s_src.keys() and all(_same_tensor_layout(s_dst[k], s_src[k]) for k in s_src):
                with torch.no_grad():
                    for k, v in s_src.items():
                        s_dst[k].copy_(v)
            else:
                dst.state[p_dst] = {k: v.clone() if torch.is_tensor(v) else v for k, v in s_src.items()}


def _same_tensor_layout(a: object, b: object) -> bool:
    return (
        isinstance(a, torch.Tensor)
        and isinstance(b, torch.Tensor)
        and a.shape == b.shape
        and a.dtype == b.dtype
        and a.device == b.device
    )
