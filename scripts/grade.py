"""Grade a problem-set notebook: run it, then report each check cell as passed or failed.

    python scripts/grade.py student/03_vae.ipynb [--json grade.json] [--profile smoke]
                            [--timeout 600] [--executed run.ipynb]

The notebook is executed top to bottom in a fresh Jupyter kernel (nbclient) under the ``smoke``
profile unless ``--profile`` says otherwise, continuing past errors, so that one unsolved problem
does not hide the others. Only that kernel runs the notebook's code; this script only reads the
outputs. The kernel starts in the notebook's folder with psets/ on ``PYTHONPATH`` (so ``import
helpers`` works for an edition in student/ too).

A *check cell* is a code cell whose first non-empty line starts with ``# Check`` (``# Check 3:
against torch.distributions``), or a cell tagged ``check``. Each check cell is one row of the
report, and its *problem* is the cells after the previous check cell up to and including it. A row
passes when the check cell itself ran without error: each problem is graded on its own, since the
notebooks take an earlier problem's function through ``helpers.grading.use`` (the student's when its
check passed, else the course's reference, announced by a ``[grading]`` line that the report shows
as a note under the row). A failing row's message gives the check's own exception (type and
message, and where it was raised when that was in another cell, e.g. a solution cell's
``NotImplementedError``, or a ``ReferenceUsed`` when the solution forwarded to the reference), with
the first earlier error of the problem when there was one; a check that was not reached says where
execution stopped. Cells are numbered from 1, top to bottom, Markdown cells included.

Errors after the last check cell are listed but not graded. The exit status is 0 when every check
passed, 1 when any failed (also when the kernel died: checks that did not run fail), and 2 when the
notebook cannot be read. A failing notebook never makes this script raise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
PSETS = ROOT / "psets"
PROFILES = ("smoke", "standard", "full")
QUIET_KERNEL = ["--IPKernelApp.log_level=ERROR"]  # see execute()

NOTE = "[grading]"  # helpers.grading.NOTE: the prefix of fall-back notices in cell outputs
_CHECK = re.compile(r"^#\s*Check\b")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# IPython's frame header for code run from a cell:
# "Cell In[7], line 4, in AutoEncoder.__init__(self, hidden, code)"
_FRAME = re.compile(r"Cell In\[(\d+)\], line (\d+)(?:, in ([\w.<>]+))?")
_CELL_FILE = re.compile(r"\(\d+\.py, line (\d+)\)")


# ------------------------------------------------------------------------------------------------
# Reading an executed notebook (pure functions, no kernel)
# ------------------------------------------------------------------------------------------------


def is_check(cell) -> bool:
    """A code cell whose first non-empty line starts with ``# Check``, or one tagged ``check``."""
    if cell.get("cell_type") != "code":
        return False
    if "check" in cell.get("metadata", {}).get("tags", []):
        return True
    first = next((line.strip() for line in cell.get("source", "").splitlines() if line.strip()), "")
    return bool(_CHECK.match(first))


def check_name(cell, number: int) -> str:
    """The check's first comment line without ``#`` (``Check 3: against ...``), else ``cell N``."""
    first = next((line.strip() for line in cell.source.splitlines() if line.strip()), "")
    return first.lstrip("#").strip() if first.startswith("#") else f"cell {number}"


def _notes(cell) -> list[str]:
    """The ``[grading]`` lines a cell printed (helpers.grading.use announcing a fall-back)."""
    lines = []
    for out in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
        if out.get("output_type") == "stream":
            text = out.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            lines += [ln.strip() for ln in text.splitlines() if ln.startswith(NOTE)]
    return lines


def _error_of(cell, by_count: dict[int, int]) -> dict | None:
    """The first error output of a cell as {ename, evalue, cell, origin}, or None.

    ``origin`` is the innermost notebook frame of the traceback (cell number, line, function),
    which differs from ``cell`` when the code that raised was defined in another cell.
    """
    if "raises-exception" in cell.get("metadata", {}).get("tags", []):
        return None  # an error the notebook expects (nbclient's convention)
    for out in cell.get("outputs", []):
        if out.get("output_type") != "error":
            continue
        frames = _FRAME.findall(_ANSI.sub("", "\n".join(out.get("traceback", []))))
        origin = None
        if frames:
            count, line, func = frames[-1]
            origin = {"cell": by_count.get(int(count)), "line": int(line), "function": func or None}
        # IPython names a cell's code "<random digits>.py" in SyntaxError messages
        evalue = _CELL_FILE.sub(r"(line \1)", out.get("evalue", ""))
        return {"ename": out.get("ename", "Error"), "evalue": evalue, "origin": origin}
    return None


