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
]


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    broken = tmp / "broken.yaml"
    broken.write_text("model:\n  teacher: [kind: meta\n")
    existing = tmp / "existing"
    existing.mkdir()
    (existing / "metrics.csv").write_text("env_steps,eval/return\n1000,-500\n")
    lines = [
        "# Bad input: what the CLI prints",
        "",
        "Produced by `python benchmarks/bad_inputs.py` (each case: `python -m lightning_meta_rl fit --config "
        "conf/smoke.yaml <args>`).",
        "",
        "| case | arguments | exit | traceback? | last line of stderr |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, args in CASES:
        args = [a.replace("BROKEN", str(broken)).replace("EXISTING", str(existing)) for a in args]
        run_dir = [] if any(a.startswith("--run_dir") for a in args) else [f"--run_dir={tmp / name.replace(' ', '_')}"]
        cmd = [sys.executable, "-m", "lightning_meta_rl", *SMOKE, *args, *run_dir]
        env = {**os.environ, "WANDB_MODE": "disabled"}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        last = next((ln for ln in err if "error" in ln.lower()), err[-1] if err else "")
        shown = " ".join(a.replace(str(tmp), "<tmp>") for a in args)
        last = last.replace(str(tmp), "<tmp>").replace("|", "\\|")
        tb = "yes" if "Traceback" in proc.stderr else "no"
        lines.append(f"| {name} | `{shown}` | {proc.returncode} | {tb} | {last} |")
        print(lines[-1], flush=True)
    out = ROOT / "benchmarks" / "results" / "bad_inputs.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
