"""Root pytest configuration: tests and notebooks run under the smoke profile by default.

Set here (not only in the Makefile) so that plain `pytest` and `pytest --nbval psets` get it
too; the notebook kernels nbval starts inherit this environment.
"""

import os

import pytest

os.environ.setdefault("DGM_PROFILE", "smoke")
os.environ.setdefault("DGM_PROGRESS", "0")  # no progress bars in executed test notebooks


def pytest_configure(config):
    """Stop at once on an unknown DGM_PROFILE, rather than in every test and notebook."""
    from helpers import env  # psets/ is on the path (pyproject.toml: pythonpath)

    try:
        env.get_profile()
    except ValueError as err:
        raise pytest.UsageError(str(err)) from None
