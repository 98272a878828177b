"""helpers.grading: guarded checks and reference fall-backs, in a namespace that stands for a
notebook's globals (the code runs through exec, as a cell's code does)."""

from __future__ import annotations

import pytest

from helpers import grading


@grading.reference
def ref_square(x):
    return x * x


@grading.reference
def ref_cube(x):
    return x * x * x


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.delenv("DGM_GRADING_CHEAT", raising=False)
    grading.reset()
    yield
    grading.reset()


def run(cell: str, ns: dict) -> dict:
    exec(compile(cell, "<cell>", "exec"), ns)  # noqa: S102 (test of notebook-style code)
    return ns


def notebook(**names) -> dict:
    return {"grading": grading, "ref_square": ref_square, "ref_cube": ref_cube, **names}


CHECK_1 = """
with grading.check(1, {"my_square": ref_square}):
    assert my_square(3) == ref_square(3), "my_square(3) should be 9"
"""


def test_correct_solution_passes_and_is_used_later():
    ns = run("def my_square(x):\n    return x ** 2\n", notebook())
    run(CHECK_1, ns)
    assert grading.passed(1)
    assert grading.use("my_square") is ns["my_square"]  # the student's own, not the reference


def test_forwarding_to_the_reference_fails_even_through_an_alias(capsys):
    ns = run("alias = ref_square\ndef my_square(x):\n    return alias(x)\n", notebook())
    with pytest.raises(grading.ReferenceUsed, match="reference answer"):
        run(CHECK_1, ns)
    assert not grading.passed(1)
    # outside the check the reference works again, and later cells get it as the fall-back
    assert ref_square(4) == 16
    assert grading.use("my_square") is ref_square
    assert "problem 1 (my_square) has not passed its check" in capsys.readouterr().out


def test_the_check_may_call_the_reference_itself():
    ns = run("def my_square(x):\n    return x * x\n", notebook())
    run(CHECK_1, ns)  # the check's own ref_square(3) is not forbidden
    assert grading.passed(1)


def test_other_problems_references_stay_allowed():
    ns = run("def my_cube(x):\n    return ref_square(x) * x\n", notebook())
    run('with grading.check(2, {"my_cube": ref_cube}):\n    assert my_cube(2) == 8\n', ns)
    assert grading.passed(2)


def test_extra_forbidden_reference():
    ns = run("def my_cube(x):\n    return ref_square(x) * x\n", notebook())
    cell = (
        'with grading.check(2, {"my_cube": ref_cube}, forbid=[ref_square]):\n'
        "    assert my_cube(2) == 8\n"
    )
    with pytest.raises(grading.ReferenceUsed):
        run(cell, ns)


def test_wrong_or_unwritten_solution_fails_and_falls_back(capsys):
    ns = run("def my_square(x):\n    raise NotImplementedError()\n", notebook())
    with pytest.raises(NotImplementedError):
        run(CHECK_1, ns)
    assert grading.use("my_square") is ref_square
    grading.use("my_square")
    assert capsys.readouterr().out.count("[grading]") == 1  # announced once


def test_missing_name_fails_with_a_message():
    with pytest.raises(NameError, match="my_square is not defined: run the cell"):
        run(CHECK_1, notebook())
    assert grading.use("my_square") is ref_square


def test_names_are_restored_after_the_check():
    ns = run("def my_square(x):\n    return x * x\n", notebook())
    original = ns["my_square"]
    run(CHECK_1, ns)
    assert ns["my_square"] is original


def test_a_class_has_its_methods_guarded_then_restored():
    ns = run(
        "class Model:\n    def forward(self, x):\n        return ref_square(x)\n", notebook()
    )
    cell = 'with grading.check(3, {"Model": object}, forbid=[ref_square]):\n    Model().forward(2)\n'
    with pytest.raises(grading.ReferenceUsed):
        run(cell, ns)
    assert ns["Model"]().forward(3) == 9  # unguarded again


def test_cheat_mode_runs_the_reference_which_then_fails(monkeypatch):
    monkeypatch.setenv("DGM_GRADING_CHEAT", "1")
    ns = run("def my_square(x):\n    return x * x\n", notebook())
    with pytest.raises(grading.ReferenceUsed):
        run(CHECK_1, ns)


