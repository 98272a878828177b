"""Dry runs of the full profile on the CPU, and the GPU-visit script without a GPU.

Every notebook in psets/ (found by glob: new ones join by themselves) is executed with
DGM_PROFILE=full DGM_DRY_RUN=2 DGM_DEVICE=cpu DGM_DATA=offline: the full profile's models,
batches, T and data pipeline, with every ``profile.steps`` count capped at 2. A shape, dtype,
device or memory mistake at full size fails here, before a GPU is lent. The executed notebooks
go to a temporary folder (psets/ is never written); each notebook's wall time and the peak
memory of its kernel are written to test-artifacts/dry-run.md.

All of them run in the README's test command: the longest, 05 (pixel-by-pixel sampling of an
8000-wide MADE), 07 and 08 (DDPM's T = 1000 network calls at base width 64), took 360 s, 289 s and
98 s with one torch thread on the 2-core CPU while other jobs ran (load average 1.2 to 3.8; see
the README). ``make dryrun`` runs only these tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "psets").glob("*.ipynb"))
DRY_ENV = {"DGM_PROFILE": "full", "DGM_DRY_RUN": "2", "DGM_DEVICE": "cpu", "DGM_DATA": "offline"}
ARTIFACTS = ROOT / "test-artifacts"


def _gpu_visit():
    spec = importlib.util.spec_from_file_location("dgm_gpu_visit", ROOT / "scripts" / "gpu_visit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_visit = _gpu_visit()


@pytest.fixture(scope="module")
def dry_run_table():
    rows = []
    yield rows
    if rows:  # one table per session: what each dry run cost on this machine
        ARTIFACTS.mkdir(exist_ok=True)
        lines = ["| notebook | status | wall time | kernel CPU time | peak memory of the kernel | "
                 "load before → after | slowest cells (number: seconds) |",
                 "| --- | --- | ---: | ---: | ---: | --- | --- |"]
        lines += [f"| {r['name']} | {r['status']} | {r['wall_s']:.0f} s | {r['cpu_s']} s | "
                  f"{r['peak_rss_mib']} MiB | {r['load_before']:.2f} → {r['load_after']:.2f} | "
                  + ", ".join(f"{i}: {t:.0f} s" for i, t in r["slowest_cells"]) + " |" for r in rows]
        lines.append(f"| total | | {sum(r['wall_s'] for r in rows):.0f} s | "
                     f"{sum(r['cpu_s'] or 0 for r in rows):.0f} s | "
                     f"max {max(r['peak_rss_mib'] or 0 for r in rows)} MiB | | |")
        (ARTIFACTS / "dry-run.md").write_text("\n".join(lines) + "\n")


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_full_profile_dry_run(notebook, tmp_path, dry_run_table):
    before = notebook.read_bytes()
    row = gpu_visit.run_notebook(notebook, tmp_path, DRY_ENV)
    dry_run_table.append(row)
    print(f"{row['name']}: {row['status']} in {row['wall_s']:.0f} s, kernel peak memory "
          f"{row['peak_rss_mib']} MiB (load {row['load_before']:.2f} → {row['load_after']:.2f})")
    assert row["status"] == "ok", f"{notebook.name} failed its full-profile dry run: {row['error']}"
    assert notebook.read_bytes() == before, "the dry run must not write to psets/"
    executed = nbformat.read(tmp_path / notebook.name, as_version=4)
    header = next(c for c in executed.cells if c.cell_type == "code" and c.get("outputs"))
    shown = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                    for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []))
    # env.describe in each notebook's first cells names the profile: the kernel saw the dry run
    assert "full (dry run: counts capped at 2)" in shown, (
        f"{notebook.name}: the kernel did not run the full profile's dry run (first outputs: "
        f"{header.outputs[:1]})")
    assert row["peak_rss_mib"] and row["peak_rss_mib"] > 50, "the kernel's peak memory was not measured"


def _run_script(*args, env_extra=None):
    env = {**os.environ, "DGM_DATA": "offline", **(env_extra or {})}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_visit.py"), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_gpu_visit_refuses_without_cuda_in_one_line(tmp_path):
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so the refusal shows on every machine
    proc = _run_script("--out", str(tmp_path), env_extra={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [gpu_visit.NO_CUDA], proc.stderr
    assert "--dry-run" in lines[0] and not any(tmp_path.iterdir()), "nothing may run or be written"


def test_gpu_visit_names_a_missing_notebook(tmp_path):
    proc = _run_script("--out", str(tmp_path), "--dry-run", "--notebooks", "99_nothing")
    assert proc.returncode != 0 and "psets/99_nothing.ipynb" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_gpu_visit_dry_run_pipeline_on_one_notebook(tmp_path):
    name = "00_setup_check"
    before = (ROOT / "psets" / f"{name}.ipynb").read_bytes()
    proc = _run_script("--out", str(tmp_path), "--dry-run", "--notebooks", name, "--nbval", name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "gpu_visit.json").read_text())
    [row] = report["notebooks"]
    assert row["name"] == name and row["status"] == "ok" and row["wall_s"] > 0
    assert row["peak_rss_mib"] > 50 and row["peak_gpu_mib"] is None  # CPU: no GPU memory to report
    assert "images/s" in row["results_table"]  # 00's last cell: the batching speed
    assert report["profile"] == "full, counts capped at 2 (DGM_DRY_RUN=2)"
    assert report["nbval"]["returncode"] == 0
    counts = report["nbval"]["notebooks"][name]
    assert counts["failed"] == 0 and counts["passed"] >= 5, counts  # nbval checked its cells
    md = (tmp_path / "gpu_visit.md").read_text()
    assert f"| {name} | ok |" in md and "## nbval" in md
    assert (tmp_path / "executed" / f"{name}.ipynb").exists()
    assert "To commit them" in proc.stdout
    assert (ROOT / "psets" / f"{name}.ipynb").read_bytes() == before
