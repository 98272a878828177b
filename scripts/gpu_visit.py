"""One command for a visit to a CUDA machine: measure the full profile, then nbval under CUDA.

    python scripts/gpu_visit.py --out OUT [--notebooks 07_diffusion 08_guidance] [--cap N]
    python scripts/gpu_visit.py --out OUT --dry-run      # the same pipeline on this CPU

Step 1 runs each chosen notebook (default: every notebook in psets/) in the ``full`` profile on
CUDA and writes the executed notebook to OUT/executed/. ``--cap N`` is the declared shorter
budget for a short visit: the full profile's sizes (models, batches, T, data) with every count
chosen by ``profile.steps`` capped at N (``DGM_DRY_RUN=N``), so each notebook costs seconds to
minutes instead of hours; see the README ("A visit to a GPU") for what it can and cannot show.
Step 2 runs nbval under the smoke profile on every notebook in psets/ (``--nbval`` chooses
others, ``--nbval`` with no name skips it). OUT/gpu_visit.json and OUT/gpu_visit.md then hold,
per notebook: status, wall time, peak CPU memory of the kernel, peak GPU memory
(``torch.cuda.max_memory_allocated`` read inside the kernel) and the notebook's results table,
and the nbval outcome per notebook. The script ends by printing how to commit them.

No internet is needed: MNIST comes from the four raw files in $DGM_DATA_DIR/MNIST/raw (or
data/MNIST/raw) when they were carried with the tree, else from the offline subset
(DGM_DATA=offline); a DGM_DATA already set wins.

Without CUDA the script refuses in one line (exit status 2); ``--dry-run`` runs the same pipeline
on the CPU instead: DGM_DEVICE=cpu and DGM_DRY_RUN=N (``--cap``, default 2) for step 1, nbval on
the CPU for step 2. tests/test_dry_run.py uses ``run_notebook`` to dry-run every notebook.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ROOT = Path(__file__).resolve().parents[1]
PSETS = ROOT / "psets"
MEASURE_TAG = "GPU_VISIT_MEASURE "
MNIST_RAW = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
NO_CUDA = ("gpu_visit: no CUDA device here (torch.cuda.is_available() is False), so the full-profile "
           "runs and nbval under CUDA cannot run; --dry-run runs the same pipeline on this CPU")

# Appended to the notebook in memory (never written out): the kernel's own peaks.
MEASURE_CELL = f"""\
import json as _gv_json, resource as _gv_resource, sys as _gv_sys
_gv_usage = _gv_resource.getrusage(_gv_resource.RUSAGE_SELF)
_gv = {{"peak_rss_mib": _gv_usage.ru_maxrss / 1024, "cpu_s": _gv_usage.ru_utime + _gv_usage.ru_stime}}
_gv_torch = _gv_sys.modules.get("torch")
if _gv_torch is not None and _gv_torch.cuda.is_available() and _gv_torch.cuda.is_initialized():
    _gv["peak_gpu_mib"] = _gv_torch.cuda.max_memory_allocated() / 2**20
    _gv["gpu"] = _gv_torch.cuda.get_device_name()