def describe(err: dict, hint: bool = True) -> str:
    """``Type: message``, where it was raised when that was another cell, and a hint for the
    unsolved-problem and interrupted cases."""
    text = err["ename"] + (f": {err['evalue']}" if err["evalue"] else "")
    origin = err.get("origin")
    if origin and origin["cell"] and origin["cell"] != err["cell"]:
        func = f", {origin['function']}" if origin["function"] not in (None, "<module>") else ""
        text += f" (from cell {origin['cell']}{func}, line {origin['line']})"
    if hint and err["ename"] == "NotImplementedError" and not err["evalue"]:
        text += ": not written yet; replace `raise NotImplementedError()` there with your code"
    elif hint and err["ename"] == "KeyboardInterrupt":
        text += ": the cell was interrupted, probably for running longer than the time limit"
    return text


def summarize(nb, aborted: str | None = None, stopped_at: int | None = None) -> dict:
    """The report of an executed notebook: one row per check cell, and the errors not graded.

    ``aborted`` is why execution stopped early (e.g. the kernel died), or None; ``stopped_at`` the
    number of the cell that was running then (default: the last cell with an execution count).
    """
    by_count = {
        c.execution_count: n
        for n, c in enumerate(nb.cells, 1)
        if c.cell_type == "code" and c.get("execution_count") is not None
    }
    errors = {}
    for n, cell in enumerate(nb.cells, 1):
        if cell.cell_type == "code" and (err := _error_of(cell, by_count)) is not None:
            errors[n] = {**err, "cell": n}
    if aborted and stopped_at is None and by_count:
        stopped_at = by_count[max(by_count)]
    if aborted and stopped_at:  # the cell that was running when the run stopped did not finish
        ename, _, evalue = aborted.partition(": ")
        errors.setdefault(stopped_at, {"ename": ename, "evalue": evalue, "origin": None})
        errors[stopped_at]["cell"] = stopped_at
    rows, start = [], 1
    for n, cell in enumerate(nb.cells, 1):
        if not is_check(cell):
            continue
        upstream = next((errors[m] for m in range(start, n) if m in errors), None)
        own = errors.get(n)
        ran = cell.get("execution_count") is not None or n == stopped_at
        if not ran:
            message = "not run: " + (
                f"execution stopped at cell {stopped_at} ({aborted})"
                if stopped_at
                else aborted or "execution stopped before this cell"
            )
            if upstream and upstream["cell"] != stopped_at:
                message += f"; before that, cell {upstream['cell']} raised {describe(upstream)}"
        elif own and upstream and own["ename"] == "NameError":
            # the check failed on a name the problem's own cells failed to define: show that cause
            message = (
                f"cell {upstream['cell']} raised {describe(upstream)}; "
                f"then this check failed with {describe(own, hint=False)}"
            )
        elif own:
            message = describe(own)
            if upstream:
                message += (
                    f"; earlier in this problem, cell {upstream['cell']} raised "
                    f"{describe(upstream, hint=False)}"
                )
        elif upstream:
            message = (
                f"(cell {upstream['cell']} raised {describe(upstream, hint=False)}; this check "
                f"does not depend on it)"
            )
        else:
            message = ""
        rows.append(
            {
                "name": check_name(cell, n),
                "cell": n,
                # A check is graded on its own: it passes when it ran without error. Errors in the
                # cells before it (a figure drawn with an earlier problem's unfinished code, say)
                # explain a failure but do not cause one; later cells use the reference for an
                # earlier problem that failed (helpers.grading.use), and the notes say so.
                "passed": ran and not own,
                "message": message,
                "error": own,
                "upstream": upstream,
                "notes": [note for m in range(start, n + 1) for note in _notes(nb.cells[m - 1])],
            }
        )
        start = n + 1
    other = [errors[m] for m in sorted(errors) if m >= start]
    passed = sum(r["passed"] for r in rows)
    return {
        "checks": rows,
        "passed": passed,
        "failed": len(rows) - passed,
        "total": len(rows),
        "other_errors": other,
        "aborted": aborted,
    }


