"""What ``--population`` asks for: its value checked, and read from a command line (or the config files it
names) before the CLI builds its classes."""

from __future__ import annotations

from typing import Any

import yaml

from lightning_meta_rl.errors import ConfigError


def check_population(population: int) -> None:
    if population < 2:
        raise ConfigError(f"--population must be at least 2 for a population run, got {population}")


def requested_population(args: Any) -> int:
    """The ``--population`` a command line asks for (also read from its ``--config`` files, where a resumed run's
    config.yaml keeps it), so that the CLI can build the population's classes; 1 when not asked for."""
    argv = [str(a) for a in args] if isinstance(args, (list, tuple)) else []
    found = 1
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--population=") else None
        if arg == "--population" and i + 1 < len(argv):
            value = argv[i + 1]
        if arg == "--config" and i + 1 < len(argv):
            value = str(_config_population(argv[i + 1]) or "") or None
        if value is not None:
            try:
                found = int(value)
            except ValueError:
                return 1  # the parser reports the bad value in its own words
    return found


def _config_population(path: str) -> int | None:
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    value = config.get("population") if isinstance(config, dict) else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None
