"""Root pytest configuration: tests and notebooks run under the smoke profile by default.

Set here (not only in the Makefile) so that plain `pytest` and `pytest --nbval psets` get it
too; the notebook kernels nbval starts inherit this environment.
"""

import os

os.environ.setdefault("DGM_PROFILE", "smoke")
os.environ.setdefault("DGM_PROGRESS", "0")  # no progress bars in executed test notebooks
