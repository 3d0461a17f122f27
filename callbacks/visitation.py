"""State-visitation density of teacher data (D0) and student data, early and late in training.

The slides' figure: density contours of visited states, first row early, second row late. Here the
two columns are the exploration data D0 (teacher, or noise in the DDPG arm) and the student's own
deterministic trajectories (its R(pi) rollouts and evaluation episodes).
"""

from __future__ import annotations

import os
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from matplotlib.figure import Figure

from callbacks.media import log_image
from lightning_meta_rl.module import MetaRLModule

WINDOWS = ("early", "late")
SOURCES = ("teacher", "student")


def project(states: np.ndarray, how: str, dims: tuple[int, int], basis: np.ndarray | None) -> np.ndarray:
    """[N, obs_dim] -> [N, 2]: Pendulum's (angle, angular velocity), two chosen dims, or a PCA plane."""
    if how == "pendulum":
        return np.stack([np.arctan2(states[:, 1], states[:, 0]), states[:, 2]], axis=1)
    if how == "pca":
        assert basis is not None
        return (states - basis[0]) @ basis[1:].T
    return states[:, list(dims)]


def fit_pca(states: np.ndarray) -> np.ndarray:
    """Mean and the two leading principal directions of ``states``, stacked as a [3, obs_dim] array."""
    mean = states.mean(0)
    _, _, vt = np.linalg.svd(states - mean, full_matrices=False)
    return np.vstack([mean, vt[:2]])


def explained_variance(states: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """The share of ``states``' total variance along each of the basis's two directions. -> [2]."""
    centred = states - basis[0]
    total = float((centred**2).sum())
    return ((centred @ basis[1:].T) ** 2).sum(0) / max(total, 1e-12)


def density(points: np.ndarray, extent: tuple[float, float, float, float], bins: int) -> np.ndarray:
    """Histogram density on a grid, smoothed with a small Gaussian kernel. -> [bins, bins]."""
    hist, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=bins, range=[extent[:2], extent[2:]], density=True)
    k = np.exp(-0.5 * (np.arange(-3, 4) / 1.5) ** 2)
    k /= k.sum()
    hist = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), 0, hist)
    hist = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), 1, hist)
    return hist.T


def draw_visitation(
    points: dict[tuple[str, str], np.ndarray],
    ranges: dict[str, list[int]],
    axis_labels: tuple[str, str],
    title: str,
    bins: int,
) -> Figure:
    """The 2x2 figure (rows: windows, columns: sources). Every panel is drawn on the same grid with the
    same contour levels and color scale, so a color means the same density in all four; one colorbar."""
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    allp = np.concatenate(list(points.values()))
    lo, hi = np.percentile(allp, 0.5, axis=0), np.percentile(allp, 99.5, axis=0)
    pad = 0.05 * (hi - lo + 1e-6)
    extent = (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])
    grids = {k: density(p, extent, bins) for k, p in points.items() if len(p) > 1}
    top = max((float(g.max()) for g in grids.values()), default=0.0)
    vmax = top if top > 0 else 1.0
    norm = Normalize(0.0, vmax)
    levels = np.linspace(0.0, vmax, 13)
    cmap = "Blues"
    xs, ys = np.linspace(extent[0], extent[1], bins), np.linspace(extent[2], extent[3], bins)
    fig, axes = plt.subplots(2, 2, figsize=(8, 7), sharex=True, sharey=True, layout="constrained")
    mappable: Any = ScalarMappable(norm=norm, cmap=cmap)  # replaced by a drawn panel's contours, if any
    for i, w in enumerate(WINDOWS):
        span = ranges.get(w)
        when = f"env steps {span[0]:,}-{span[1]:,}" if span else "no iterations"
        for j, s in enumerate(SOURCES):
            ax = axes[i, j]
            if (w, s) in grids:
                mappable = ax.contourf(xs, ys, grids[(w, s)], levels=levels, cmap=cmap, norm=norm)
            else:
                ax.text(0.5, 0.5, "no states in this window", transform=ax.transAxes, ha="center", color="0.4")
            n = len(points.get((w, s), ()))
            ax.set_title(f"{w} ({when})\n{'D0 (exploration)' if s == 'teacher' else 'student'}, n={n}", fontsize=10)
            if i == 1:
                ax.set_xlabel(axis_labels[0])
            if j == 0:
                ax.set_ylabel(axis_labels[1])
    bar = fig.colorbar(mappable, ax=axes, shrink=0.8, format="%.3g")
    bar.set_label("state density per unit area (one scale for all panels)")
    fig.suptitle(f"state visitation, {title}")
    return fig


