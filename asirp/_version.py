"""The installed version of ASIRP."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("asirp")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