print({MEASURE_TAG!r} + _gv_json.dumps(_gv))
"""


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"dgm_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


clean_outputs = _load_script("execute_notebooks").clean_outputs  # as for committed notebooks


@contextlib.contextmanager
def environment(**values: str | None):
    """Set (a string) or remove (None) environment variables; restore them afterwards."""
    def apply(settings):
        for k, v in settings.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    before = {k: os.environ.get(k) for k in values}
    try:
        apply(values)
        yield
    finally:
        apply(before)


def data_choice() -> str:
    """DGM_DATA for a machine without internet: the full MNIST files when carried, else offline."""
    if os.environ.get("DGM_DATA", "").strip():
        return os.environ["DGM_DATA"].strip()
    raw = Path(os.environ.get("DGM_DATA_DIR") or ROOT / "data") / "MNIST" / "raw"
    return "auto" if all((raw / f).exists() for f in MNIST_RAW) else "offline"


def results_table(nb) -> str:
    """The text of the last code cell with text output: every notebook ends with its results table."""
    for cell in reversed(nb.cells):
        if cell.cell_type != "code":
            continue
        texts = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                texts.append(out["text"])
            elif "data" in out:
                texts.append(out["data"].get("text/markdown") or out["data"].get("text/plain", ""))
        text = "".join(texts).strip()
        if text:
            return text
    return ""


def run_notebook(path: Path, out_dir: Path, env: dict[str, str | None],
                 cell_timeout: int = 3600) -> dict:
    """Execute the notebook at ``path`` in a fresh kernel with ``env`` set; never touches ``path``.

    The executed notebook (outputs scrubbed as in execute_notebooks.py) goes to
    ``out_dir/<name>.ipynb``. Returns name, status ("ok" or "error"), error (the exception and
    the cell, numbered from 1), wall_s (kernel start included), cpu_s (the kernel's CPU time:
    comparable across machine loads), peak_rss_mib and peak_gpu_mib of the kernel, the load
    average before and after, the three slowest cells and the results table.
    """
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(MEASURE_CELL))
    kernel_env = {"DGM_PROGRESS": "0", "MPLBACKEND": "module://matplotlib_inline.backend_inline",
                  "PYTHONPATH": os.pathsep.join(filter(None, [str(PSETS), os.environ.get("PYTHONPATH")])),
                  **env}
    row = {"name": path.stem, "status": "ok", "error": None, "load_before": os.getloadavg()[0]}
    start = time.perf_counter()
    with environment(**kernel_env):
        client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3", record_timing=True,
                                extra_arguments=["--IPKernelApp.log_level=ERROR"],
                                resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute()
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
            failed = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code" and any(
                o.get("output_type") == "error" for o in c.get("outputs", []))), None)
            first_line = str(err).strip().splitlines()
            row.update(status="error", error=f"{type(err).__name__} in cell "
                       f"{'?' if failed is None else failed + 1}: "
                       f"{_error_summary(nb, failed) or (first_line[-1] if first_line else '')}")
    row["wall_s"] = round(time.perf_counter() - start, 1)
    row["load_after"] = os.getloadavg()[0]
    measured = nb.cells.pop()  # the measuring cell: read, then dropped from the executed copy
    for out in measured.get("outputs", []):
        for line in out.get("text", "").splitlines():
            if line.startswith(MEASURE_TAG):
                row.update(json.loads(line[len(MEASURE_TAG):]))
    row["slowest_cells"] = _slowest_cells(nb)
    row.setdefault("cpu_s", None)
    row["cpu_s"] = row["cpu_s"] and round(row["cpu_s"], 1)
    row.setdefault("peak_rss_mib", None)
    row.setdefault("peak_gpu_mib", None)
    row["peak_rss_mib"] = row["peak_rss_mib"] and round(row["peak_rss_mib"])
    row["peak_gpu_mib"] = row["peak_gpu_mib"] and round(row["peak_gpu_mib"])
    clean_outputs(nb)
    row["results_table"] = results_table(nb)
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / path.name)
    return row


def _slowest_cells(nb, k: int = 3) -> list[list]:
    """[[cell number from 1, seconds], ...] of the k slowest code cells (from nbclient's timing)."""
    from datetime import datetime

    times = []
    for i, cell in enumerate(nb.cells):
        stamps = cell.metadata.get("execution", {})
        start, end = stamps.get("iopub.execute_input"), stamps.get("shell.execute_reply")
        if start and end:
            seconds = (datetime.fromisoformat(end.replace("Z", "+00:00"))
                       - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()
            times.append([i + 1, round(seconds, 1)])
    return sorted(times, key=lambda t: -t[1])[:k]


def _error_summary(nb, index: int | None) -> str:
    if index is None:
        return ""
    for out in nb.cells[index].get("outputs", []):
        if out.get("output_type") == "error":
            return f"{out['ename']}: {out['evalue']}"[:500]
    return ""


def run_nbval(notebooks: list[Path], out: Path, device_env: dict[str, str | None]) -> dict:
    """nbval under the smoke profile on ``notebooks``; per-notebook cell counts from JUnit XML."""
    xml = out / "nbval.xml"
    env = {**os.environ, "DGM_PROFILE": "smoke", "DGM_DATA": data_choice(), "DGM_PROGRESS": "0"}
    env.pop("DGM_DRY_RUN", None)
    env.update({k: v for k, v in device_env.items() if v is not None})
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"--junitxml={xml}", *map(str, notebooks)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    (out / "nbval.log").write_text(proc.stdout + proc.stderr)
    per_nb: dict[str, dict] = {nb.stem: {"passed": 0, "failed": 0, "seconds": 0.0} for nb in notebooks}
    if xml.exists():
        for case in ET.parse(xml).getroot().iter("testcase"):
            name = Path(case.get("file") or case.get("classname", "").replace(".", "/")).stem
            key = next((k for k in per_nb if k in (case.get("classname", "") + name)), None)
            if key is None:
                continue
            bad = case.find("failure") is not None or case.find("error") is not None
            per_nb[key]["failed" if bad else "passed"] += 1
            per_nb[key]["seconds"] += float(case.get("time", 0))
    return {"returncode": proc.returncode, "wall_s": round(time.perf_counter() - start, 1),
            "summary": (proc.stdout.strip().splitlines() or [""])[-1], "notebooks": per_nb}


def markdown_report(report: dict) -> str:
    lines = [f"# GPU visit: {report['device']}", "",
             f"{report['when']} UTC; torch {report['torch']}; profile {report['profile']}; data "
             f"DGM_DATA={report['data']}; host {report['host']}.", "",
             "| notebook | status | wall time | kernel CPU time | peak CPU memory (kernel) | peak GPU memory "
             "| load before → after | slowest cells (number: seconds) |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in report["notebooks"]:
        gpu = "" if r["peak_gpu_mib"] is None else f"{r['peak_gpu_mib']:,} MiB"
        rss = "" if r["peak_rss_mib"] is None else f"{r['peak_rss_mib']:,} MiB"
        cpu = "" if r["cpu_s"] is None else f"{r['cpu_s']:.0f} s"
        slow = ", ".join(f"{i}: {s:.0f} s" for i, s in r["slowest_cells"])
        lines.append(f"| {r['name']} | {r['status']} | {r['wall_s']:.0f} s | {cpu} | {rss} | {gpu} | "
                     f"{r['load_before']:.2f} → {r['load_after']:.2f} | {slow} |")
    for r in report["notebooks"]:
        if r["error"]:
            lines += ["", f"**{r['name']}**: {r['error']}"]
    nbval = report.get("nbval")
    if nbval:
        lines += ["", f"## nbval, smoke profile ({nbval['wall_s']:.0f} s): {nbval['summary']}", "",
                  "| notebook | cells passed | cells failed | seconds |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {k} | {v['passed']} | {v['failed']} | {v['seconds']:.0f} |"
                  for k, v in nbval["notebooks"].items()]
    for r in report["notebooks"]:
        lines += ["", f"## {r['name']}: results table", "", r["results_table"] or "(none printed)"]
    return "\n".join(lines) + "\n"


def notebook_paths(names: list[str] | None) -> list[Path]:
    if names is None:
        return sorted(PSETS.glob("*.ipynb"))
    paths = []
    for name in names:
        p = PSETS / (name if name.endswith(".ipynb") else f"{name}.ipynb")
        if not p.exists():
            raise SystemExit(f"gpu_visit: no notebook {p.relative_to(ROOT)} (names are as in psets/, "
                             f"e.g. 07_diffusion)")
        paths.append(p)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-visit"),
                        help="output folder (default: $OUT, else ./gpu-visit)")
    parser.add_argument("--notebooks", nargs="+", help="notebooks for step 1 (default: all in psets/)")
    parser.add_argument("--cap", type=int, help="cap every profile.steps count at N (the short "
                        "budget); default: none on CUDA, 2 with --dry-run")
    parser.add_argument("--nbval", nargs="*", help="notebooks for step 2 (default: all; no name: skip)")
    parser.add_argument("--dry-run", action="store_true",
                        help="run on the CPU with DGM_DRY_RUN (no GPU needed)")
    parser.add_argument("--cell-timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args(argv)
    import torch  # after argument parsing: --help stays fast

    if not args.dry_run and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    if args.cap is not None and args.cap < 1:
        parser.error(f"--cap must be a positive integer, got {args.cap}")
    cap = args.cap if args.cap is not None else (2 if args.dry_run else None)
    device_env = {"DGM_DEVICE": "cpu"} if args.dry_run else {"DGM_DEVICE": None}
    step1 = notebook_paths(args.notebooks)
    step2 = notebook_paths(args.nbval) if args.nbval != [] else []
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    device = "CPU (dry run)" if args.dry_run else torch.cuda.get_device_name()
    report = {"device": device, "host": platform.node(), "torch": torch.__version__,
              "when": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
              "profile": "full" + (f", counts capped at {cap} (DGM_DRY_RUN={cap})" if cap else ""),
              "data": data_choice(), "notebooks": []}
    env = {"DGM_PROFILE": "full", "DGM_DRY_RUN": str(cap) if cap else None,
           "DGM_DATA": data_choice(), **device_env}
    for path in step1:
        row = run_notebook(path, out / "executed", env, args.cell_timeout)
        report["notebooks"].append(row)
        print(f"{row['name']}: {row['status']} in {row['wall_s']:.0f} s, peak CPU memory "
              f"{row['peak_rss_mib']} MiB, peak GPU memory {row['peak_gpu_mib']} MiB"
              + (f"; {row['error']}" if row["error"] else ""), flush=True)
    if step2:
        report["nbval"] = run_nbval(step2, out, device_env)
        print(f"nbval (smoke) on {len(step2)} notebooks: {report['nbval']['summary']}", flush=True)
    (out / "gpu_visit.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "gpu_visit.md").write_text(markdown_report(report))
    failed = [r["name"] for r in report["notebooks"] if r["status"] != "ok"]
    nbval_failed = bool(step2) and report["nbval"]["returncode"] != 0
    print(f"\nwrote {out / 'gpu_visit.md'}, {out / 'gpu_visit.json'} and {out / 'executed'}/.\n"
          "To commit them from the repository root (the tables always; an executed notebook only "
          "when it ran in the full profile without a cap, replacing the standard run's outputs):\n"
          f"  mkdir -p benchmarks/gpu_visits/{report['when'][:10]} && cp {out}/gpu_visit.md "
          f"{out}/gpu_visit.json benchmarks/gpu_visits/{report['when'][:10]}/\n"
          f"  cp {out}/executed/NAME.ipynb psets/   # and update its header's wall time for full\n"
          "  git add benchmarks/gpu_visits psets && git commit -m 'GPU visit: measured ...'")
    if failed or nbval_failed:
        print(f"FAILED: {', '.join(failed) or ''}{' nbval' if nbval_failed else ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