class StateVisitation(L.Callback):
    """Collects teacher and student states in the first and last ``window`` fraction of the budget and
    saves ``<run_dir>/<filename>`` (PNG, also logged to W&B) and the projected points as ``.npz``.

    Args:
        projection: ``pendulum`` (angle, velocity), ``dims`` (the two ``dims``), ``pca`` (a plane fitted
            once, on the early window's states), or ``auto``: ``pendulum`` for Pendulum, else ``pca``.
        dims: the two observation dimensions for ``projection=dims``.
        window: fraction of the budget after warm-up in each of the early and late windows.
        max_points: most states kept per (window, source), the newest replacing a random older one.
        bins: grid size of the density estimate.
    """

    def __init__(
        self,
        projection: Literal["auto", "pendulum", "dims", "pca"] = "auto",
        dims: tuple[int, int] = (0, 1),
        window: float = 0.2,
        max_points: int = 20_000,
        bins: int = 60,
        filename: str = "visitation.png",
    ) -> None:
        if not 0 < window <= 0.5:
            raise ValueError(f"window must be in (0, 0.5], got {window}")
        self.projection, self.dims, self.window = projection, dims, window
        self.max_points, self.bins, self.filename = max_points, bins, filename
        self.states: dict[tuple[str, str], list[np.ndarray]] = {(w, s): [] for w in WINDOWS for s in SOURCES}
        self.ranges: dict[str, list[int]] = {}  # window -> [first, last] env step of the iterations in it
        self._rng = np.random.default_rng(0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not trainer.is_global_zero or not isinstance(pl_module, MetaRLModule) or pl_module.last_iteration is None:
            return
        rec = pl_module.last_iteration
        dm = trainer.datamodule  # type: ignore[attr-defined]
        # an iteration belongs to a window by where it started, as a fraction of the budget after warm-up;
        # the first iteration is always early and the last always late, so even very short runs get both rows
        start = (rec.start_steps - dm.warmup_steps) / max(1, dm.total_env_steps - dm.warmup_steps)
        first = not self.states[("early", "teacher")]
        last = rec.env_steps >= dm.total_env_steps
        windows = [
            w
            for w, inside in (("early", start < self.window or first), ("late", start >= 1 - self.window or last))
            if inside
        ]
        student = [r.obs for r in (rec.student, rec.evaluation) if r is not None and len(r)]
        for w in windows:
            span = self.ranges.get(w, [rec.start_steps, rec.env_steps])
            self.ranges[w] = [min(span[0], rec.start_steps), max(span[1], rec.env_steps)]
            self._keep(w, "teacher", rec.d0.obs)
            for s in student:
                self._keep(w, "student", s)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            f"{w}/{s}": [torch.from_numpy(c) for c in chunks] for (w, s), chunks in self.states.items()
        }
        state["ranges"] = dict(self.ranges)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ranges = {w: list(span) for w, span in state.get("ranges", {}).items()}  # absent in older checkpoints
        for key, chunks in state.items():
            if "/" in key:
                w, s = key.split("/")
                self.states[(w, s)] = [c.numpy() for c in chunks]

    def _keep(self, window: str, source: str, obs: torch.Tensor) -> None:
        chunks = self.states[(window, source)]
        chunks.append(obs.numpy().copy())
        total = sum(len(c) for c in chunks)
        if total > self.max_points:  # thin uniformly so memory stays bounded on long runs
            merged = np.concatenate(chunks)
            self.states[(window, source)] = [merged[self._rng.choice(total, self.max_points, replace=False)]]

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not isinstance(pl_module, MetaRLModule):
            return
        data = {k: np.concatenate(v) for k, v in self.states.items() if v}
        if not data:
            return
        import matplotlib.pyplot as plt

        env_id = str(trainer.datamodule.env_id)  # type: ignore[attr-defined]
        how = self.projection
        if how == "auto":
            how = "pendulum" if env_id.startswith("Pendulum") else "pca"
        basis = None
        labels = {"pendulum": ("angle (rad)", "angular velocity")}.get(
            how, (f"obs[{self.dims[0]}]", f"obs[{self.dims[1]}]")
        )
        if how == "pca":
            early = np.concatenate([v for (w, _), v in data.items() if w == "early"] or list(data.values()))
            basis = fit_pca(early)
            share = explained_variance(early, basis)
            labels = (f"PC1 ({100 * share[0]:.3g}% of variance)", f"PC2 ({100 * share[1]:.3g}% of variance)")
        points = {k: project(v, how, self.dims, basis) for k, v in data.items()}
        path = os.path.join(trainer.default_root_dir, self.filename)
        title = f"{env_id}: {pl_module.teacher_cfg.kind}"
        if how == "pca":
            title += "\n(PCA plane and its variance shares from the early window's states)"
        fig = draw_visitation(points, self.ranges, labels, title, self.bins)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        arrays = {f"{w}_{s}": p for (w, s), p in points.items()}
        np.savez_compressed(path.removesuffix(".png") + ".npz", **arrays)  # type: ignore[arg-type]
        log_image(trainer, "visitation", path)
