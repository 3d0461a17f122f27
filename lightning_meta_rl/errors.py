"""Errors meant for the user: the CLI prints their message in one paragraph and exits with status 2."""


class UserError(Exception):
    """A problem with the user's input (environment, configuration) rather than a bug."""


class EnvironmentNotSupported(UserError):
    """The environment cannot be used by this method (unknown id, discrete actions, non-flat observations)."""


class RunFailed(UserError):
    """Training had begun and stopped with a message: the run directory and its last checkpoint are kept."""


class TrainingDiverged(RunFailed):
    """An environment or a loss produced NaN or inf during training."""


class EnvironmentFailed(RunFailed):
    """The user's environment raised an exception in reset() or step() during training."""


class ConfigError(UserError, ValueError):
    """An invalid hyperparameter or setting (also a ValueError for code that builds objects directly)."""
