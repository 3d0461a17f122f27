"""A quiet console: a normal run prints the start line, the progress bar and the final line, and nothing of
Lightning's start-up boilerplate; the bar's last state prints once, and after a resume its rate counts only
this process's steps; a bad argument gives a short error (exit status 2) under the name users type."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import ROOT, SMOKE, clear_run_dir_env, fit, run_module, subprocess_env

from lightning_meta_rl.cli import PROG, main
from lightning_meta_rl.runtime import LIGHTNING_INFO_LOGGERS, quiet_console

pytestmark = pytest.mark.usefixtures("one_thread")

SHORT_RUN = ["--data.total_env_steps=600", "--data.warmup_steps=200", "--data.eval_every=300"]
BOILERPLATE = [
    "Tip",
    "GPU available",
    "TPU available",
    "Seed set to",
    "Total Flops",
    "Total params",
    "LeafSpec",
    "Total length of `DataLoader`",
    "v_num",
    "Training:",
]


def screen_lines(text: str) -> list[str]:
    """What a log file shows: every carriage return or newline starts a line; empty ones dropped."""
    return [line for line in re.split(r"[\r\n]", text) if line.strip()]


def test_a_normal_run_prints_start_line_progress_bar_and_final_line_only(tmp_path: Path) -> None:
    proc = run_module("fit", "--config", SMOKE, "--run_dir", str(tmp_path / "run"), *SHORT_RUN)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout + proc.stderr
    for word in BOILERPLATE:
        assert word not in text, f"{word!r} printed:\n{text}"
    lines = screen_lines(text)
    assert lines[0].startswith("lightning-meta-rl: fit Pendulum-v1")
    assert lines[-1].startswith("lightning-meta-rl: final eval/return")
    bar = lines[1:-1]
    assert bar and all(line.startswith("env steps:") for line in bar), text
    assert len(lines) <= 8, text
    final = [line for line in bar if "600/600" in line]
    assert len(final) == 1, text  # the final state once, in this bar's format
    assert "eval=" in final[0] and "steps/s" in final[0]


def test_a_bad_type_on_the_command_line_is_one_short_paragraph(tmp_path: Path) -> None:
    proc = run_module("fit", "--config", SMOKE, "--run_dir", str(tmp_path / "run"), "--data.total_env_steps=abc")
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) <= 2, err
    assert err.startswith("lightning-meta-rl: error:")
    assert "data.total_env_steps" in err and "abc" in err
    assert f"{PROG} fit --help" in err
    assert "usage:" not in err and "__main__.py" not in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["fitt"], "invalid choice"),
        (["fit", "--config", SMOKE, "--no_such_option=1"], "--no_such_option"),
        ([], "subcommand"),
    ],
)
def test_other_usage_errors_are_short_too(capsys: pytest.CaptureFixture[str], args: list[str], expected: str) -> None:
    try:
        with pytest.raises(SystemExit) as exc:
            main(args)
    finally:
        clear_run_dir_env()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "--help" in err, err


def test_help_names_the_program_users_type() -> None:
    proc = run_module("fit", "--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"usage: {PROG} ")
    assert "__main__.py" not in proc.stdout


def test_model_summary_is_off_by_default_and_can_be_turned_on(tmp_path: Path, capfd) -> None:
    fit(tmp_path / "run", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=true")
    out, err = capfd.readouterr()
    assert "Trainable params" in out + err


def test_resumed_bar_starts_at_the_restored_count(tmp_path: Path, capfd) -> None:
    run_dir = tmp_path / "run"
    first = fit(run_dir, "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false")
    restored = first.datamodule.env_steps
    capfd.readouterr()
    c = fit(
        run_dir,
        "--data.total_env_steps=1600",
        "--trainer.callbacks=[{class_path: callbacks.progress.EnvStepProgressBar}]",
        "--ckpt_path",
        "last",
    )
    out, err = capfd.readouterr()
    bar = c.trainer.progress_bar_callback.train_progress_bar
    assert bar.initial == restored  # tqdm's rate and ETA are (n - initial) / elapsed: this process's steps
    first_line = next(line for line in screen_lines(out + err) if line.startswith("env steps:"))
    assert f" {restored}/1600 " in first_line, first_line
    assert len([line for line in screen_lines(out + err) if "1600/1600" in line]) == 1


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("name", LIGHTNING_INFO_LOGGERS)
def test_quiet_console_drops_only_lightning_s_banners(name: str) -> None:
    quiet_console()
    log, records = logging.getLogger(name), _Records()
    log.addHandler(records)  # Lightning's loggers may not propagate to the root (pytest's caplog)
    try:
        log.info("GPU available: False, used: False")
        log.info("\N{ELECTRIC LIGHT BULB} Tip: try something")
        log.info("Seed set to 0")
        log.info("Restoring states from the checkpoint path at x.ckpt")
    finally:
        log.removeHandler(records)
    assert records.messages == ["Restoring states from the checkpoint path at x.ckpt"]


def test_quiet_console_ignores_only_the_two_known_warnings() -> None:
    raised = [
        ("Total length of `DataLoader` across ranks is zero. Please make sure.", UserWarning),
        ("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning),
        ("Total length of `DataLoader` across ranks is zero.", RuntimeWarning),  # another category: shown
        ("a warning of this project", UserWarning),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_console()  # installed in front of "always"
        for message, category in raised:
            warnings.warn(message, category, stacklevel=1)
    assert [str(w.message) for w in caught] == [
        "Total length of `DataLoader` across ranks is zero.",
        "a warning of this project",
    ]


def test_importing_the_package_leaves_lightning_s_logging_alone() -> None:
    code = (
        "import logging, warnings, lightning_meta_rl.cli, lightning_meta_rl.runtime as r\n"
        "assert not any(logging.getLogger(n).filters for n in r.LIGHTNING_INFO_LOGGERS)\n"
        "assert not any('LeafSpec' in str(f[1] and f[1].pattern) for f in warnings.filters)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def test_a_run_stopped_by_an_exception_closes_its_bar() -> None:
    """An open bar would be drawn once more when the process exits, after everything else it printed."""
    import io

    from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

    from callbacks.progress import EnvStepProgressBar

    bar_cb = EnvStepProgressBar()
    bar_cb.on_exception(None, None, RuntimeError("before any bar"))  # type: ignore[arg-type]  # nothing to close
    bar = Tqdm(total=10, file=io.StringIO())
    bar_cb.train_progress_bar = bar
    assert not bar.disable
    bar_cb.on_exception(None, None, RuntimeError("stopped"))  # type: ignore[arg-type]
    assert bar.disable  # tqdm's mark of a closed bar
