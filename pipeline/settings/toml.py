"""TOML parsing: the standard library's tomllib from Python 3.11, else tomli, the same parser released before it
joined the standard library (a dependency on 3.10 only)."""

import sys

if sys.version_info >= (3, 11):
    from tomllib import TOMLDecodeError, loads
else:
    from tomli import TOMLDecodeError, loads

__all__ = ["TOMLDecodeError", "loads"]
