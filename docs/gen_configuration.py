"""Writes the settings tables of docs/configuration.md from the code: each table lists the fields of a config
dataclass (or the arguments of a constructor) with their type and default as declared, and their meaning from
the ``Args:`` section of its docstring. The text around the tables is the page's own; each table sits between
``<!-- generated: NAME -->`` and ``<!-- end generated -->``.

    python docs/gen_configuration.py          # rewrite the tables
    python docs/gen_configuration.py --check  # exit 1 if the page is not what the code says (tests/test_docs.py)
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "configuration.md"
BLOCK = re.compile(r"(<!-- generated: (\S+) -->\n)(.*?)(<!-- end generated -->)", re.S)


def sources() -> dict[str, tuple[Any, list[tuple[str, str, Any]]]]:
    """Each table's documented object and its (name, type, default) rows, in declaration order."""
    from lightning_meta_rl.config import MetaConfig, StudentConfig, TeacherConfig
    from lightning_meta_rl.datamodule import RolloutDataModule
    from lightning_meta_rl.module import MetaRLModule
    from lightning_meta_rl.population_data import PopulationDataModule

    def fields(cls: Any) -> list[tuple[str, str, Any]]:
        return [(f.name, str(f.type), f.default) for f in dataclasses.fields(cls)]

    def arguments(fn: Any, names: list[str]) -> list[tuple[str, str, Any]]:
        params = inspect.signature(fn).parameters
        return [(n, str(params[n].annotation), params[n].default) for n in names]

    data_args = [n for n in inspect.signature(RolloutDataModule.__init__).parameters if n not in ("self", "seed")]
    return {
        "model.student": (StudentConfig, fields(StudentConfig)),
        "model.teacher": (TeacherConfig, fields(TeacherConfig)),
        "model.meta": (MetaConfig, fields(MetaConfig)),
        "model": (MetaRLModule, arguments(MetaRLModule.__init__, ["utd_ratio", "compile"])),
        "data": (RolloutDataModule, arguments(RolloutDataModule.__init__, data_args)),
        "data.population": (PopulationDataModule, arguments(PopulationDataModule.__init__, ["env_threads"])),
    }


class _Recorder:
    """Stands in for the CLI's parser: records the options the CLI adds (and ignores its links)."""

    def __init__(self) -> None:
        self.options: list[tuple[str, dict[str, Any]]] = []

    def add_argument(self, name: str, **kwargs: Any) -> None:
        self.options.append((name, kwargs))

    def link_arguments(self, *args: Any, **kwargs: Any) -> None:
        pass


def cli_table() -> str:
    """The options the CLI adds to Lightning's (``MetaRLCLI.add_arguments_to_parser``), with their help."""
    from types import SimpleNamespace

    from lightning_meta_rl.cli import MetaRLCLI

    recorder = _Recorder()
    MetaRLCLI.add_arguments_to_parser(SimpleNamespace(model_class=None), recorder)  # type: ignore[arg-type]
    lines = ["| setting | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, kw in recorder.options:
        typ = kw.get("type")
        shown = "yes/no flag" if "action" in kw else getattr(typ, "__name__", str(typ).replace("NoneType", "None"))
        meaning = " ".join(kw["help"].split()).replace("<", "&lt;").replace(">", "&gt;")
        lines.append(f"| `{name}` | {shown.replace(' | ', ' or ')} | {value(kw.get('default'))} | {meaning} |")
    return "\n".join(lines) + "\n"


def meanings(obj: Any) -> dict[str, str]:
    """The ``Args:`` entries of a docstring, each joined into one line."""
    text = inspect.cleandoc(obj.__doc__ or "")
    out: dict[str, str] = {}
    name = None
    for line in text.split("Args:", 1)[-1].splitlines():
        entry = re.match(r"^    (\w[\w, ]*): (.*)$", line)
        if entry:
            name = entry.group(1)
            out[name] = entry.group(2)
        elif line.startswith("        ") and name:
            out[name] += " " + line.strip()
        elif line.strip() and not line.startswith(" "):
            break
    return {k: re.sub(r"``([^`]+)``", r"`\1`", v) for k, v in out.items()}


def kind(annotation: str) -> str:
    literal = re.fullmatch(r"Literal\[(.*)\]", annotation)
    if literal:
        return ", ".join(f"`{v.strip().strip(chr(39)).strip(chr(34))}`" for v in literal.group(1).split(","))
    words = {"tuple[int, ...]": "list of int", "dict[str, Any] | None": "dict", "float | None": "float"}
    return words.get(annotation, annotation)


def value(default: Any) -> str:
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, tuple):
        return f"`{list(default)}`"
    if isinstance(default, float):
        return f"`{default:g}`"
    return f"`{default}`"


def table(name: str) -> str:
    if name == "cli":
        return cli_table()
    obj, rows = sources()[name]
    text = meanings(obj)
    lines = ["| setting | type | default | meaning |", "| --- | --- | --- | --- |"]
    for field, annotation, default in rows:
        if field not in text:
            raise SystemExit(f"{obj.__name__}'s docstring has no Args entry for '{field}'")
        lines.append(f"| `{field}` | {kind(annotation)} | {value(default)} | {text[field]} |")
    return "\n".join(lines) + "\n"


def render(page: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + table(m.group(2)) + m.group(4), page)


def main() -> None:
    page = PAGE.read_text()
    new = render(page)
    if "--check" in sys.argv:
        sys.exit(0 if new == page else 1)
    PAGE.write_text(new)


if __name__ == "__main__":
    main()
