"""Make the student edition of every solution notebook in psets/.

    python scripts/student.py                    # every notebook in psets/ with markers -> student/
    python scripts/student.py psets/03_vae.ipynb --out student

A solution notebook marks what students must write with nbgrader's markers, each on a line of its
own:

* ``### BEGIN SOLUTION`` / ``### END SOLUTION``: in a code cell the region (markers included)
  becomes ``# YOUR CODE HERE`` and ``raise NotImplementedError()`` at the indentation of the BEGIN
  marker, so a solution inside a method body stays valid Python; in a Markdown cell it becomes
  ``YOUR ANSWER HERE``.
* ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS``: the region is removed (cells are kept, even
  when left empty, so cell positions match the solution notebook).

Outputs and execution counts are cleared, and ``metadata.dgm`` records the edition:
``{"edition": "student", "source": "03_vae.ipynb", "fingerprint": ...}`` (a hash of the cells as
written, so that an edition someone has since edited or run is never overwritten). The output is a pure function of the input
(sorted keys, fixed indentation, no timestamps), so regenerating gives the same bytes. Unbalanced or
nested markers, and lines that look like a marker but are not one exactly (``## BEGIN SOLUTION``),
raise ``ValueError`` naming the notebook, the cell and the line. Every edition is checked before it
is written: putting the solution regions back (:func:`restore`) must give the solution's cells.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat.v4.rwbase import rejoin_lines

ROOT = Path(__file__).resolve().parents[1]
PSETS = ROOT / "psets"
OUT = ROOT / "student"

SOLUTION, HIDDEN = "SOLUTION", "HIDDEN TESTS"
_MARKER = re.compile(
    r"^(?P<indent>[ \t]*)### (?P<end>BEGIN|END) (?P<kind>SOLUTION|HIDDEN TESTS)[ \t\r]*$"
)
# A line probably meant as a marker but not exactly one ('## BEGIN SOLUTION', '###end solution').
_NEAR_MARKER = re.compile(
    r"^\s*#+\s*(BEGIN|END)\s*(SOLUTIONS?|HIDDEN\s*TESTS?)\s*#*\s*$", re.IGNORECASE
)
CODE_PLACEHOLDER = ("# YOUR CODE HERE", "raise NotImplementedError()")
ANSWER_PLACEHOLDER = "YOUR ANSWER HERE"


@dataclass(frozen=True)
class Region:
    """Lines ``start`` to ``stop - 1`` of a cell's source (both marker lines included)."""

    kind: str  # SOLUTION or HIDDEN
    start: int
    stop: int
    indent: str


def _where(name: str, index: int, cell, line: int | None = None) -> str:
    at = f"{name}, cell {index + 1} ({cell.cell_type}"
    at += f", id {cell['id']})" if cell.get("id") else ")"
    return at + (f", line {line + 1}" if line is not None else "")


