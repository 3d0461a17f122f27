"""The one place that knows gymnasium: making, checking and seeding environments, and stepping them."""

from __future__ import annotations

import difflib
import math
import pickle
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from lightning_meta_rl import sparse
from lightning_meta_rl.errors import EnvironmentFailed, EnvironmentNotSupported, TrainingDiverged, UserError

sparse.register()  # the project's own task (lightning_meta_rl/SparseMountainCar-v0), usable by id like any other

MAX_ACTION_HALF_RANGE = 1e3  # wider action bounds are refused: the policy and its noise scale with them
SUPPORTED = "a gymnasium environment with a flat Box observation space and a Box action space"


@dataclass(frozen=True)
class EnvSpec:
    """What the learner needs to know about an environment."""

    env_id: str
    obs_dim: int
    act_dim: int
    action_low: list[float]
    action_high: list[float]
    max_episode_steps: int | None


def make_env(env_id: str, env_kwargs: dict[str, Any] | None = None, check: bool = True) -> gym.Env:
    """gymnasium.make with a clear error for ids that do not exist (``check``: gymnasium's API checker)."""
    try:
        return gym.make(env_id, disable_env_checker=not check, **(env_kwargs or {}))
    except gym.error.DependencyNotInstalled as exc:
        raise EnvironmentNotSupported(f"Environment '{env_id}' needs a package that is not installed: {exc}") from None
    except gym.error.Error as exc:
        known = list(gym.registry.keys())
        close = difflib.get_close_matches(env_id, known, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise EnvironmentNotSupported(
            f"Unknown environment id '{env_id}': gymnasium says: {exc}.{hint} "
            f"Any registered id works if it is {SUPPORTED}."
        ) from None
    except ImportError as exc:
        raise EnvironmentNotSupported(f"Environment '{env_id}' needs a package that is not installed: {exc}.") from None


def check_spaces(env_id: str, env: gym.Env) -> EnvSpec:
    """Reject spaces the method cannot handle; return the environment's facts."""
    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(act_space, gym.spaces.Box):
        raise EnvironmentNotSupported(
            f"Environment '{env_id}' has a {type(act_space).__name__} action space; DDPG and the meta-teacher "
            f"need continuous actions. Supported: {SUPPORTED}."
        )
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        shape = getattr(obs_space, "shape", None)
        raise EnvironmentNotSupported(
            f"Environment '{env_id}' has a {type(obs_space).__name__} observation space of shape {shape}; "
            f"only flat vectors are supported (no images, dicts or tuples). Supported: {SUPPORTED}."
        )
    if len(act_space.shape) != 1:
        raise EnvironmentNotSupported(
            f"Environment '{env_id}' has actions of shape {act_space.shape}; only flat action vectors are supported."
        )
    low, high = act_space.low.astype(np.float64), act_space.high.astype(np.float64)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise EnvironmentNotSupported(
            f"Environment '{env_id}' has unbounded actions (low={low}, high={high}); a tanh policy needs finite bounds."
        )
    half_range = float(np.max(high - low)) / 2
    if half_range > MAX_ACTION_HALF_RANGE:
        raise EnvironmentNotSupported(
            f"Environment '{env_id}' has actions in [{low.min():g}, {high.max():g}]: the policy's tanh output and the "
            f"exploration noise are scaled to the bounds, so a noise of 0.2 would move an action by "
            f"{0.2 * half_range:g}. Bounds this wide mean an unbounded action in practice; rescale them to the "
            f"range the task uses (gymnasium.wrappers.RescaleAction, registered under your own id)."
        )
    limit = env.spec.max_episode_steps if env.spec is not None else None
    if limit is None:
        raise EnvironmentNotSupported(
            f"Environment '{env_id}' has no time limit; D1, R(pi) and evaluation run whole episodes and could "
            f"run forever. Register it with max_episode_steps, or pass one, e.g. "
            f"--data.env_kwargs='{{max_episode_steps: 1000}}'."
        )
    return EnvSpec(env_id, int(obs_space.shape[0]), int(act_space.shape[0]), low.tolist(), high.tolist(), limit)


def probe(env_id: str, env_kwargs: dict[str, Any] | None = None) -> EnvSpec:
    """Make the environment once, check it and return its facts (used at start-up, before training)."""
    env = make_env(env_id, env_kwargs)
    try:
        return check_spaces(env_id, env)
    finally:
        env.close()


def env_seed(seed: int, rank: int, role: int, index: int = 0) -> int:
    """The one seeding formula: env ``index`` of ``role`` on rank r gets seed + 10_000 * r + 1_000 * role + index.

    Roles keep the training (teacher / noise), student-rollout and reporting-evaluation environments disjoint.
    """
    return seed + 10_000 * rank + 1_000 * role + index


ROLE_TRAIN, ROLE_ROLLOUT, ROLE_EVAL = 0, 1, 2


class StepResult:
    """One environment step, with observations as float32 arrays."""

    __slots__ = ("next_obs", "reward", "terminated", "truncated")

    def __init__(self, next_obs: np.ndarray, reward: float, terminated: bool, truncated: bool) -> None:
        self.next_obs, self.reward, self.terminated, self.truncated = next_obs, reward, terminated, truncated


class EnvRunner:
    """A single gymnasium env: seeded once, reset by hand (no autoreset), NaN/inf checked on every step."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any] | None, seed: int) -> None:
        self.env_id = env_id
        self.env = make_env(env_id, env_kwargs, check=False)  # probe() already ran the checker once
        self.env.action_space.seed(seed)
        self._seed: int | None = seed
        self.steps_taken = 0

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start an episode; the first reset uses the construction seed, later ones continue its RNG."""
        if seed is None:
            seed, self._seed = self._seed, None
        try:
            obs, _ = self.env.reset(seed=seed)
        except UserError:
            raise
        except Exception as exc:
            raise self._raised(exc, "reset") from exc
        return self._checked(np.asarray(obs, dtype=np.float32), "reset")

    def step(self, action: np.ndarray) -> StepResult:
        try:
            next_obs, reward, terminated, truncated, _ = self.env.step(action)
        except UserError:
            raise
        except Exception as exc:
            raise self._raised(exc, "step") from exc
        self.steps_taken += 1
        obs, reward = np.asarray(next_obs, dtype=np.float32), float(reward)
        if not (math.isfinite(reward) and np.isfinite(obs).all()):
            self._fail(f"reward {reward}" if not math.isfinite(reward) else f"observation {obs}", "step")
        return StepResult(obs, reward, bool(terminated), bool(truncated))

    def _checked(self, obs: np.ndarray, where: str) -> np.ndarray:
        if not np.isfinite(obs).all():
            self._fail(f"observation {obs}", where)
        return obs

    def _fail(self, what: str, where: str) -> None:
        when = "on reset" if where == "reset" else f"on step {self.steps_taken} of this environment instance"
        raise TrainingDiverged(
            f"Environment '{self.env_id}' returned a non-finite {what} {when}. Training stopped; the last "
            f"checkpoint written before this point is intact."
        )

    def _raised(self, exc: Exception, call: str) -> EnvironmentFailed:
        """The environment's own exception, in words: which environment, which call, at which step."""
        text = str(exc).strip() or "(no message)"
        when = f"on step {self.steps_taken + 1}" if call == "step" else f"after {self.steps_taken} steps"
        return EnvironmentFailed(
            f"Environment '{self.env_id}' raised {type(exc).__name__} in {call}() {when} of this environment "
            f"instance: {text}. Training stopped; the last checkpoint written before this point is intact "
            f"(resume with --ckpt_path last once the environment is fixed). --traceback shows the full traceback."
        )

    def close(self) -> None:
        self.env.close()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this environment exactly where it is (for checkpoints).

        MuJoCo environments store their full integration state; others are pickled. Wrapper counters
        (time limit) and the environment's random generator are stored either way.
        """
        base = self.env.unwrapped
        state: dict[str, Any] = {
            "steps_taken": self.steps_taken,
            "seed": self._seed,
            "wrappers": _wrapper_state(self.env),
        }
        state["np_random"] = base.np_random.bit_generator.state
        physics = _mujoco_state(base)
        # tensors, not numpy arrays or bytes: checkpoints must load with torch.load(weights_only=True)
        if physics is not None:
            state["mujoco"] = torch.from_numpy(physics)
        else:
            state["pickle"] = torch.frombuffer(bytearray(pickle.dumps(base)), dtype=torch.uint8)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps_taken, self._seed = state["steps_taken"], state["seed"]
        if "pickle" in state:
            _replace_base(self.env, pickle.loads(state["pickle"].numpy().tobytes()))
        base = self.env.unwrapped
        base.np_random.bit_generator.state = state["np_random"]
        if "mujoco" in state:
            _set_mujoco_state(base, state["mujoco"].numpy())
        _load_wrapper_state(self.env, state["wrappers"])


_WRAPPER_FIELDS = ("_elapsed_steps", "_has_reset")  # TimeLimit, OrderEnforcing


def _wrappers(env: gym.Env) -> list[gym.Wrapper]:
    chain = []
    while isinstance(env, gym.Wrapper):
        chain.append(env)
        env = env.env
    return chain


def _wrapper_state(env: gym.Env) -> list[dict[str, Any]]:
    return [{f: getattr(w, f) for f in _WRAPPER_FIELDS if hasattr(w, f)} for w in _wrappers(env)]


def _load_wrapper_state(env: gym.Env, state: list[dict[str, Any]]) -> None:
    for w, fields in zip(_wrappers(env), state, strict=True):
        for name, value in fields.items():
            setattr(w, name, value)


def _replace_base(env: gym.Env, base: gym.Env) -> None:
    chain = _wrappers(env)
    if chain:
        chain[-1].env = base


def _mujoco_state(base: Any) -> np.ndarray | None:
    model, data = getattr(base, "model", None), getattr(base, "data", None)
    if model is None or data is None or not type(data).__module__.startswith("mujoco"):
        return None
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    out = np.empty(mujoco.mj_stateSize(model, spec))
    mujoco.mj_getState(model, data, out, spec)
    return out


def _set_mujoco_state(base: Any, physics: np.ndarray) -> None:
    import mujoco

    mujoco.mj_setState(base.model, base.data, physics, mujoco.mjtState.mjSTATE_INTEGRATION)
    mujoco.mj_forward(base.model, base.data)
