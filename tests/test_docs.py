"""The documentation site: ``mkdocs build --strict`` passes (a page missing from the navigation, a broken link
between pages or a bad anchor fails it), and every relative link of the pages and the README to a file of the
repository (the result files the pages cite) points at a file that exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target)


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip("material", reason="mkdocs-material is in the dev extra")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "page", sorted(p.relative_to(ROOT).as_posix() for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
)
def test_every_link_to_a_repository_file_resolves(page: str) -> None:
    path = ROOT / page
    broken = []
    for target in LINK.findall(path.read_text()):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # a web address, or an anchor on the same page
        file = target.split("#", 1)[0]
        if not (path.parent / file).exists():
            broken.append(target)
    assert not broken, f"{page} links to files that do not exist: {broken}"


def test_the_configuration_reference_is_what_the_code_declares() -> None:
    """docs/configuration.md's settings tables are generated from the config dataclasses and constructors
    (docs/gen_configuration.py): a setting added, removed, retyped, re-defaulted or re-described in the code
    without regenerating the page fails here."""
    done = subprocess.run(
        [sys.executable, "docs/gen_configuration.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, "docs/configuration.md is stale: run python docs/gen_configuration.py"