def find_regions(cell, name: str = "<notebook>", index: int = 0) -> list[Region]:
    """The marked regions of one cell, in order.

    Raises ValueError (naming ``name``, the 1-based cell number and line) on an END without its
    BEGIN, a BEGIN without its END, one region inside another, an almost-marker, or markers in a raw
    cell.
    """
    lines = _split(cell.source)
    regions, open_ = [], None  # open_: (kind, line, indent) of the BEGIN not yet closed
    for i, line in enumerate(lines):
        m = _MARKER.match(line)
        if m is None:
            if _NEAR_MARKER.match(line):
                raise ValueError(
                    f"{_where(name, index, cell, i)}: {line.strip()!r} looks like a marker but "
                    f"is not one; write exactly '### BEGIN SOLUTION', '### END SOLUTION', "
                    f"'### BEGIN HIDDEN TESTS' or '### END HIDDEN TESTS' on a line of its own"
                )
            continue
        kind = SOLUTION if m["kind"] == "SOLUTION" else HIDDEN
        if cell.cell_type not in ("code", "markdown"):
            raise ValueError(
                f"{_where(name, index, cell, i)}: markers belong in code or Markdown "
                f"cells, not in a {cell.cell_type} cell"
            )
        if m["end"] == "BEGIN":
            if open_ is not None:
                raise ValueError(
                    f"{_where(name, index, cell, i)}: '### BEGIN {m['kind']}' inside the "
                    f"'### BEGIN {open_[0]}' region opened on line {open_[1] + 1}; markers cannot "
                    f"be nested: close the first region with '### END {open_[0]}' before"
                )
            open_ = (m["kind"], i, m["indent"])
        else:
            if open_ is None:
                raise ValueError(
                    f"{_where(name, index, cell, i)}: '### END {m['kind']}' without a "
                    f"'### BEGIN {m['kind']}' before it in this cell"
                )
            if open_[0] != m["kind"]:
                raise ValueError(
                    f"{_where(name, index, cell, i)}: '### END {m['kind']}' closes the "
                    f"'### BEGIN {open_[0]}' region opened on line {open_[1] + 1}"
                )
            regions.append(Region(kind, open_[1], i + 1, open_[2]))
            open_ = None
    if open_ is not None:
        raise ValueError(
            f"{_where(name, index, cell, open_[1])}: '### BEGIN {open_[0]}' is never "
            f"closed: add '### END {open_[0]}' in the same cell"
        )
    return regions


def all_regions(nb, name: str = "<notebook>") -> list[list[Region]]:
    """``find_regions`` of every cell (one list per cell)."""
    return [find_regions(cell, name, i) for i, cell in enumerate(nb.cells)]


def has_markers(nb, name: str = "<notebook>") -> bool:
    return any(all_regions(nb, name))


def _placeholder(cell, indent: str) -> list[str]:
    if cell.cell_type == "markdown":
        return [indent + ANSWER_PLACEHOLDER]
    return [indent + text for text in CODE_PLACEHOLDER]


def _placeholder_at(lines: list[str], i: int, cell_type: str) -> str | None:
    """The indentation of the placeholder starting at line ``i``, or None if there is none."""
    if cell_type == "markdown":
        stripped = lines[i].lstrip(" \t")
        return lines[i][: len(lines[i]) - len(stripped)] if stripped == ANSWER_PLACEHOLDER else None
    first = lines[i].lstrip(" \t")
    indent = lines[i][: len(lines[i]) - len(first)]
    if (
        first == CODE_PLACEHOLDER[0]
        and i + 1 < len(lines)
        and lines[i + 1] == indent + CODE_PLACEHOLDER[1]
    ):
        return indent
    return None


def _split(source: str) -> list[str]:
    """Lines of a cell's source, split on "\\n" only (``str.splitlines`` would also split on form
    feeds and other separators, and the edition must keep every other character as it is)."""
    return source.removesuffix("\n").split("\n") if source else []


def _join(lines: list[str], trailing_newline: bool) -> str:
    return "\n".join(lines) + ("\n" if trailing_newline and lines else "")


def fingerprint(nb) -> str:
    """A hash of what a person can change in a notebook: each cell's type, source and outputs."""
    cells = [[c.cell_type, c.source, c.get("outputs", [])] for c in nb.cells]
    return hashlib.sha256(json.dumps(cells, sort_keys=True).encode("utf-8")).hexdigest()


