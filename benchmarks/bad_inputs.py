"""Feed the real CLI bad input and tabulate what it prints; writes benchmarks/results/bad_inputs.md.

python benchmarks/bad_inputs.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["fit", "--config", "conf/smoke.yaml", "--trainer.enable_progress_bar=false"]

CASES: list[tuple[str, list[str]]] = [
    ("unknown env id", ["--data.env_id=Pendulm-v1"]),
    ("discrete actions", ["--data.env_id=CartPole-v1"]),
    ("image observations", ["--data.env_id=benchmarks.bad_envs:ImageObs-v0"]),
    ("dict observations", ["--data.env_id=benchmarks.bad_envs:DictObs-v0"]),
    ("missing dependency", ["--data.env_id=CarRacing-v3"]),
    ("non-positive learning rate", ["--model.student.actor_lr=0"]),
    ("non-positive sigma", ["--model.teacher.sigma=-0.1"]),
    ("gamma outside (0, 1]", ["--model.student.gamma=1.5"]),
    ("budget smaller than warm-up", ["--data.total_env_steps=100"]),
    ("batch larger than buffer", ["--data.buffer_size=32"]),
    ("unknown teacher kind", ["--model.teacher.kind=metaa"]),
    ("broken YAML", ["--config", "BROKEN"]),
    ("environment returns NaN", ["--data.env_id=benchmarks.bad_envs:NanPendulum-v0"]),
    ("losses become NaN", ["--model.student.critic_lr=1e30", "--model.student.actor_lr=1e30"]),
    ("run directory exists", ["--run_dir=EXISTING"]),
    ("checkpoint file missing", ["--ckpt_path=nothere.ckpt"]),
    ("checkpoint truncated", ["--ckpt_path=TRUNCATED"]),
    ("checkpoint of another environment", ["--ckpt_path=last", "--run_dir=PENDULUM_RUN", "--data.env_id=Hopper-v5"]),
    ("checkpoint with other network sizes", ["--ckpt_path=GOOD", "--model.student.hidden=[32,32]"]),
    ("checkpoint of another teacher kind", ["--ckpt_path=GOOD", "--model.teacher.kind=meta_state"]),
    ("GPU asked for, none here", ["--trainer.accelerator=gpu"]),
    ("device count Lightning refuses", ["--trainer.devices=0"]),
    ("max_steps instead of an env-step budget", ["--trainer.max_steps=3"]),
]


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    broken = tmp / "broken.yaml"
    broken.write_text("model:\n  teacher: [kind: meta\n")
    existing = tmp / "existing"
    existing.mkdir()
    (existing / "metrics.csv").write_text("env_steps,eval/return\n1000,-500\n")
    pendulum_run = tmp / "pendulum_run"  # a real run whose checkpoint the resume cases use
    subprocess.run(
        [sys.executable, "-m", "lightning_meta_rl", *SMOKE, f"--run_dir={pendulum_run}"],
        cwd=ROOT,
        env={**os.environ, "WANDB_MODE": "disabled"},
        capture_output=True,
        check=True,
        timeout=300,
    )
    good = pendulum_run / "checkpoints" / "last.ckpt"
    truncated = tmp / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    placeholders = {
        "BROKEN": broken,
        "EXISTING": existing,
        "PENDULUM_RUN": pendulum_run,
        "GOOD": good,
        "TRUNCATED": truncated,
    }
    lines = [
        "# Bad input: what the CLI prints",
        "",
        "Produced by `python benchmarks/bad_inputs.py` (each case: `python -m lightning_meta_rl fit --config "
        "conf/smoke.yaml <args>`).",
        "",
        "Every refused case must also leave nothing behind: the last column lists what exists in its run "
        "directory afterwards, W&B's offline files included (W&B runs offline, as for a user without an "
        "account); for the resume cases, the files that changed or appeared in the earlier run's directory, "
        "W&B's excluded.",
        "",
        "| case | arguments | exit | traceback? | last line of stderr | left behind |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    snapshot = {p: p.read_bytes() for p in pendulum_run.rglob("*") if p.is_file() and "wandb" not in p.parts}
    for name, args in CASES:
        for key, value in placeholders.items():
            args = [a.replace(key, str(value)) for a in args]
        run_dir = [] if any(a.startswith("--run_dir") for a in args) else [f"--run_dir={tmp / name.replace(' ', '_')}"]
        cmd = [sys.executable, "-m", "lightning_meta_rl", *SMOKE, *args, *run_dir]
        env = {
            **os.environ,
            "WANDB_MODE": "offline",
        }  # as a user without a W&B account runs: a refused start must leave no W&B stub
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        last = next((ln for ln in err if "error" in ln.lower()), err[-1] if err else "")
        shown = " ".join(a.replace(str(tmp), "<tmp>") for a in args)
        last = last.replace(str(tmp), "<tmp>").replace("|", "\\|")
        tb = "yes" if "Traceback" in proc.stderr else "no"
        if str(pendulum_run) in " ".join(args):
            left = [
                p.name
                for p in pendulum_run.rglob("*")
                if p.is_file() and "wandb" not in p.parts and snapshot.get(p) != p.read_bytes()
            ]
        else:
            own = tmp / name.replace(" ", "_")
            left = [str(p.relative_to(own)) for p in own.rglob("*")] if own.exists() else []
        shown_left = ", ".join(left[:4]) + (" ..." if len(left) > 4 else "") if left else "nothing"
        lines.append(f"| {name} | `{shown}` | {proc.returncode} | {tb} | {last} | {shown_left} |")
        print(lines[-1], flush=True)
    out = ROOT / "benchmarks" / "results" / "bad_inputs.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
