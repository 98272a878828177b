"""Student editions (scripts/student.py) and the grader (scripts/grade.py).

Every notebook in psets/ with solution markers is found by glob at collection time, so a new
problem set is covered without editing this file. Per notebook:

* the solution notebook, graded, passes every check and raises nowhere;
* its student edition holds no marker and no line of any solution region, has no outputs, and is
  marked in ``metadata.dgm``; run, its first error is the NotImplementedError of the first
  solution cell, and the grader fails the problems (exit 1) without raising itself;
* putting the solution regions back into the edition gives the solution's cells; generating twice
  gives the same bytes.

Whole notebooks are executed once each per session (module-scoped fixtures), through the grader's
command line, under the smoke profile and the offline data (unless the environment says otherwise).
The marker parsing and the report logic are unit-tested on small synthetic notebooks; one tiny
notebook whose kernel dies checks that the grader still reports instead of raising.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"dgm_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


student = _load("student")
grade = _load("grade")


def _solution_notebooks() -> list[Path]:
    """Like ``student.solution_notebooks``, but a notebook that cannot be parsed (bad markers, a
    half-written file) is kept, so that its own tests fail with the message instead of the whole
    module failing to collect."""
    found = []
    for path in student.pset_notebooks():
        try:
            if student.has_markers(student.read(path), path.name):
                found.append(path)
        except ValueError:  # json.JSONDecodeError is a ValueError too
            found.append(path)
    return found


SOLUTIONS = _solution_notebooks()
MARKERS = (
    "### BEGIN SOLUTION",
    "### END SOLUTION",
    "### BEGIN HIDDEN TESTS",
    "### END HIDDEN TESTS",
)


def _id(path: Path) -> str:
    return path.relative_to(student.PSETS).as_posix()


def _grade_cli(notebook: Path, workdir: Path) -> dict:
    """Run scripts/grade.py on ``notebook``: exit code, output, JSON report, executed notebook."""
    env = dict(os.environ)
    env.setdefault("DGM_DATA", "offline")
    report, executed = workdir / "report.json", workdir / "executed.ipynb"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "grade.py"),
            str(notebook),
            "--json",
            str(report),
            "--executed",
            str(executed),
            "--profile",
            env.get("DGM_PROFILE", "smoke"),
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    return {
        "rc": proc.returncode,
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "report": json.loads(report.read_text()) if report.exists() else None,
        "nb": nbformat.read(executed, as_version=4) if executed.exists() else None,
    }


def _region_lines(nb, name: str) -> tuple[set[str], set[str]]:
    """Stripped non-blank lines inside solution regions, and those outside every region."""
    inside, outside = set(), set()
    for cell, regions in zip(nb.cells, student.all_regions(nb, name)):
        for i, line in enumerate(student._split(cell.source)):
            region = next((r for r in regions if r.start <= i < r.stop), None)
            if line.strip():
                (inside if region and region.kind == student.SOLUTION else outside).add(
                    line.strip()
                )
    return inside, outside


def _first_solution_cell(nb, name: str) -> int:
    """1-based number of the first code cell with a solution region."""
    return next(
        n
        for n, (cell, regions) in enumerate(zip(nb.cells, student.all_regions(nb, name)), 1)
        if cell.cell_type == "code" and any(r.kind == student.SOLUTION for r in regions)
    )


# ------------------------------------------------------------------------------------------------
# Whole notebooks: one run of each solution notebook and of each student edition per session
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=SOLUTIONS, ids=_id)
def solution(request):
    path = request.param
    nb = student.read(path)
    student.all_regions(nb, _id(path))  # bad markers: every test of this notebook says why
    return path, nb


@pytest.fixture(scope="module")
def edition(solution, tmp_path_factory):
    path, _ = solution
    target, _ = student.generate(path, tmp_path_factory.mktemp("student"))
    return target, student.read(target)


@pytest.fixture(scope="module")
def solution_run(solution, tmp_path_factory):
    return _grade_cli(solution[0], tmp_path_factory.mktemp("grade-solution"))


@pytest.fixture(scope="module")
def edition_run(edition, tmp_path_factory):
    return _grade_cli(edition[0], tmp_path_factory.mktemp("grade-edition"))


def test_solution_notebooks_are_found_by_glob():
    names = [_id(p) for p in SOLUTIONS]
    assert "03_vae.ipynb" in names
    assert "00_setup_check.ipynb" not in names  # no markers, no edition
    assert student.solution_notebooks() == SOLUTIONS


def _edition_of(tmp_path, body="x = 1"):
    src = tmp_path / "psets" / "p.ipynb"
    src.parent.mkdir(exist_ok=True)
    nbformat.write(_nb(new_code_cell(f"### BEGIN SOLUTION\n{body}\n### END SOLUTION")), src)
    target, _ = student.generate(src, tmp_path / "student")
    return src, target


def test_an_unchanged_edition_is_regenerated(tmp_path):
    src, target = _edition_of(tmp_path)
    assert student.generate(src, tmp_path / "student")[0] == target  # same bytes: fine
    # the solution changed, the edition was never touched: it is replaced by the new one
    nbformat.write(_nb(new_code_cell("# new intro\n### BEGIN SOLUTION\nx = 2\n### END SOLUTION")), src)
    student.generate(src, tmp_path / "student")
    assert "# new intro" in target.read_text()


@pytest.mark.parametrize("ran", [True, False], ids=["edited-with-outputs", "edited-without-outputs"])
def test_an_edited_edition_is_never_overwritten(tmp_path, ran):
    src, target = _edition_of(tmp_path)
    worked = nbformat.read(target, as_version=4)
    worked.cells[0].source = "x = 2  # my answer"
    if ran:
        worked.cells[0].execution_count = 1
        worked.cells[0].outputs = [new_output("stream", name="stdout", text="2\n")]
    nbformat.write(worked, target)
    before = target.read_bytes()
    with pytest.raises(ValueError, match=r"p\.ipynb differs from the edition .* pass --force"):
        student.generate(src, tmp_path / "student")
    assert target.read_bytes() == before  # nothing written
    assert student.main([str(src), "--out", str(tmp_path / "student")]) == 1
    assert target.read_bytes() == before
    student.generate(src, tmp_path / "student", force=True)
    assert "raise NotImplementedError()" in target.read_text()


def test_a_file_not_written_by_the_script_is_not_overwritten(tmp_path):
    src, target = _edition_of(tmp_path)
    nb = nbformat.read(target, as_version=4)
    del nb.metadata["dgm"]["fingerprint"]  # e.g. someone's own notebook saved under that name
    nbformat.write(nb, target)
    with pytest.raises(ValueError, match="differs from the edition"):
        student.generate(src, tmp_path / "student")


def test_solution_notebook_passes_every_check(solution, solution_run):
    path, nb = solution
    run, report = solution_run, solution_run["report"]
    assert report is not None, f"the grader wrote no report:\n{run['stderr'][-3000:]}"
    checks = [n for n, c in enumerate(nb.cells, 1) if grade.is_check(c)]
    assert checks, f"{_id(path)} has no check cell ('# Check ...' or tag 'check')"
    assert [r["cell"] for r in report["checks"]] == checks
    failed = [f"{r['name']}: {r['message']}" for r in report["checks"] if not r["passed"]]
    assert not failed and run["rc"] == 0, "\n".join(failed) + "\n" + run["stdout"][-3000:]
    errors = [
        (n, o.ename, o.evalue)
        for n, c in enumerate(run["nb"].cells, 1)
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]
    assert not errors and not report["aborted"], (errors, report["aborted"])
    assert f"{len(checks)} of {len(checks)} checks passed" in run["stdout"]


def test_edition_holds_no_solution(solution, edition):
    path, nb = solution
    _, ed = edition
    name = _id(path)
    inside, outside = _region_lines(nb, name)
    assert inside, f"{name}: no solution lines found"
    assert len(ed.cells) == len(nb.cells)
    for n, cell in enumerate(ed.cells, 1):
        lines = {line.strip() for line in cell.source.splitlines()}
        assert not lines & set(MARKERS), f"cell {n} still has a marker line"
        if cell.cell_type == "code":
            assert not any(m in cell.source for m in MARKERS), f"cell {n} mentions a marker"
            assert cell.outputs == [] and cell.execution_count is None, f"cell {n} has outputs"
        # a line of a solution region may appear only if the solution has it outside regions too
        leaked = (lines & inside) - outside
        assert not leaked, f"cell {n} of the edition holds solution lines: {sorted(leaked)}"
    assert ed.metadata["dgm"] == {
        "edition": "student", "source": name, "fingerprint": student.fingerprint(ed)
    }
    # the header speaks to a student, who has neither the solutions nor the committed outputs
    header = next(c.source for c in ed.cells if c.cell_type == "markdown").lower()
    for phrase in ("solution edition", "outputs below", "committed outputs"):
        assert phrase not in header, f"the student edition's header mentions {phrase!r}"
    counts = student.count_regions(nb, name)
    code = "\n".join(c.source for c in ed.cells if c.cell_type == "code")
    assert code.count(student.CODE_PLACEHOLDER[1]) >= counts["code solutions"]


def test_edition_run_stops_at_first_problem(solution, edition_run):
    path, nb = solution
    first = _first_solution_cell(nb, _id(path))
    errors = [
        (n, o)
        for n, c in enumerate(edition_run["nb"].cells, 1)
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]
    assert errors, "the student edition ran without any error"
    n, out = errors[0]
    assert out.ename == "NotImplementedError", f"first error, cell {n}: {out.ename}: {out.evalue}"
    # raised in the first solution cell, or in code defined there (a method called by its check)
    by_count = {
        c.execution_count: m
        for m, c in enumerate(edition_run["nb"].cells, 1)
        if c.cell_type == "code" and c.execution_count is not None
    }
    origin = grade._error_of(edition_run["nb"].cells[n - 1], by_count)["origin"]
    raised_in = origin["cell"] if origin else n
    assert raised_in == first, (
        f"the first NotImplementedError came from cell {raised_in}, not {first}"
    )


def test_grader_fails_the_edition(solution, edition_run):
    path, nb = solution
    run, report = edition_run, edition_run["report"]
    assert report is not None and "Traceback" not in run["stderr"], run["stderr"][-3000:]
    assert run["rc"] == 1 and not report["aborted"]
    assert report["total"] == sum(grade.is_check(c) for c in nb.cells) > 0
    assert report["failed"] >= 1
    # every check after a solution region of its own problem fails, naming NotImplementedError
    regions, start = student.all_regions(nb, _id(path)), 0
    for row in report["checks"]:
        if any(r.kind == student.SOLUTION for rs in regions[start : row["cell"]] for r in rs):
            assert not row["passed"] and "NotImplementedError" in row["message"], row
        start = row["cell"]
    assert f"0 of {report['total']} checks passed" in run["stdout"] or report["passed"] > 0


def test_round_trip_gives_back_the_solution(solution, edition):
    path, nb = solution
    restored = student.restore(edition[1], nb, _id(path))
    expected = student.strip_hidden(nb, _id(path))
    assert [c.cell_type for c in restored.cells] == [c.cell_type for c in expected.cells]
    for n, (got, want) in enumerate(zip(restored.cells, expected.cells), 1):
        assert got.source == want.source, f"cell {n} differs after the round trip"


def test_generation_is_deterministic(solution, edition, tmp_path):
    path, _ = solution
    assert student.main([str(path), "--out", str(tmp_path)]) == 0
    again = tmp_path / edition[0].name
    assert again.read_bytes() == edition[0].read_bytes()
    assert (
        student.dumps(student.make_student(student.read(path), _id(path))).encode()
        == again.read_bytes()
    )


# ------------------------------------------------------------------------------------------------
# Marker parsing on small synthetic notebooks
# ------------------------------------------------------------------------------------------------

METHOD = """class Model:
    def __init__(self, n):
        self.n = n
        ### BEGIN SOLUTION
        self.w = [0] * n
        self.b = 0
        ### END SOLUTION

    def forward(self, x):
        ### BEGIN SOLUTION
        return sum(self.w) + x
        ### END SOLUTION