def make_student(nb, source: str, keep: frozenset[int] = frozenset()):
    """The student edition of notebook ``nb`` (not modified); ``source`` names it in messages and
    in ``metadata.dgm``. The solution regions of the cells whose 0-based indices are in ``keep``
    stay as they are (the grading tests build editions with some problems solved this way)."""
    out = copy.deepcopy(nb)
    for index, (cell, regions) in enumerate(zip(out.cells, all_regions(nb, source))):
        if index in keep:
            regions = [r for r in regions if r.kind != SOLUTION]
        lines = _split(cell.source)
        for i in range(len(lines)):
            outside = not any(r.start <= i < r.stop for r in regions)
            if outside and _placeholder_at(lines, i, cell.cell_type) is not None:
                raise ValueError(
                    f"{_where(source, index, cell, i)}: the student placeholder "
                    f"{lines[i].strip()!r} already appears outside a solution region; the edition "
                    f"could not be told apart from the solution, so reword that line"
                )
        for r in reversed(regions):  # from the end, so earlier line numbers stay valid
            lines[r.start : r.stop] = _placeholder(cell, r.indent) if r.kind == SOLUTION else []
        cell.source = _join(lines, cell.source.endswith("\n"))
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    out.metadata.pop("widgets", None)
    out.metadata["dgm"] = {"edition": "student", "source": source, "fingerprint": fingerprint(out)}
    return out


def strip_hidden(nb, name: str = "<notebook>"):
    """A copy of solution notebook ``nb`` without its hidden-test regions (all else unchanged)."""
    out = copy.deepcopy(nb)
    for cell, regions in zip(out.cells, all_regions(nb, name)):
        lines = _split(cell.source)
        for r in reversed([r for r in regions if r.kind == HIDDEN]):
            del lines[r.start : r.stop]
        cell.source = _join(lines, cell.source.endswith("\n"))
    return out


def restore(student_nb, solution_nb, name: str = "<notebook>"):
    """Put the solution regions of ``solution_nb`` back into its student edition.

    The k-th placeholder of a cell receives the k-th solution region of the same cell of the
    solution notebook. Hidden tests are not restored (the edition has no trace of them), so the
    result equals ``strip_hidden(solution_nb)`` cell by cell when the edition is right. Raises
    ValueError when the two notebooks' cells or placeholders do not correspond.
    """
    if len(student_nb.cells) != len(solution_nb.cells):
        raise ValueError(
            f"{name}: the student edition has {len(student_nb.cells)} cells, the "
            f"solution {len(solution_nb.cells)}"
        )
    out = copy.deepcopy(student_nb)
    for index, (cell, sol) in enumerate(zip(out.cells, solution_nb.cells)):
        regions = [r for r in find_regions(sol, name, index) if r.kind == SOLUTION]
        sol_lines, lines, new = _split(sol.source), _split(cell.source), []
        i, k = 0, 0
        while i < len(lines):
            indent = _placeholder_at(lines, i, cell.cell_type)
            if indent is None:
                new.append(lines[i])
                i += 1
                continue
            if k == len(regions) or regions[k].indent != indent:
                raise ValueError(
                    f"{_where(name, index, cell, i)}: placeholder without a matching "
                    f"solution region in the solution notebook"
                )
            new.extend(sol_lines[regions[k].start : regions[k].stop])
            i += 1 if cell.cell_type == "markdown" else len(CODE_PLACEHOLDER)
            k += 1
        if k != len(regions):
            raise ValueError(
                f"{_where(name, index, cell)}: {len(regions)} solution regions but "
                f"{k} placeholders in the student edition"
            )
        cell.source = _join(new, cell.source.endswith("\n"))
    return out


def read(path: Path):
    """Read a notebook as stored, without the normalisation (e.g. random cell ids) that
    ``nbformat.read`` may apply, so that the edition depends on the file's content alone."""
    with open(path, encoding="utf-8") as f:
        return rejoin_lines(nbformat.from_dict(json.load(f)))


def dumps(nb) -> str:
    """Jupyter's own layout (sorted keys, one-space indent, sources as line lists) and a final
    newline."""
    return nbformat.writes(nb, version=4) + "\n"


def pset_notebooks(psets: Path = PSETS) -> list[Path]:
    """Every notebook under ``psets``, sorted (helpers/, hidden folders, checkpoints excluded)."""
    return [
        path
        for path in sorted(psets.rglob("*.ipynb"))
        if not any(
            p.startswith(".") or p in ("helpers", "__pycache__")
            for p in path.relative_to(psets).parts
        )
    ]


