"""The user-error types every module raises. No project or heavy imports: the bottom of the package.

A UserError means the user can fix something (a flag, a file, a missing download). The scripts print
its message as one line (`error: ...`, exit code 2) and no traceback, so every message names the
problem and the fix. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix; the message names the problem and the fix."""


class ConfigError(UserError, ValueError):
    """A bad setting: a flag, a config file, a preset, a combination of options."""


class DataError(UserError, ValueError):
    """A problem with the user's data or prompt files (names the file, the line and the fix)."""


class ModelError(UserError, RuntimeError):
    """A model or adapter that cannot be loaded (says what was found and how to fix it)."""
