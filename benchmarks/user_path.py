"""What the path a user actually takes costs: the callbacks and the logger of conf/hopper.yaml, whole commands.

python benchmarks/user_path.py [--steps 20000] [--repeats 3]

Every arm runs ``python -m lightning_meta_rl fit --config <cfg> --data.total_env_steps=<steps>`` in a fresh
process, as a user types it: OMP_NUM_THREADS and WANDB_MODE unset (the CLI then logs to W&B offline unless
credentials exist), start-up and teardown included. The configs are conf/hopper.yaml (the Meta arm) and copies
of it with less:

- ``user``: conf/hopper.yaml as committed (progress bar, meta-reward stats, state visitation, learning curve,
  evaluation video, W&B logger);
- ``no_video``: the same without ``EvaluationVideo``;
- ``no_callbacks``: no callbacks and no progress bar (the trainer's checkpointing stays), W&B logger kept;
- ``bare``: no callbacks, no progress bar, no logger.

The arms run one at a time, in an order rotated each round. Reported: medians of the whole wall time, of the
training part (the last ``wall_time_s`` of metrics.csv: fit start to the last evaluation) and of the rest
(start-up, the end-of-training callbacks, teardown), each arm's ratio to ``bare``, and the differences that
price each layer (video = user - no_video, other callbacks = no_video - no_callbacks, logger = no_callbacks -
bare). Writes benchmarks/results/user_path/user_path.md and .json.

``--compile-arms`` times instead what conf/hopper.yaml's ``model.compile: true`` gives a user: ``user`` as
committed against ``user_eager`` (the same command with ``--model.compile=false``), in alternating order,
after the same untimed warm-up run (which compiles, so the timed compiled runs find a warm inductor cache,
as a user's second run does). Reported per arm: whole time, training time, and the steady rate (env steps/s
from the first to the last evaluation, after compiling; evaluation episodes included, the same in both
arms). Writes user_path_compile.md and .json.

    python benchmarks/user_path.py --compile-arms --steps 60000 --repeats 2
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import tempfile
from pathlib import Path

import yaml
from compare_arms import fit_command, read_metrics
from concurrency import wall

from lightning_meta_rl.cli import wandb_has_credentials

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "user_path"
BASE_CONFIG = ROOT / "conf" / "hopper.yaml"
VIDEO = "callbacks.video.EvaluationVideo"
ARMS = ("user", "no_video", "no_callbacks", "bare")
COMPILE_ARMS = ("user", "user_eager")
LAYERS = (
    ("video", "user", "no_video"),
    ("other callbacks", "no_video", "no_callbacks"),
    ("logger", "no_callbacks", "bare"),
)


def arm_configs(base: dict) -> dict[str, tuple[dict, list[str]]]:
    """Each arm's config (a copy of ``base``) and the extra command-line flags it needs."""
    user = copy.deepcopy(base)
    no_video = copy.deepcopy(base)
    no_video["trainer"]["callbacks"] = [c for c in base["trainer"]["callbacks"] if c["class_path"] != VIDEO]
    no_callbacks = copy.deepcopy(base)
    no_callbacks["trainer"]["callbacks"] = []
    quiet = ["--trainer.enable_progress_bar=false"]
    return {
        "user": (user, []),
        "no_video": (no_video, []),
        "no_callbacks": (no_callbacks, quiet),
        "bare": (copy.deepcopy(no_callbacks), [*quiet, "--trainer.logger=false"]),
    }


def round_order(r: int) -> list[str]:
    """Round ``r``'s order of the arms: rotated by one each round, so no arm always runs first or last."""
    k = r % len(ARMS)
    return list(ARMS[k:] + ARMS[:k])


def measure(run_dir: Path) -> dict[str, float]:
    """What a finished run left behind: its training time, its evaluations and its videos."""
    rows = read_metrics(run_dir)
    return {
        "train_s": float(rows[-1]["wall_time_s"]),
        "evaluations": len(rows),
        "videos": len(list((run_dir / "videos").glob("*.mp4"))) if (run_dir / "videos").exists() else 0,
    }


