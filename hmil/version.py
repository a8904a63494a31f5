"""The installed version of HMIL Studio, in a module of its own so that submodules can name it
without importing the package's public API (``hmil/__init__``)."""

from __future__ import annotations

from importlib import metadata

try:  # set from the git tag when the package is built or installed (setuptools-scm)
    __version__ = metadata.version("hmil-studio")
except metadata.PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
