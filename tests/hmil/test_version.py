"""The version: one value, read from the installed distribution."""

from __future__ import annotations

from importlib import metadata

import hmil
from hmil.version import __version__


def test_the_package_and_its_submodules_name_one_version() -> None:
    assert hmil.__version__ is __version__
    assert __version__ == metadata.version("hmil-studio")  # the test venv installs hmil
    assert __version__[0].isdigit()