def format_report(report: dict) -> str:
    """The table printed for a person: one row per check, then the totals."""
    rows = report["checks"]
    names = [r["name"] if len(r["name"]) <= 40 else r["name"][:39] + "…" for r in rows]
    width = max([len("check")] + [len(n) for n in names])
    lines = [f"{'check':<{width}}  {'cell':>4}  result  message"]
    for name, r in zip(names, rows):
        lines.append(
            f"{name:<{width}}  {r['cell']:>4}  {'pass' if r['passed'] else 'FAIL':<6}  "
            f"{r['message']}".rstrip()
        )
        lines += [f"{'':<{width}}  {'':>4}  {'':<6}  note: {n.removeprefix(NOTE).strip()}"
                  for n in r.get("notes", [])]
    if not rows:
        lines.append("(no check cells: none starts with '# Check' or is tagged 'check')")
    lines.append(
        f"\n{report['passed']} of {report['total']} checks passed, {report['failed']} failed."
    )
    if report["aborted"]:
        lines.append(f"Execution stopped early: {report['aborted']}")
    if report["other_errors"]:
        lines.append("Errors after the last check (not graded):")
        lines += [f"  cell {e['cell']}: {describe(e)}" for e in report["other_errors"]]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Running a notebook
# ------------------------------------------------------------------------------------------------


def execute(path: Path, profile: str = "smoke", timeout: int = 600):
    """Run the notebook at ``path`` in a fresh kernel.

    Errors in cells are recorded as outputs and execution goes on; anything that stops it (a dead
    kernel, a kernel that does not start) is returned as ``aborted`` instead of raised. Returns
    (executed notebook, aborted or None, number of the cell running when it stopped, seconds).
    """
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # stale outputs must not count as a run
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    env = dict(os.environ, DGM_PROFILE=profile)
    env.setdefault("DGM_PROGRESS", "0")
    env.setdefault("MPLBACKEND", "Agg")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PSETS), env.get("PYTHONPATH")) if p)
    client = NotebookClient(
        nb,
        # The kernel listens on 127.0.0.1 only; its start-up warning that TCP traffic is not
        # encrypted is noise for a local run, so the kernel application logs errors only (cell
        # output, warnings from the notebook's code included, is not affected).
        extra_arguments=QUIET_KERNEL,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=True,
        interrupt_on_timeout=True,
        record_timing=False,
        startup_timeout=180,
        resources={"metadata": {"path": str(path.resolve().parent)}},
    )
    started = []  # 0-based index of each cell as its execution starts
    client.on_cell_execute = lambda cell, cell_index: started.append(cell_index)
    start, aborted = time.perf_counter(), None
    try:
        client.execute(env=env)
    except Exception as err:  # noqa: BLE001 (whatever stops the run is reported, not raised)
        first_line = (str(err).strip().splitlines() or [""])[0]
        aborted = f"{type(err).__name__}: {first_line}".rstrip(": ")
    stopped_at = started[-1] + 1 if aborted and started else None
    return nb, aborted, stopped_at, time.perf_counter() - start


def grade(path: Path, profile: str = "smoke", timeout: int = 600) -> tuple[dict, object]:
    """Execute and summarize; returns (report, executed notebook)."""
    nb, aborted, stopped_at, seconds = execute(path, profile, timeout)
    report = {
        "notebook": str(path),
        "profile": profile,
        "seconds": round(seconds, 1),
        "edition": nb.metadata.get("dgm"),
        **summarize(nb, aborted, stopped_at),
    }
    return report, nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    parser.add_argument(
        "--profile", choices=PROFILES, default="smoke", help="run profile (default: smoke)"
    )
    parser.add_argument(
        "--timeout", type=int, default=600, help="seconds allowed per cell (default: 600)"
    )
    parser.add_argument("--executed", type=Path, help="save the executed notebook to this file")
    args = parser.parse_args(argv)
    try:
        nbformat.read(args.notebook, as_version=4)
    except Exception as err:  # noqa: BLE001 (any unreadable file)
        print(
            f"grade.py: cannot read {args.notebook}: {type(err).__name__}: {err}", file=sys.stderr
        )
        return 2
    print(f"Running {args.notebook} (profile {args.profile}) ...", file=sys.stderr, flush=True)
    report, nb = grade(args.notebook, args.profile, args.timeout)
    edition = report["edition"]
    about = (
        f" (student edition of {edition['source']})"
        if isinstance(edition, dict) and "source" in edition
        else ""
    )
    print(f"{args.notebook}{about}, profile {args.profile}, ran in {report['seconds']:.0f} s\n")
    print(format_report(report))
    for target, text in (
        (args.json, json.dumps(report, indent=2, ensure_ascii=False) + "\n"),
        (args.executed, nbformat.writes(nb) + "\n"),
    ):
        if target:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
    return 0 if report["failed"] == 0 and not report["aborted"] else 1


if __name__ == "__main__":
    sys.exit(main())
