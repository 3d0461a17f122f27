"""Errors meant for the user: the CLI prints their message in one paragraph and exits non-zero."""


class UserError(Exception):
    """A problem with the user's input (environment, configuration) rather than a bug."""


class EnvironmentNotSupported(UserError):
    """The environment cannot be used by this method (unknown id, discrete actions, non-flat observations)."""


class TrainingDiverged(UserError):
    """An environment or a loss produced NaN or inf during training."""


class ConfigError(UserError, ValueError):
    """An invalid hyperparameter or setting (also a ValueError for code that builds objects directly)."""
