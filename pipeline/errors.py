"""Errors a user can cause: the CLI turns each into one line and an exit code."""


class UserError(Exception):
    """A problem the user can fix (bad option, missing study, unreachable store). Exit code 1."""

    exit_code = 1


class ConfigError(UserError):
    """A settings file or --set override that is invalid. Exit code 2 (usage)."""

    exit_code = 2


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived. A KeyboardInterrupt, so every layer (Optuna included) records it like Ctrl-C."""
