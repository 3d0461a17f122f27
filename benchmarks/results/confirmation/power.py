"""Power of the confirmation's design (PROTOCOL.md): the mean over T tasks of the probability of improvement
P(X > Y) (Mann-Whitney, ties 0.5; rliable's ``probability_of_improvement``), n runs per arm and task, tested
one-sided at 5% (primary) and at the Holm-corrected levels of the secondaries.

    python benchmarks/results/confirmation/power.py                # normal approximation + Monte Carlo, seconds
    python benchmarks/results/confirmation/power.py --bootstrap 300  # also the decision rule itself (slower)

Three computations, each printed:

1. The normal approximation of issue 25: under H0 one task's estimate has variance (n + m + 1) / (12 n m)
   (Mann-Whitney, continuous scores, n = m runs per arm), the mean over T independent tasks that over T; the
   design detects a true P of 0.5 + (z_alpha + z_power) * sd.
2. Monte Carlo of the same test with no normal approximation: per task, scores of the two arms drawn from two
   normal distributions whose shift gives the true P (shift = sqrt(2) * Phi^-1(P)); the critical value is
   the 95th percentile of the aggregate under H0 (rank-based, so exact for any continuous scores).
3. (``--bootstrap``) the rule PROTOCOL.md fixes: the one-sided 95% lower bound of a stratified percentile
   bootstrap (runs resampled within each task and arm) above 0.5. Fewer simulations: its figure carries a
   Monte Carlo error of about 0.02.

Scores with many ties (SparseMountainCar's final score takes few values) carry less information than
continuous ones, so on such a task the real power is lower than these figures.
"""

from __future__ import annotations

import argparse
from statistics import NormalDist

import numpy as np

N = 20  # runs per arm and task (seeds 200-219)
T = 5  # tasks
ALPHA = 0.05  # one-sided, primary
SECONDARIES = 4  # the Holm family of the secondary endpoints (PROTOCOL.md)
TRUE_P = (0.55, 0.60, 0.64, 0.68)
Z = NormalDist()


def sd_h0(n: int, t: int) -> float:
    return float(np.sqrt((2 * n + 1) / (12 * n * n) / t))


def analytic(n: int, t: int, alpha: float) -> tuple[float, dict[float, float]]:
    """The smallest true P detected with 80% power, and the power at each of TRUE_P."""
    sd = sd_h0(n, t)
    za = Z.inv_cdf(1 - alpha)
    mde = 0.5 + (za + Z.inv_cdf(0.8)) * sd
    return mde, {p: 1 - Z.cdf(za - (p - 0.5) / sd) for p in TRUE_P}


def prob_improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[..., n], [..., m] -> [...]: P(X > Y) with ties counted 0.5."""
    gt = (x[..., :, None] > y[..., None, :]).mean(axis=(-1, -2))
    eq = (x[..., :, None] == y[..., None, :]).mean(axis=(-1, -2))
    return gt + 0.5 * eq


def draw(rng: np.random.Generator, p: float, sims: int, n: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    shift = np.sqrt(2) * Z.inv_cdf(p)
    return rng.normal(shift, 1.0, (sims, t, n)), rng.normal(0.0, 1.0, (sims, t, n))


def monte_carlo(rng: np.random.Generator, sims: int, n: int, t: int, alpha: float) -> dict[float, float]:
    null = prob_improvement(*draw(rng, 0.5, sims, n, t)).mean(-1)
    critical = np.quantile(null, 1 - alpha)
    return {p: float((prob_improvement(*draw(rng, p, sims, n, t)).mean(-1) > critical).mean()) for p in TRUE_P}


def bootstrap_power(rng: np.random.Generator, sims: int, reps: int, n: int, t: int, alpha: float) -> dict[float, float]:
    out = {}
    for p in TRUE_P:
        x, y = draw(rng, p, sims, n, t)
        hits = 0
        for s in range(sims):
            ix = rng.integers(0, n, (reps, t, n))
            iy = rng.integers(0, n, (reps, t, n))
            bx = np.take_along_axis(np.broadcast_to(x[s], (reps, t, n)), ix, -1)
            by = np.take_along_axis(np.broadcast_to(y[s], (reps, t, n)), iy, -1)
            agg = prob_improvement(bx, by).mean(-1)
            hits += bool(np.quantile(agg, alpha) > 0.5)
        out[p] = hits / sims
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sims", type=int, default=20000)
    parser.add_argument("--bootstrap", type=int, default=0, help="simulated studies for the bootstrap rule (0: skip)")
    parser.add_argument("--reps", type=int, default=1000, help="bootstrap draws per simulated study")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"design: n = {N} runs per arm and task, T = {T} tasks, nT = {N * T}")
    print(f"sd of the aggregate under H0: {sd_h0(N, T):.4f}")
    holm = [ALPHA / k for k in range(SECONDARIES, 0, -1)]
    for label, alpha in [("primary, one-sided 5%", ALPHA)] + [
        (f"secondary at Holm step alpha = {a:.4f}", a) for a in holm
    ]:
        mde, power = analytic(N, T, alpha)
        print(f"\n{label}")
        print(f"  normal approximation: 80% power for a true P >= {mde:.3f}")
        print("  power at true P:     " + "  ".join(f"{p:.2f}: {v:.2f}" for p, v in power.items()))
        mc = monte_carlo(rng, args.sims, N, T, alpha)
        print(f"  Monte Carlo ({args.sims}): " + "  ".join(f"{p:.2f}: {v:.2f}" for p, v in mc.items()))
    # issue 25's planning figure: nT for 80% power one-sided 5% at P = 0.60 and 0.64
    za, zb = Z.inv_cdf(1 - ALPHA), Z.inv_cdf(0.8)
    for p in (0.60, 0.64):
        print(f"\nnT needed for 80% power at P = {p:.2f} (one-sided 5%): {(za + zb) ** 2 / (6 * (p - 0.5) ** 2):.0f}")
    if args.bootstrap:
        bp = bootstrap_power(rng, args.bootstrap, args.reps, N, T, ALPHA)
        print(
            f"\nthe protocol's rule (stratified bootstrap, {args.bootstrap} studies x {args.reps} draws, one-sided 95%"
            " lower bound > 0.5): " + "  ".join(f"{p:.2f}: {v:.2f}" for p, v in bp.items())
        )


if __name__ == "__main__":
    main()