def summarize(results: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Medians per arm of every measured field, with the rest (whole - training) and the ratio to ``bare``."""
    out: dict[str, dict[str, float]] = {}
    for arm, runs in results.items():
        med = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        med["rest_s"] = statistics.median(run["whole_s"] - run["train_s"] for run in runs)
        out[arm] = med
    for med in out.values():
        med["ratio_to_bare"] = med["whole_s"] / out["bare"]["whole_s"]
    return out


def steady_rate(run_dir: Path) -> float:
    """Env steps/s from the first evaluation to the last (the first comes after the compiled update's
    compile, which happens at the first update, at the end of warm-up)."""
    rows = read_metrics(run_dir)
    first, last = rows[0], rows[-1]
    steps = float(last["env_steps"]) - float(first["env_steps"])
    return steps / (float(last["wall_time_s"]) - float(first["wall_time_s"]))


def write_compile_report(data: dict) -> str:
    """user_path_compile.md from the JSON a ``--compile-arms`` run wrote."""
    steps, repeats, runs = data["steps"], data["repeats"], data["runs"]
    med = {arm: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for arm, rs in runs.items()}
    lines = [
        "# The path a user takes: conf/hopper.yaml compiled (as committed) against eager",
        "",
        f"`python benchmarks/user_path.py --compile-arms --steps {steps} --repeats {repeats}`: `python -m "
        f"lightning_meta_rl fit --config conf/hopper.yaml --data.total_env_steps={steps}` (Meta arm, Hopper-v5, "
        "callbacks, progress bar and logger as committed) and the same with `--model.compile=false`; "
        f"OMP_NUM_THREADS and WANDB_MODE unset (W&B mode: {data['wandb']}), whole commands one at a time in "
        f"alternating order, medians of {repeats} rounds after one untimed compiled warm-up run (so the timed "
        "compiled runs start with a warm inductor cache). `steady` is env steps/s from the first evaluation to "
        "the last (after compiling; evaluation episodes included).",
        "",
        "| arm | whole (s) | whole, each run (s) | training (s) | steady env steps/s | steady, each run |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for arm in COMPILE_ARMS:
        m = med[arm]
        each = ", ".join(f"{r['whole_s']:.1f}" for r in runs[arm])
        rates = ", ".join(f"{r['steady']:.0f}" for r in runs[arm])
        lines.append(f"| {arm} | {m['whole_s']:.1f} | {each} | {m['train_s']:.1f} | {m['steady']:.0f} | {rates} |")
    u, e = med["user"], med["user_eager"]
    lines += [
        "",
        f"- whole run, eager / compiled: {e['whole_s'] / u['whole_s']:.2f}",
        f"- steady rate, compiled / eager: {u['steady'] / e['steady']:.2f}",
    ]
    return "\n".join(lines) + "\n"


def compile_arms(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp())
    runs: dict[str, list[dict[str, float]]] = {arm: [] for arm in COMPILE_ARMS}
    extra = {"user": [], "user_eager": ["--model.compile=false"]}
    try:

        def command(arm: str, run_dir: Path, steps: int) -> list[str]:
            return fit_command(BASE_CONFIG, f"--data.total_env_steps={steps}", f"--run_dir={run_dir}", *extra[arm])

        wall([command("user", tmp / "warmup", 2000)], wandb_mode=None)  # untimed: compiles, warms the caches
        for r in range(args.repeats):
            for arm in COMPILE_ARMS if r % 2 == 0 else COMPILE_ARMS[::-1]:
                run_dir = tmp / f"{arm}_{r}"
                whole = wall([command(arm, run_dir, args.steps)], wandb_mode=None)
                run = {"whole_s": whole, "steady": steady_rate(run_dir), **measure(run_dir)}
                runs[arm].append(run)
                print(f"round {r} {arm}: {json.dumps({k: round(v, 2) for k, v in run.items()})}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mode = "online (credentials found)" if wandb_has_credentials() else "offline (no credentials)"
    data = {"steps": args.steps, "repeats": args.repeats, "wandb": mode, "runs": runs}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "user_path_compile.json").write_text(json.dumps(data, indent=2))
    text = write_compile_report(data)
    (OUT / "user_path_compile.md").write_text(text)
    print(text)


def write_report(data: dict) -> str:
    """user_path.md from the JSON a run wrote (``--report`` rebuilds it without running anything)."""
    steps, repeats, med = data["steps"], data["repeats"], summarize(data["runs"])
    lines = [
        "# The path a user takes: callbacks and logger",
        "",
        f"`python benchmarks/user_path.py --steps {steps} --repeats {repeats}`: `python -m lightning_meta_rl "
        f"fit --config <arm>.yaml --data.total_env_steps={steps}` with conf/hopper.yaml (Meta arm, Hopper-v5) and "
        f"copies of it with fewer callbacks; OMP_NUM_THREADS and WANDB_MODE unset (W&B mode: {data['wandb']}), whole "
        f"commands one at a time, medians of {repeats} rounds in rotated order after one untimed warm-up run. "
        "`training` is fit start to the last evaluation (metrics.csv); `rest` is the median over runs of each run's "
        "whole - training (imports, set-up, the end-of-training callbacks, the last video, teardown), so the columns "
        "of a row need not add up.",
        "",
        "| arm | whole (s) | whole, each run (s) | training (s) | rest (s) | evaluations | videos | whole / bare |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm in ARMS:
        m = med[arm]
        each = ", ".join(f"{run['whole_s']:.1f}" for run in data["runs"][arm])
        lines.append(
            f"| {arm} | {m['whole_s']:.1f} | {each} | {m['train_s']:.1f} | {m['rest_s']:.1f} | "
            f"{m['evaluations']:.0f} | {m['videos']:.0f} | {m['ratio_to_bare']:.2f} |"
        )
    lines += [
        "",
        "| layer | added whole time (s, difference of medians) | share of the user's run |",
        "| --- | --- | --- |",
    ]
    for layer, more, less in LAYERS:
        diff = med[more]["whole_s"] - med[less]["whole_s"]
        lines.append(f"| {layer} ({more} - {less}) | {diff:+.1f} | {diff / med['user']['whole_s']:.0%} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--report", action="store_true", help="only rebuild user_path.md from user_path.json")
    parser.add_argument("--compile-arms", action="store_true", help="conf/hopper.yaml compiled against eager")
    args = parser.parse_args()
    if args.compile_arms:
        compile_arms(args)
        return
    if args.report:
        text = write_report(json.loads((OUT / "user_path.json").read_text()))
        (OUT / "user_path.md").write_text(text)
        print(text)
        return
    base = yaml.safe_load(BASE_CONFIG.read_text())
    tmp = Path(tempfile.mkdtemp())
    results: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    try:
        flags = {}
        for arm, (config, extra) in arm_configs(base).items():
            (tmp / f"{arm}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            flags[arm] = extra

        def command(arm: str, run_dir: Path, steps: int) -> list[str]:
            return fit_command(
                tmp / f"{arm}.yaml", f"--data.total_env_steps={steps}", f"--run_dir={run_dir}", *flags[arm]
            )

        wall([command("user", tmp / "warmup", 2000)], wandb_mode=None)  # untimed: file and import caches warm
        for r in range(args.repeats):
            for arm in round_order(r):
                run_dir = tmp / f"{arm}_{r}"
                whole = wall([command(arm, run_dir, args.steps)], wandb_mode=None)
                run = {"whole_s": whole, **measure(run_dir)}
                results[arm].append(run)
                print(f"round {r} {arm}: {json.dumps({k: round(v, 2) for k, v in run.items()})}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # the CLI's own choice when WANDB_MODE is unset (lightning_meta_rl/cli.py)
    mode = "online (credentials found)" if wandb_has_credentials() else "offline (no credentials)"
    data = {"steps": args.steps, "repeats": args.repeats, "wandb": mode, "runs": results, "medians": summarize(results)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "user_path.json").write_text(json.dumps(data, indent=2))
    text = write_report(data)
    (OUT / "user_path.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