"""


def _nb(*cells):
    nb = new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def test_code_regions_keep_the_indentation_of_their_markers():
    nb = _nb(new_code_cell(METHOD, execution_count=3, outputs=[new_output("stream", text="x\n")]))
    ed = student.make_student(nb, "demo.ipynb")
    src = ed.cells[0].source
    assert "        # YOUR CODE HERE\n        raise NotImplementedError()\n\n    def forward" in src
    assert src.endswith("        # YOUR CODE HERE\n        raise NotImplementedError()\n")
    assert "self.w" not in src and "BEGIN" not in src
    ast.parse(src)  # still valid Python
    assert ed.cells[0].outputs == [] and ed.cells[0].execution_count is None
    assert ed.metadata["dgm"]["edition"] == "student"
    assert ed.metadata["dgm"]["source"] == "demo.ipynb"
    assert nb.cells[0].source == METHOD and nb.cells[0].outputs  # the input is left alone
    assert student.restore(ed, nb).cells[0].source == METHOD


def test_markdown_answers_and_hidden_tests():
    answer = (
        "Why?\n\n### BEGIN SOLUTION\nBecause the KL term\npulls codes together.\n### END SOLUTION\n"
    )
    hidden = (
        "assert f(1) == 1\n### BEGIN HIDDEN TESTS\nassert f(2) == 4\n"
        "### END HIDDEN TESTS\nprint('ok')"
    )
    only_hidden = "### BEGIN HIDDEN TESTS\nassert f(3) == 9\n### END HIDDEN TESTS\n"
    nb = _nb(new_markdown_cell(answer), new_code_cell(hidden), new_code_cell(only_hidden))
    ed = student.make_student(nb, "demo.ipynb")
    assert ed.cells[0].source == "Why?\n\nYOUR ANSWER HERE\n"
    assert ed.cells[1].source == "assert f(1) == 1\nprint('ok')"  # no trailing newline, as before
    assert ed.cells[2].source == "" and len(ed.cells) == 3  # cells are kept, so positions match
    assert student.count_regions(nb) == {
        "code solutions": 0,
        "Markdown answers": 1,
        "hidden tests": 2,
    }
    restored = student.restore(ed, nb)
    assert restored.cells[0].source == answer
    assert [c.source for c in restored.cells] == [c.source for c in student.strip_hidden(nb).cells]


@pytest.mark.parametrize(
    "source, match",
    [
        ("x = 1\n### BEGIN SOLUTION\ny = 2\n", r"'### BEGIN SOLUTION' is never closed"),
        ("y = 2\n### END SOLUTION\n", r"'### END SOLUTION' without a '### BEGIN SOLUTION'"),
        (
            "### BEGIN SOLUTION\ny = 2\n### END HIDDEN TESTS\n",
            r"closes the '### BEGIN SOLUTION' region",
        ),
        (
            "### BEGIN SOLUTION\n### BEGIN SOLUTION\ny = 2\n### END SOLUTION\n### END SOLUTION\n",
            r"line 2: '### BEGIN SOLUTION' inside .* cannot be\s+nested",
        ),
        (
            "### BEGIN SOLUTION\n ### BEGIN HIDDEN TESTS\n ### END HIDDEN TESTS\n### END SOLUTION",
            r"'### BEGIN HIDDEN TESTS' inside the '### BEGIN SOLUTION' region opened on line 1",
        ),
        ("## BEGIN SOLUTION\ny = 2\n## END SOLUTION\n", r"looks like a marker but is not one"),
        ("###end solution\n", r"looks like a marker"),
        (
            "# YOUR CODE HERE\nraise NotImplementedError()\n",
            r"placeholder .* already appears outside",
        ),
    ],
)
def test_bad_markers_raise_a_clear_value_error(source, match):
    nb = _nb(new_markdown_cell("intro"), new_code_cell(source))
    nb.cells[1]["id"] = "abc"
    with pytest.raises(ValueError, match=match) as info:
        student.make_student(nb, "psets/demo.ipynb")
    assert str(info.value).startswith("psets/demo.ipynb, cell 2 (code, id abc), line ")


def test_markers_inside_prose_do_not_count():
    text = (
        "Write code between `### BEGIN SOLUTION` and `### END SOLUTION`.\n"
        "# Begin solution of the ODE"
    )
    nb = _nb(new_markdown_cell(text), new_code_cell("x = 1"))
    assert not student.has_markers(nb)
    assert student.make_student(nb, "n.ipynb").cells[0].source == text


def test_solution_notebooks_glob(tmp_path):
    (tmp_path / "helpers").mkdir()
    (tmp_path / "sub").mkdir()
    with_markers = _nb(new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION"))
    for rel, nb in [
        ("a.ipynb", with_markers),
        ("b.ipynb", _nb(new_code_cell("x = 1"))),
        ("helpers/c.ipynb", with_markers),
        ("sub/d.ipynb", with_markers),
    ]:
        nbformat.write(nb, tmp_path / rel)
    found = [p.relative_to(tmp_path).as_posix() for p in student.solution_notebooks(tmp_path)]
    assert found == ["a.ipynb", "sub/d.ipynb"]


def test_restore_rejects_an_edition_of_another_notebook():
    nb = _nb(new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION"))
    other = _nb(
        new_code_cell(
            "# YOUR CODE HERE\nraise NotImplementedError()\n# YOUR CODE HERE\n"
            "raise NotImplementedError()"
        )
    )
    with pytest.raises(ValueError, match="placeholder without a matching solution region"):
        student.restore(other, nb)
    with pytest.raises(ValueError, match="1 solution regions but 0 placeholders"):
        student.restore(_nb(new_code_cell("x = 1")), nb)


# ------------------------------------------------------------------------------------------------
# The grader's report, on executed notebooks written by hand (no kernel)
# ------------------------------------------------------------------------------------------------


def _error(ename, evalue, *frames):
    """An error output whose traceback names notebook frames like IPython does (with colours)."""
    tb = [
        f"\x1b[36mCell\x1b[39m \x1b[32mIn[{count}]\x1b[39m\x1b[32m, line {line}\x1b[39m"
        + (f", in \x1b[36m{func}\x1b[39m(x)" if func else "")
        + "\n"
        for count, line, func in frames
    ]
    return new_output("error", ename=ename, evalue=evalue, traceback=tb + [f"{ename}: {evalue}"])


def _ran(source, count, *outputs, **kw):
    return new_code_cell(source, execution_count=count, outputs=list(outputs), **kw)


def test_check_cells_are_found_by_comment_or_tag():
    assert grade.is_check(new_code_cell("\n  \n# Check 3: against torch.distributions\nx = 1"))
    assert grade.is_check(new_code_cell("#Check\nassert True"))
    assert grade.is_check(new_code_cell("assert x", metadata={"tags": ["check"]}))
    assert not grade.is_check(new_code_cell("# Checkpoints are written atomically\nx = 1"))
    assert not grade.is_check(new_code_cell("x = 1\n# Check 1"))
    assert not grade.is_check(new_markdown_cell("# Check 1"))
    assert grade.check_name(new_code_cell("# Check 3: KL\nx"), 5) == "Check 3: KL"
    assert grade.check_name(new_code_cell("assert x", metadata={"tags": ["check"]}), 5) == "cell 5"


def test_report_names_upstream_errors_and_unfinished_solutions():
    nb = _nb(
        new_markdown_cell("# Problem set"),
        _ran("def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()", 1),  # cell 2
        _ran(
            "# Check 1\nassert f(2) == 4",
            2,
            _error("NotImplementedError", "", (2, 2, None), (1, 3, "f")),
        ),  # cell 3
        _ran(
            "model = train(", 3, _error("SyntaxError", "incomplete input", (3, 1, None))
        ),  # cell 4
        _ran(
            "# Check 2\nassert model.ok",
            4,
            _error("NameError", "name 'model' is not defined", (4, 2, None)),
        ),  # cell 5
        _ran("y = 3", 5),  # cell 6
        _ran(
            "assert y == 4, 'expected y = 4, got 3'",
            6,
            _error("AssertionError", "expected y = 4, got 3", (6, 1, None)),
            metadata={"tags": ["check"]},
        ),  # cell 7
        _ran("z = 1", 7),
        _ran("# Check 4\nassert z == 1", 8),  # cell 9
        _ran("results()", 9, _error("ValueError", "empty", (9, 1, None))),  # cell 10
    )
    report = grade.summarize(nb)
    rows = {r["cell"]: r for r in report["checks"]}
    assert list(rows) == [3, 5, 7, 9] and report["passed"] == 1 and report["failed"] == 3
    assert rows[3]["message"].startswith(
        "NotImplementedError (from cell 2, f, line 3): not written yet"
    )
    assert rows[5]["message"].startswith(
        "cell 4 raised SyntaxError: incomplete input; then this "
        "check failed with NameError: name 'model' is not defined"
    )
    assert (
        rows[7]["message"] == "AssertionError: expected y = 4, got 3"
        and rows[7]["name"] == "cell 7"
    )
    assert rows[9]["passed"] and rows[9]["message"] == ""
    assert [e["cell"] for e in report["other_errors"]] == [10]
    table = grade.format_report(report)
    assert "1 of 4 checks passed, 3 failed." in table and "cell 10: ValueError: empty" in table


def test_report_grades_a_check_on_its_own_despite_an_earlier_error_and_checks_not_run():
    nb = _nb(
        _ran("setup()", 1, _error("RuntimeError", "no data", (1, 1, None))),
        _ran("# Check 1\nassert True", 2),
        _ran("train()", 3),  # was running when the kernel died
        new_code_cell("# Check 2\nassert True"),  # never ran
    )
    report = grade.summarize(nb, aborted="DeadKernelError: Kernel died")
    rows = report["checks"]
    assert rows[0]["passed"]  # its own assertions passed: an earlier error only explains
    assert rows[0]["message"] == (
        "(cell 1 raised RuntimeError: no data; this check does not depend on it)"
    )
    assert not rows[1]["passed"]
    assert rows[1]["message"] == (
        "not run: execution stopped at cell 3 (DeadKernelError: Kernel died)"
    )
    assert "Execution stopped early: DeadKernelError" in grade.format_report(report)
    # the kernel died in the check itself, before it reported an execution count
    rows = grade.summarize(nb, "DeadKernelError: Kernel died", stopped_at=4)["checks"]
    assert not rows[1]["passed"] and rows[1]["message"] == "DeadKernelError: Kernel died"


def test_grader_reports_instead_of_raising_when_the_kernel_dies(tmp_path):
    nb = _nb(
        new_code_cell("x = 1"),
        new_code_cell("# Check 1\nassert x == 1"),
        new_code_cell("y = undefined_name"),
        new_code_cell("# Check 2\nassert y == 2"),
        new_code_cell("assert x == 2, f'expected x == 2, got {x}'", metadata={"tags": ["check"]}),
        new_code_cell("# Check 4: the kernel dies here\nimport os\nos._exit(1)"),
        new_code_cell("# Check 5\nassert True"),
    )
    path = tmp_path / "dies.ipynb"
    nbformat.write(nb, path)
    run = _grade_cli(path, tmp_path)
    assert run["rc"] == 1 and "Traceback" not in run["stderr"], run["stderr"][-3000:]
    assert "without encryption" not in run["stderr"], "kernels must not run over plain TCP"
    rows = run["report"]["checks"]
    assert [r["passed"] for r in rows] == [True, False, False, False, False]
    assert rows[1]["message"].startswith(
        "cell 3 raised NameError: name 'undefined_name' is not defined"
    )
    assert rows[2]["message"] == "AssertionError: expected x == 2, got 1"
    assert rows[3]["message"].startswith("DeadKernelError")  # the check that killed the kernel
    assert rows[4]["message"].startswith("not run: execution stopped at cell 6 (DeadKernelError")
    assert "1 of 5 checks passed, 4 failed." in run["stdout"]


# ------------------------------------------------------------------------------------------------
# Each problem graded on its own, and no solution passes by calling the reference
# ------------------------------------------------------------------------------------------------


def _problems(nb, name: str) -> dict[int, set[int]]:
    """Cell number of each check whose problem has code to write -> the 0-based indices of the
    cells of its problem (after the previous check, up to this one) that hold code solutions."""
    problems, start = {}, 0
    regions = student.all_regions(nb, name)
    for i, cell in enumerate(nb.cells):
        if grade.is_check(cell):
            code = {
                j
                for j in range(start, i + 1)
                if nb.cells[j].cell_type == "code"
                and any(r.kind == student.SOLUTION for r in regions[j])
            }
            if code:
                problems[i + 1] = code
            start = i + 1
    return problems


def _variants() -> list:
    """(notebook, check cell, 'only-solved' | 'only-unsolved') for every problem of every
    notebook; a notebook that cannot be parsed gives one case that fails with the reason."""
    cases = []
    for path in SOLUTIONS:
        try:
            problems = _problems(student.read(path), _id(path))
        except ValueError:
            problems = {0: set()}
        cases += [
            pytest.param(path, cell, mode, id=f"{_id(path)}-cell{cell}-{mode}")
            for cell in problems
            for mode in ("only-solved", "only-unsolved")
        ]
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("path, cell, mode", _variants())
def test_each_problem_is_graded_on_its_own(path, cell, mode, tmp_path):
    """An edition in which only this problem is solved passes exactly its check; one in which only
    this problem is unsolved fails exactly its check (checks without code of their own pass)."""
    name = _id(path)
    nb = student.read(path)
    problems = _problems(nb, name)
    mine = problems[cell]
    keep = mine if mode == "only-solved" else set(range(len(nb.cells))) - mine
    variant = tmp_path / path.name
    variant.write_text(student.dumps(student.make_student(nb, name, frozenset(keep))))
    run = _grade_cli(variant, tmp_path)
    assert run["report"] is not None, run["stderr"][-3000:]
    failed = {r["cell"] for r in run["report"]["checks"] if not r["passed"]}
    expected = set(problems) - {cell} if mode == "only-solved" else {cell}
    rows = "\n".join(
        f"cell {r['cell']}: {'pass' if r['passed'] else 'FAIL'} {r['message'][:300]}"
        for r in run["report"]["checks"]
    )
    assert failed == expected, f"{name}, {mode} (problem at cell {cell}):\n{rows}"


@pytest.mark.slow
@pytest.mark.parametrize("path", SOLUTIONS, ids=_id)
def test_forwarding_to_the_reference_never_passes(path, tmp_path, monkeypatch):
    """With DGM_GRADING_CHEAT=1 every check runs the course's reference in place of the student's
    functions, as a solution that only calls the reference would: each problem's check must then
    fail with ReferenceUsed."""
    problems = _problems(student.read(path), _id(path))
    monkeypatch.setenv("DGM_GRADING_CHEAT", "1")
    run = _grade_cli(path, tmp_path)
    assert run["report"] is not None, run["stderr"][-3000:]
    rows = {r["cell"]: r for r in run["report"]["checks"]}
    for cell in problems:
        assert not rows[cell]["passed"] and "ReferenceUsed" in rows[cell]["message"], rows[cell]


def test_report_shows_fall_back_notes_under_the_check_they_precede():
    note = "[grading] problem 1 (my_f) has not passed its check: the cells below use the reference"
    nb = _nb(
        _ran("def my_f(x):\n    raise NotImplementedError()", 1),
        _ran("# Check 1\nwith grading.check(1, {'my_f': f}):\n    my_f(1)", 2,
             _error("NotImplementedError", "", (2, 3, None), (1, 2, "my_f"))),
        _ran("f_ = grading.use('my_f')", 3, new_output("stream", name="stdout", text=note + "\nother\n")),
        _ran("# Check 2\nassert f_(2) == 4", 4),
    )
    report = grade.summarize(nb)
    rows = report["checks"]
    assert [r["passed"] for r in rows] == [False, True]  # problem 2 is graded on its own
    assert rows[0]["notes"] == [] and rows[1]["notes"] == [note]
    assert "note: problem 1 (my_f) has not passed its check" in grade.format_report(report)
