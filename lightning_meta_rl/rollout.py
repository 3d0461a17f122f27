"""Collector: steps a policy in its environments for n steps or k whole episodes and returns a Rollout.

Collectors act; they never compute a loss.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from lightning_meta_rl.envs import EnvRunner
from lightning_meta_rl.errors import TrainingDiverged
from lightning_meta_rl.types import Rollout


class Action(NamedTuple):
    """A policy's output for a batch of one: raw (pre-clip) and executed action [1, act], teacher context."""

    raw: torch.Tensor
    executed: torch.Tensor
    context: torch.Tensor | None = None


class Policy(Protocol):
    """Anything that acts: noise around the student, a teacher, the student itself."""

    def act(self, obs: torch.Tensor) -> Action:
        """obs: [N, obs_dim], already normalized (one row per environment) -> actions [N, act_dim]."""
        ...

    def reset(self, index: int) -> None:
        """Environment ``index`` starts an episode (temporally correlated noise restarts there)."""
        ...


class Collector:
    """Owns one or more environments of the same id and the episodes in progress on them.

    With several environments every step of ``steps`` advances all of them with one batched policy
    call; the rollout then interleaves their transitions (env 0, env 1, ..., env 0, ...).
    """

    def __init__(self, runners: Sequence[EnvRunner], normalize: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if not runners:
            raise ValueError("a Collector needs at least one environment")
        self.runners = list(runners)
        self.normalize = normalize
        self._obs: list[np.ndarray | None] = [None] * len(self.runners)
        self._returns = [0.0] * len(self.runners)

    def state_dict(self) -> dict[str, Any]:
        return {
            "runners": [r.state_dict() for r in self.runners],
            "obs": [None if o is None else torch.from_numpy(o.copy()) for o in self._obs],
            "returns": list(self._returns),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["runners"]) != len(self.runners):
            raise ValueError(f"checkpoint has {len(state['runners'])} environments, this run {len(self.runners)}")
        for runner, s in zip(self.runners, state["runners"], strict=True):
            runner.load_state_dict(s)
        self._obs = [None if o is None else o.numpy().copy() for o in state["obs"]]
        self._returns = list(state["returns"])

    def steps(self, policy: Policy, n: int) -> Rollout:
        """At least n steps, a whole number of steps of every environment; episodes continue across calls."""
        rows, returns = self._loop(self.stepper(n), policy)
        return packed(rows, returns)  # outside inference mode: the rollout's tensors may enter autograd

    def episodes(self, policy: Policy, k: int, seed: int | None = None) -> Rollout:
        """k whole episodes from fresh resets (the first reset uses ``seed`` if given); one environment only."""
        rows, returns = self._loop(self.episode_stepper(k, seed), policy)
        return packed(rows, returns)  # outside inference mode: the rollout's tensors may enter autograd

    def episode_stepper(self, k: int, seed: int | None = None) -> Stepper:
        """The collection of ``episodes`` as a generator (see ``stepper``)."""
        if len(self.runners) != 1:
            raise ValueError("episodes() runs on a single environment")
        self._obs = [None]
        return self.stepper(None, k, seed)

    @torch.inference_mode()  # cheaper per call than no_grad; only numpy data leaves it
    def _loop(self, stepper: Stepper, policy: Policy) -> tuple[list[tuple[Any, ...]], list[float]]:
        # one collection driven by one policy: ``drive`` without its lockstep bookkeeping, which costs a few
        # microseconds a step; a TrainingDiverged raised by the stepper propagates
        try:
            obs, started = next(stepper)
        except StopIteration as done:
            return done.value
        while True:
            # (outside the try: the policy's own errors are not the end)
            action = act_after_resets(policy, self.normalize(torch.from_numpy(obs)), started)
            try:
                obs, started = stepper.send(action)
            except StopIteration as done:
                return done.value

    def stepper(self, max_steps: int | None, max_episodes: int | None = None, seed: int | None = None) -> Stepper:
        """The collection as a generator: it yields the raw observations of its environments ``[E, obs]`` (the
        driver normalizes them) and the environments that just started an episode, receives the policy's
        Action, and returns the collected rows and episode returns. ``steps`` drives it with one policy; a
        population drives several in lockstep, so that one batched call acts for all of them (and one
        operation normalizes all their observations)."""
        # Per-step data is kept as numpy rows and turned into tensors once at the end: a tensor op per
        # field per step costs more than the actor's forward pass on these small networks.
        # one tuple per step: (obs, raw action, action, context, reward, next obs, terminated, truncated)
        rows: list[tuple[Any, ...]] = []
        returns: list[float] = []
        runners, obs_now, running = self.runners, self._obs, self._returns
        while (max_steps is None or len(rows) < max_steps) and (max_episodes is None or len(returns) < max_episodes):
            started = []
            for i, runner in enumerate(runners):
                if obs_now[i] is None:
                    obs_now[i] = runner.reset(seed)
                    seed = None
                    running[i] = 0.0
                    started.append(i)
            obs = np.stack(obs_now) if len(obs_now) > 1 else obs_now[0][None]  # type: ignore[arg-type,index]
            out = yield obs, started
            actions, raw, context = _to_host(out)
            if not np.isfinite(actions).all():
                raise TrainingDiverged(
                    f"The policy produced a non-finite action {actions.tolist()} on environment "
                    f"'{runners[0].env_id}': training diverged. Lower the learning rates; the last checkpoint "
                    f"written before this point is intact."
                )
            for i, runner in enumerate(runners):
                r = runner.step(actions[i])
                rows.append(
                    (
                        obs[i],
                        raw[i],
                        actions[i],
                        None if context is None else context[i],
                        r.reward,
                        r.next_obs,
                        r.terminated,
                        r.truncated,
                    )
                )
                running[i] += r.reward
                if r.terminated or r.truncated:
                    returns.append(running[i])
                    obs_now[i] = None
                else:
                    obs_now[i] = r.next_obs
        return rows, returns


# a collection in progress: yields (raw observations, environments that started an episode), receives an Action
Stepper = Generator[tuple[np.ndarray, list[int]], Action, tuple[list[tuple[Any, ...]], list[float]]]


def act_after_resets(policy: Policy, obs: torch.Tensor, started: list[int]) -> Action:
    """The policy's action, once it is told which of its environments just started an episode."""
    for i in started:
        policy.reset(i)
    return policy.act(obs)


def drive(
    steppers: list[Stepper],
    act: Callable[[list[int], list[np.ndarray], list[list[int]]], list[Action]],
    threads: StepThreads | None = None,
) -> list[Any]:
    """Run collections in lockstep to their ends: at every step ``act`` gets the unfinished ones' indices, their
    raw observations and their environments that started an episode, and returns their Actions (in that order).
    Returns each one's rows and episode returns, or the TrainingDiverged that stopped it (the others go on).

    With ``threads``, the collections take their steps on those threads (see StepThreads)."""
    results: list[Any] = [None] * len(steppers)
    pending = {}
    for k, stepper in enumerate(steppers):
        try:
            pending[k] = next(stepper)
        except StopIteration as done:
            results[k] = done.value
    while pending:
        keys = list(pending)
        actions = act(keys, [pending[k][0] for k in keys], [pending[k][1] for k in keys])
        moves = list(zip([steppers[k] for k in keys], actions, strict=True))
        outcomes = _advance(moves) if threads is None or len(moves) == 1 else threads.advance(moves)
        for k, (going, value) in zip(keys, outcomes, strict=True):
            if going:
                pending[k] = value
            else:
                results[k] = value
                del pending[k]
    return results


class StepThreads:
    """``n`` threads on which collections driven in lockstep take their steps at once, a share of them on each:
    the calling thread steps the first share itself, ``n - 1`` workers the others.

    MuJoCo releases the GIL while it simulates, so the physics of several environments runs in parallel (the
    Python around it takes turns). Each collection touches only its own environments, so the results are
    those of stepping them in turn. The workers flush denormals if the thread that makes them does (the flag
    is per thread, and the physics must round as it would there)."""

    def __init__(self, n: int) -> None:
        if n < 2:
            raise ValueError(f"StepThreads needs at least 2 threads (1 is stepping in turn: no threads), got {n}")
        flushed = bool((np.array([1e-40], np.float32) * np.float32(2.0))[0] == 0)
        self.n = n
        self.pool = ThreadPoolExecutor(n - 1, "env-step", initializer=torch.set_flush_denormal, initargs=(flushed,))

    def advance(self, moves: list[tuple[Stepper, Action]]) -> list[tuple[bool, Any]]:
        size = -(-len(moves) // min(self.n, len(moves)))  # a task per collection would cost more than it saves
        shares = [moves[i : i + size] for i in range(0, len(moves), size)]
        others: list[Future[list[tuple[bool, Any]]]] = []
        try:
            others += [self.pool.submit(_advance, share) for share in shares[1:]]
            outcomes = _advance(shares[0])
        finally:  # never leave a worker stepping after this returns or raises (the environments may be closed)
            wait(others)
        return outcomes + [outcome for other in others for outcome in other.result()]

    def close(self) -> None:
        """Waits for any step still running (an interrupted ``advance``), then ends the workers."""
        self.pool.shutdown(wait=True)


def _advance(moves: list[tuple[Stepper, Action]]) -> list[tuple[bool, Any]]:
    """Each collection's next step: (True, what it yields next) or (False, its result or TrainingDiverged)."""
    outcomes: list[tuple[bool, Any]] = []
    for stepper, action in moves:
        try:
            outcomes.append((True, stepper.send(action)))
        except StopIteration as done:
            outcomes.append((False, done.value))
        except TrainingDiverged as exc:
            outcomes.append((False, exc))
    return outcomes


def packed(rows: list[tuple[Any, ...]], returns: list[float]) -> Rollout:
    """The per-step rows of a collection as one Rollout of stacked tensors."""
    obs_c, raw_c, act_c, ctx_c, rew_c, next_c, term_c, trunc_c = zip(*rows, strict=True)
    return Rollout(
        obs=torch.from_numpy(np.stack(obs_c)),
        action=torch.from_numpy(np.stack(act_c)),
        raw_action=torch.from_numpy(np.stack(raw_c)),
        reward=torch.tensor(rew_c, dtype=torch.float32),
        next_obs=torch.from_numpy(np.stack(next_c)),
        terminated=torch.tensor(term_c, dtype=torch.float32),
        truncated=torch.tensor(trunc_c, dtype=torch.float32),
        context=None if ctx_c[0] is None else torch.from_numpy(np.stack(ctx_c)),
        episode_returns=returns,
    )


def _to_host(out: Action) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Executed action, raw action and context as numpy arrays, with one device-to-host copy per step."""
    same = out.raw is out.executed
    if out.executed.is_cpu:  # views, no copy
        actions = out.executed.numpy()
        return actions, actions if same else out.raw.numpy(), None if out.context is None else out.context.numpy()
    parts = [out.executed] + ([] if same else [out.raw]) + ([] if out.context is None else [out.context])
    widths = [p.shape[-1] for p in parts]
    host = np.split(torch.cat(parts, dim=-1).cpu().numpy(), np.cumsum(widths)[:-1], axis=-1)
    return host[0], host[0] if same else host[1], None if out.context is None else host[-1]
