"""The README's Python example runs as written: build, fit, load the checkpoint, evaluate."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, subprocess_env


def readme_python_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- python-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md has no ```python block after <!-- python-example -->"
    return match.group(1)


def test_readme_python_example_fits_saves_and_evaluates(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(readme_python_example())
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "runs" / "from_python" / "checkpoints" / "last.ckpt").is_file()
    evaluations = re.search(r"evaluations: (\[.*\])", out.stdout)
    assert evaluations and len(ast.literal_eval(evaluations.group(1))) >= 3  # every 1000 env steps of 3000
    score = re.search(r"test/return: (-?[0-9.]+)", out.stdout)
    assert score and -2000 < float(score.group(1)) < 0  # Pendulum returns


def test_readme_python_example_is_reproducible_and_refuses_to_overwrite(tmp_path: Path) -> None:
    """Issue 26: the same numbers twice with the same seed; a second run into the same directory is refused."""
    script = tmp_path / "example.py"
    script.write_text(readme_python_example())

    def run(where: Path) -> subprocess.CompletedProcess[str]:
        where.mkdir(exist_ok=True)
        return subprocess.run(
            [sys.executable, str(script)], cwd=where, env=subprocess_env(), capture_output=True, text=True, timeout=300
        )

    first, other = run(tmp_path / "a"), run(tmp_path / "b")
    assert first.returncode == 0 and other.returncode == 0, (first.stderr + other.stderr)[-3000:]
    evaluations = [re.search(r"evaluations: (\[.*\])", p.stdout) for p in (first, other)]
    assert evaluations[0] and evaluations[1] and evaluations[0].group(1) == evaluations[1].group(1)
    ckpt = tmp_path / "a" / "runs" / "from_python" / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    again = run(tmp_path / "a")
    assert again.returncode != 0 and "holds the checkpoint of an earlier run" in again.stderr
    assert ckpt.read_bytes() == before
