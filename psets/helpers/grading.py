"""Per-problem grading in the problem-set notebooks: guarded checks and reference fall-backs.

A problem set's problems build on each other (07_diffusion trains with the student's loss and samples
with the student's sampler), yet each problem must be graded on its own. Two tools do it:

* ``check(k, {"my_fn": reference, ...})`` wraps a check cell. While its block runs, the student's
  functions named there are *guarded*: if one of them calls a helper marked ``@reference`` for this
  problem (the course's own answer), it raises :class:`ReferenceUsed`, so a solution that only
  forwards to the answer does not pass. The check's own calls to the reference (to compare) are
  not affected. The outcome (passed or failed) is recorded; the exception still propagates, so the
  cell fails visibly and the grader reports it.
* ``use("my_fn")`` is how later cells get a problem's function: the student's own when its check
  passed, otherwise the reference registered for it, with a printed note (``[grading] ...``) that
  the grader attaches to its report. So an unsolved problem 1 does not fail problem 3, and every
  figure downstream of a passed problem is drawn with the student's code.

The decorator :func:`reference` marks a helper as a reference answer; it costs one set lookup per
call. ``DGM_GRADING_CHEAT=1`` (used by the tests) makes every check run the reference in place of
the student's functions, which must then fail with :class:`ReferenceUsed`.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

NOTE = "[grading]"  # prefix of the lines the grader collects from cell outputs

_forbidden: frozenset[str] = frozenset()  # qualified names of references forbidden right now
_problems: dict[int, "_Problem"] = {}  # problem number -> its record
_owner: dict[str, int] = {}  # student's name -> problem number


class ReferenceUsed(AssertionError):
    """A student's function called the course's reference answer to its own problem."""


@dataclass
class _Problem:
    number: int
    fallbacks: dict  # student's name -> the reference used when the check did not pass
    namespace: dict  # the notebook's globals, where the student's names live
    passed: bool | None = None  # None: the check has not finished
    forbidden: frozenset = frozenset()  # the references the student's functions may not call
    announced: set = field(default_factory=set)


def _qualname(fn) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def reference(fn):
    """Mark ``fn`` as a reference answer: calling it from a guarded student function raises."""
    name = _qualname(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if name in _forbidden:
            raise ReferenceUsed(
                f"your code called {name.removeprefix('helpers.')}, the course's reference answer "
                f"to this problem: write the computation yourself (the check compares against it)"
            )
        return fn(*args, **kwargs)

    wrapper.reference_name = name
    return wrapper


def _names_of(fallbacks: dict) -> frozenset[str]:
    """The reference names reachable from the fall-backs (plain functions marked @reference)."""
    return frozenset(
        fn.reference_name for fn in fallbacks.values() if hasattr(fn, "reference_name")
    )


@contextmanager
def _forbidding(names: frozenset[str]):
    global _forbidden
    before, _forbidden = _forbidden, _forbidden | names
    try:
        yield
    finally:
        _forbidden = before


def _guard(obj, names: frozenset[str]):
    """``obj`` with ``names`` forbidden while it runs: a function is wrapped, a class has its methods
    wrapped in place, anything else (a tensor, a number) is returned as it is. Returns (object,
    undo)."""
    if inspect.isclass(obj):
        originals = {k: v for k, v in vars(obj).items() if inspect.isfunction(v)}
        for key, method in originals.items():
            setattr(obj, key, _guard(method, names)[0])
        return obj, lambda: [setattr(obj, k, v) for k, v in originals.items()]
    if not callable(obj):
        return obj, lambda: None

    @functools.wraps(obj)
    def guarded(*args, **kwargs):
        with _forbidding(names):
            return obj(*args, **kwargs)

    return guarded, lambda: None


def _cheating() -> bool:
    return os.environ.get("DGM_GRADING_CHEAT", "").strip() not in ("", "0")


class check:  # noqa: N801 (used as `with grading.check(...)`, like a function)
    """Run a check cell's block for problem ``number``.

    ``fallbacks`` maps each name the student defines for this problem (``"my_q_sample"``) to the
    reference that later cells use when this check fails; references among them, and those in
    ``forbid``, may not be called from the student's functions during the block. The names are
    looked up in the notebook's globals; a name the student's cell failed to define fails the check
    with a NameError that says so.
    """

    def __init__(self, number: int, fallbacks: dict, forbid=()):
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            raise ValueError(f"grading.check: number must be a positive int, got {number!r}")
        if not isinstance(fallbacks, dict) or not fallbacks:
            raise TypeError(
                "grading.check: fallbacks must be a non-empty dict {student's name: reference}, "
                f"got {fallbacks!r}"
            )
        unguarded = [fn for fn in forbid if callable(fn) and not hasattr(fn, "reference_name")]
        if unguarded:  # only a function marked @reference can notice that it is called
            raise TypeError(
                "grading.check: forbid lists functions not marked @grading.reference, whose calls "
                f"could not be caught: {', '.join(_qualname(fn) for fn in unguarded)}"
            )
        namespace = sys._getframe(1).f_globals  # the notebook cell that runs the check
        self.problem = _Problem(number, dict(fallbacks), namespace)
        _problems[number] = self.problem
        for name in fallbacks:
            _owner[name] = number
        self.names = _names_of(fallbacks) | frozenset(
            getattr(fn, "reference_name", None) or (_qualname(fn) if callable(fn) else str(fn))
            for fn in forbid
        )
        self.problem.forbidden = self.names
        self._undo, self._saved = [], {}

    def __enter__(self):
        namespace = self.problem.namespace
        try:
            for name, ref in self.problem.fallbacks.items():
                if name not in namespace:
                    raise NameError(
                        f"{name} is not defined: run the cell where you write it (problem "
                        f"{self.problem.number}) and fix any error it shows"
                    )
                self._saved[name] = namespace[name]
                target = ref if _cheating() else namespace[name]
                namespace[name], undo = _guard(target, self.names)
                self._undo.append(undo)
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self.problem

    def __exit__(self, exc_type, exc, tb):
        for undo in self._undo:
            undo()
        self.problem.namespace.update(self._saved)
        self._undo, self._saved = [], {}
        self.problem.passed = exc_type is None
        return False


def passed(number: int) -> bool:
    """Whether problem ``number``'s check ran and passed."""
    problem = _problems.get(number)
    return bool(problem and problem.passed)


def use(name: str):
    """The function for ``name`` that later cells should use: the student's own if its problem's
    check passed, else the reference registered for it (announced once per problem and name)."""
    if name not in _owner:
        raise KeyError(
            f"grading.use: no check has registered {name!r}; run the problem's check cell first "
            f"(known: {sorted(_owner)})"
        )
    problem = _problems[_owner[name]]
    if problem.passed and name in problem.namespace:
        return problem.namespace[name]
    ref = problem.fallbacks[name]
    if name not in problem.announced:
        problem.announced.add(name)
        shown = getattr(ref, "reference_name", None) or (
            ", ".join(sorted(problem.forbidden)) if getattr(ref, "__name__", "") == "<lambda>"
            else getattr(ref, "__qualname__", repr(ref)))
        print(
            f"{NOTE} problem {problem.number} ({name}) has not passed its check: the cells below "
            f"use the course's reference ({shown.removeprefix('helpers.')}) instead, so that the "
            f"later problems are graded on their own.",
            flush=True,
        )
    return ref


def reset() -> None:
    """Forget every recorded check (for tests; a notebook's kernel starts fresh anyway)."""
    _problems.clear()
    _owner.clear()
