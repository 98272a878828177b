"""A training program for class-conditional diffusion on MNIST and CIFAR-10, built on Lightning.

``python -m diffusion_trainer {train,overfit,quicktest,generate,status} ...``; see
``lectures/training-beyond-the-notebook.md``. It reuses the course's helpers (``helpers.diffusion``
for schedules, ``q_sample``, the loss with label dropout and the guided samplers; ``helpers.nets``
for the U-Net; ``helpers.data`` for MNIST; ``helpers.train`` for atomic, ``weights_only`` files)
and leaves devices, precision, distribution and checkpoint bookkeeping to Lightning.
"""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
try:  # the helpers package lives in psets/ (pytest puts it on the path; a plain run may not)
    import helpers  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO_ROOT / "psets"))
