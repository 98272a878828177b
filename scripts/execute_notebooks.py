"""Execute notebooks in place so their committed outputs come from a real run.

    python scripts/execute_notebooks.py psets/00_setup_check.ipynb [more.ipynb ...]

The profile comes from DGM_PROFILE (default: full on CUDA, standard otherwise). The kernel runs
in the notebook's folder with psets/ on its PYTHONPATH, so a notebook elsewhere (a student
edition in student/) imports the helpers too. Progress bars are switched off, execution
timestamps are not recorded, and this machine's paths and user name are scrubbed from the
outputs, so that re-running changes only what the run itself changed.
"""

from __future__ import annotations

import getpass
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def scrub(text: str) -> str:
    """Replace this machine's paths and user name in an output string."""
    text = text.replace(str(ROOT), ".")
    for path in {str(Path.home()), sys.prefix, sys.base_prefix}:
        if len(path) > 1:
            text = text.replace(path, "<env>" if path != str(Path.home()) else "~")
    text = re.sub(r"/(tmp|var/folders)/[\w./-]+", "<tmp>", text)
    user = getpass.getuser()
    return re.sub(rf"\b{re.escape(user)}\b", "<user>", text) if len(user) > 2 else text


def execute(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    os.environ["DGM_PROGRESS"] = "0"
    # The kernel starts in the notebook's folder; `import helpers` must work from any folder.
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(ROOT / "psets") not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "psets"), *filter(None, paths)])
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    start = time.perf_counter()
    # The kernel listens on 127.0.0.1 only: its warning that TCP is unencrypted is noise here, so
    # the kernel application logs errors only (as in scripts/grade.py; cell output is unaffected).
    NotebookClient(nb, timeout=3600, kernel_name="python3", record_timing=False,
                   extra_arguments=["--IPKernelApp.log_level=ERROR"],
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    clean_outputs(nb)
    nbformat.write(nb, path)
    return seconds


def clean_outputs(nb) -> None:
    """Drop per-run metadata (timings, widget state) and this machine's paths from the outputs."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = scrub(out["text"])
            if "data" in out and "text/plain" in out["data"]:
                out["data"]["text/plain"] = scrub(out["data"]["text/plain"])
    nb.metadata.pop("widgets", None)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for arg in sys.argv[1:]:
        load = os.getloadavg()[0]
        secs = execute(Path(arg))
        print(f"{arg}: executed in {secs:.0f} s (profile {os.environ.get('DGM_PROFILE', 'auto')}; "
              f"load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end)")
