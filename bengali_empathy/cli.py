"""Shared command-line plumbing for the three scripts: config flags and one-line errors for user mistakes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from .config import add_config_args
from .errors import UserError

# Exceptions that mean the user must fix something: printed as one line, no traceback.
USER_ERRORS = (UserError, FileNotFoundError)


def user_path(value: str) -> Path:
    """A path the user typed: relative to the current folder (config paths are relative to the repo root)."""
    return Path(value).expanduser().resolve()


def make_parser(doc: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0], epilog="\n".join(doc.strip().splitlines()[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    return parser


def main_guard(fn: Callable[[], int | None]) -> None:
    """Run a script's main(); user mistakes end with 'error: ...' on stderr and exit code 2."""
    try:
        code = fn()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        code = 130
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    sys.exit(code or 0)
