"""Exceptions that carry a message a user can act on.

The CLI prints a `UserError` as one line without a traceback (``--debug`` shows it);
the web UI shows it next to the field or job it concerns.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by input the user can fix; the message says what and how."""

    exit_code = 2


class ConfigError(UserError):
    """An invalid parameter value or combination of parameters."""


class ModelFileError(UserError):
    """A model file that is missing, unreadable, truncated or of the wrong kind."""


class DatasetError(UserError):
    """A dataset configuration or dataset content problem."""


class DiskFullError(UserError):
    """A write that failed because its disk (or quota) is full; the previous file is kept."""