def solution_notebooks(psets: Path = PSETS) -> list[Path]:
    """The notebooks under ``psets`` that have solution markers."""
    return [path for path in pset_notebooks(psets) if has_markers(read(path), path.name)]


def edition_path(path: Path, out: Path = OUT, psets: Path = PSETS) -> Path:
    """Where the edition of ``path`` goes: the same path relative to psets/, under ``out``."""
    try:
        return out / path.resolve().relative_to(psets.resolve())
    except ValueError:
        return out / path.name


def _source_name(path: Path, psets: Path = PSETS) -> str:
    try:
        return path.resolve().relative_to(psets.resolve()).as_posix()
    except ValueError:
        return path.name


def _changed_since_written(path: Path) -> bool:
    """Whether the notebook at ``path`` differs from the edition this script wrote there: its
    recorded fingerprint no longer matches its cells (edited, or run), or it has none (not ours)."""
    try:
        nb = read(path)
    except (OSError, ValueError):
        return True  # unreadable: do not overwrite what we cannot inspect
    recorded = nb.metadata.get("dgm", {}).get("fingerprint")
    return recorded is None or recorded != fingerprint(nb)


def generate(path: Path, out: Path = OUT, force: bool = False) -> tuple[Path, dict]:
    """Write the student edition of ``path`` under ``out``; return its path and counts.

    An existing file is replaced only when it is exactly an edition this script wrote (its cells
    still match the fingerprint recorded in ``metadata.dgm``): a file that was edited, run, or not
    written by this script may hold someone's work, so it is left alone (ValueError) unless
    ``force``.
    """
    name = _source_name(path)
    nb = read(path)
    edition = make_student(nb, name)
    if [c.source for c in restore(edition, nb, name).cells] != [
        c.source for c in strip_hidden(nb, name).cells
    ]:
        raise RuntimeError(
            f"{name}: the student edition does not round-trip (a bug in this script)"
        )
    target, data = edition_path(path, out), dumps(edition).encode("utf-8")
    if (
        target.exists()
        and not force
        and target.read_bytes() != data
        and _changed_since_written(target)
    ):
        raise ValueError(
            f"{target} differs from the edition this script wrote there (it was edited or run), "
            f"so it may hold someone's work; nothing was written. Move it away, or pass --force "
            f"to overwrite it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target, count_regions(nb, name)


def count_regions(nb, name: str = "<notebook>") -> dict[str, int]:
    """How many code solutions, Markdown answers and hidden-test regions ``nb`` holds."""
    pairs = [(c.cell_type, r.kind) for c, rs in zip(nb.cells, all_regions(nb, name)) for r in rs]
    return {
        "code solutions": pairs.count(("code", SOLUTION)),
        "Markdown answers": pairs.count(("markdown", SOLUTION)),
        "hidden tests": sum(kind == HIDDEN for _, kind in pairs),
    }


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return path.resolve().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "notebooks",
        nargs="*",
        type=Path,
        help="solution notebooks (default: every notebook in psets/ with markers)",
    )
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (default: student/)")
    parser.add_argument(
        "--force", action="store_true", help="overwrite editions that were edited or run since they were written (work in them)"
    )
    args = parser.parse_args(argv)
    try:
        paths = args.notebooks or solution_notebooks()
        for path in paths:
            target, counts = generate(path, args.out, args.force)
            shown = ", ".join(f"{v} {k}" for k, v in counts.items())
            print(f"{_shown(path)} -> {_shown(target)} ({shown})")
    except (ValueError, OSError, json.JSONDecodeError) as err:
        print(f"student.py: {err}", file=sys.stderr)
        return 1
    if not paths:
        print("no notebook with solution markers found in psets/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
