"""The one base class of errors caused by user input (a file, a config, an option, a name).

The command line prints a :class:`UserError` as one line, ``diffguard: error: <message>``, and exits with status 2;
any other exception is a programming error and keeps its traceback. Every user error's message says what to do.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user: a missing or corrupt file, an invalid config value, an unknown name."""


class ConfigError(UserError):
    """A config file, spec or ``key=value`` override that cannot be used as given."""


class UnknownNameError(UserError, KeyError):
    """A name that is not registered (method, preset, benchmark, distance, ...); the message lists close matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