def test_use_of_an_unknown_name_says_what_is_known():
    ns = run("def my_square(x):\n    return x * x\n", notebook())
    run(CHECK_1, ns)
    with pytest.raises(KeyError, match="no check has registered 'my_cube'.*my_square"):
        grading.use("my_cube")


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((0, {"a": ref_square}), ValueError, "number must be a positive int, got 0"),
        ((True, {"a": ref_square}), ValueError, "positive int, got True"),
        ((1, {}), TypeError, "fallbacks must be a non-empty dict"),
    ],
)
def test_bad_arguments(args, error, match):
    with pytest.raises(error, match=match):
        grading.check(*args)


def test_a_lambda_fall_back_is_announced_by_the_references_it_stands_for(capsys):
    ns = run("def my_square(x):\n    raise NotImplementedError()\n", notebook())
    cell = 'with grading.check(1, {"my_square": lambda x: ref_square(x)}, forbid=[ref_square]):\n    my_square(2)\n'
    with pytest.raises(NotImplementedError):
        run(cell, ns)
    assert grading.use("my_square")(3) == 9
    out = capsys.readouterr().out
    assert "test_grading.ref_square)" in out and "<lambda>" not in out, out


def test_a_reference_marked_now_is_guarded_like_the_others():
    """The decorator itself: a reference marked during the session works outside a check and
    raises inside the student's guarded function."""

    @grading.reference
    def ref_double(x):
        return 2 * x

    assert ref_double(4) == 8
    ns = run("def my_double(x):\n    return ref_double(x)\n", notebook(ref_double=ref_double))
    with pytest.raises(grading.ReferenceUsed):
        run('with grading.check(4, {"my_double": ref_double}):\n    my_double(1)\n', ns)
    assert ref_double(5) == 10


def test_a_reference_may_be_forbidden_by_its_name():
    ns = run("def my_cube(x):\n    return ref_square(x) * x\n", notebook())
    cell = (f'with grading.check(2, {{"my_cube": ref_cube}}, forbid=["{ref_square.reference_name}"]):\n'
            "    assert my_cube(2) == 8\n")
    with pytest.raises(grading.ReferenceUsed):
        run(cell, ns)


def test_forbidding_an_unmarked_function_is_refused():
    """Only a function marked @reference notices that it is called: forbidding any other would
    guard nothing (it happened once: a decorator slid onto the wrong function)."""
    def plain(x):
        return x

    ns = notebook(plain=plain)
    with pytest.raises(TypeError, match=r"forbid lists functions not marked @grading.reference, "
                                        r"whose calls could not be caught: .*plain"):
        run('with grading.check(2, {"my_cube": ref_cube}, forbid=[plain]):\n    pass\n', ns)


def test_the_diffusion_references_that_checks_forbid_are_marked():
    from helpers import diffusion
    for fn in (diffusion.q_sample, diffusion.posterior_coefficients, diffusion.q_posterior_mean_variance,
               diffusion.training_loss, diffusion.p_mean_variance, diffusion.p_sample,
               diffusion.p_sample_loop, diffusion.ddim_timesteps, diffusion.ddim_step,
               diffusion.ddim_sample_loop, diffusion.drop_labels, diffusion.conditional_training_loss,
               diffusion.guided_eps, diffusion.guided_sample):
        assert hasattr(fn, "reference_name"), f"{fn.__name__} is not marked @grading.reference"
    assert not hasattr(diffusion._check_eta, "reference_name")


def test_a_missing_second_name_restores_the_first_and_fails_the_check():
    ns = run("def my_square(x):\n    return ref_square(x)\n", notebook())
    original = ns["my_square"]
    cell = 'with grading.check(1, {"my_square": ref_square, "my_cube": ref_cube}):\n    pass\n'
    with pytest.raises(NameError, match="my_cube is not defined"):
        run(cell, ns)
    assert ns["my_square"] is original and ns["my_square"](3) == 9   # unguarded again


def test_reset_forgets_the_checks():
    ns = run("def my_square(x):\n    return x * x\n", notebook())
    run(CHECK_1, ns)
    assert grading.passed(1)
    grading.reset()
    assert not grading.passed(1)
