"""Structural checks of the Markdown notes in lectures/ and readings/.

Every ``*.md`` file under those folders is found by glob at collection time, so notes added later
are covered without touching this file. Three families of checks, each parametrised per file so a
failure names the file (and the line):

1. links: every relative link and image path resolves to an existing file or folder
   (``http(s)://``, ``mailto:`` and pure ``#anchor`` targets are skipped; a ``#fragment`` is
   stripped before the check);
2. math: ``$$`` lines come in pairs, braces and ``\\begin{X}``/``\\end{X}`` balance inside each
   display block (braces also inside each inline ``$...$`` span), no ``\\(`` ``\\)`` ``\\[`` ``\\]``
   delimiters outside code, and an even number of inline ``$`` on every line outside code;
3. heading: each file starts with a ``# `` heading;
4. symbols: every letter that lectures/notation.md registers under "Letters with more than one use"
   is used only in the notes listed for it there, and with one meaning per note (the registry gives
   the regular expression each letter is written as; a note that uses the letter without being
   listed, or is listed under two meanings, fails, and so does a listing the note no longer needs).
   This checks that every use is *registered*, not what the letter means: the meaning of each use is
   the registry's claim, reviewed by people.
5. figures: every lecture has at least two figures, each followed by a ``*Figure:`` caption that
   names the ``assets/make_figures_*.py`` script whose source writes that PNG.

Code (fenced blocks and inline code spans) is masked before the link and math checks, so examples
inside code never count. The checkers are small pure functions; the self-tests at the bottom feed
each one a bad example and assert it is reported, so a checker cannot silently pass everything.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTE_DIRS = ("lectures", "readings")
NOTE_FILES = sorted(p for d in NOTE_DIRS for p in (ROOT / d).rglob("*.md"))


def _rel(path: Path) -> str:
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:  # files outside the repository (self-tests use tmp_path)
        return path.as_posix()


# --------------------------------------------------------------------------------------------
# Masking: blank out code so that examples inside it are never checked. Line structure is kept
# (same number of lines, same length per line) so reported line numbers stay right.
# --------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")


def mask_code(text: str) -> str:
    """Return ``text`` with fenced code blocks and inline code spans replaced by spaces."""
    out = []
    fence = None  # the opening fence string while inside a fenced block
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            out.append(" " * len(line))
        elif fence is not None:
            closing = m is not None and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence)
            if closing and not line.strip()[len(m.group(1)):].strip():
                fence = None
            out.append(" " * len(line))
        else:
            out.append(_CODE_SPAN.sub(lambda s: " " * len(s.group(0)), line))
    return "\n".join(out)


def _is_fence_line(line: str) -> bool:
    return line.strip() == "$$"


def _unescaped_dollars(line: str) -> list[int]:
    """Positions of ``$`` characters that are not escaped as ``\\$``."""
    return [i for i, ch in enumerate(line) if ch == "$" and (i == 0 or line[i - 1] != "\\")]


def mask_math(text: str) -> str:
    """Blank out display blocks and inline ``$...$`` spans (used before looking for links)."""
    out, inside = [], False
    for line in text.split("\n"):
        if _is_fence_line(line):
            inside = not inside
            out.append(" " * len(line))
            continue
        if inside:
            out.append(" " * len(line))
            continue
        chars = list(line)
        pos = _unescaped_dollars(line)
        for a, b in zip(pos[0::2], pos[1::2]):
            chars[a : b + 1] = " " * (b + 1 - a)
        out.append("".join(chars))
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# 1. Links and images
# --------------------------------------------------------------------------------------------

# [text](target "title") and ![alt](target); target may be wrapped in <...>.
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]"  # [text] or ![alt], one level of nested brackets
    r"\(\s*(<[^>]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)"  # (target), balanced parentheses allowed
)
_REF_DEF = re.compile(r"^ {0,3}\[(?!\^)[^\]]+\]:\s*(<[^>]*>|\S+)")  # not footnotes [^1]:
_HTML_SRC = re.compile(r"<(?:img|a|source)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']*)[\"']", re.I)
_SKIP_SCHEMES = ("http://", "https://", "mailto:")


def link_targets(text: str) -> list[tuple[int, str]]:
    """(line number, target) for every inline link, image, reference definition and HTML src/href
    outside code and math."""
    found = []
    clean = mask_math(mask_code(text))
    for lineno, line in enumerate(clean.split("\n"), start=1):
        for rx in (_INLINE_LINK, _REF_DEF, _HTML_SRC):
            for m in rx.finditer(line):
                target = m.group(1).strip()
                if target.startswith("<") and target.endswith(">"):
                    target = target[1:-1].strip()
                found.append((lineno, target))
    return found


def check_links(md_path: Path, text: str) -> list[str]:
    """Messages for links in ``text`` (the content of ``md_path``) that do not resolve."""
    errors = []
    for lineno, target in link_targets(text):
        where = f"{_rel(md_path)}:{lineno}: link {target!r}"
        if not target:
            errors.append(f"{where}: empty link target")
            continue
        if target.lower().startswith(_SKIP_SCHEMES) or target.startswith("#"):
            continue
        path_part = unquote(target.split("#", 1)[0].split("?", 1)[0])
        if path_part.startswith("/") or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", path_part):
            errors.append(f"{where}: not a relative path (links must be relative)")
            continue
        resolved = (md_path.parent / path_part).resolve()
        if not resolved.exists():
            errors.append(f"{where}: no such file ({_rel(resolved)})")
    return errors


# --------------------------------------------------------------------------------------------
# 2. Math
# --------------------------------------------------------------------------------------------

_ENV = re.compile(r"\\(begin|end)\s*\{([^{}]*)\}")
_BAD_DELIM = re.compile(r"(\\+)([()\[\]])")


def _brace_errors(tex: str) -> list[str]:
    """Problems with ``{``/``}`` balance in ``tex`` (escaped ``\\{`` ``\\}`` are literal)."""
    depth, errors = 0, []
    i = 0
    while i < len(tex):
        ch = tex[i]
        if ch == "\\":
            i += 2  # skip the escaped character (\{, \}, \\ ...)
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                errors.append("'}' without a matching '{'")
                depth = 0
        i += 1
    if depth > 0:
        errors.append(f"{depth} unclosed '{{'")
    return errors


def _env_errors(tex: str) -> list[str]:
    stack, errors = [], []
    for kind, name in _ENV.findall(tex):
        if kind == "begin":
            stack.append(name)
        elif not stack:
            errors.append(f"\\end{{{name}}} without \\begin{{{name}}}")
        elif stack[-1] != name:
            errors.append(f"\\end{{{name}}} closes \\begin{{{stack[-1]}}}")
            stack.pop()
        else:
            stack.pop()
    errors += [f"\\begin{{{name}}} never closed" for name in stack]
    return errors


def check_math(text: str, name: str = "<text>") -> list[str]:
    """Messages for malformed math in Markdown ``text``; ``name`` prefixes each message."""
    errors = []
    lines = mask_code(text).split("\n")
    block_start, block = None, []
    for lineno, line in enumerate(lines, start=1):
        where = f"{name}:{lineno}"
        for m in _BAD_DELIM.finditer(line):
            if len(m.group(1)) % 2 == 1:  # an odd run of backslashes: a real \( \) \[ \]
                errors.append(f"{where}: '\\{m.group(2)}' delimiter; use $...$ or a $$ block")
        if _is_fence_line(line):
            if block_start is None:
                block_start, block = lineno, []
            else:
                tex = "\n".join(block)
                for msg in _brace_errors(tex) + _env_errors(tex):
                    errors.append(f"{name}:{block_start}-{lineno}: display math: {msg}")
                block_start = None
            continue
        if block_start is not None:
            block.append(line)
            continue
        dollars = _unescaped_dollars(line)
        if "$$" in line:
            errors.append(f"{where}: '$$' must stand alone on its own line")
            continue
        if len(dollars) % 2:
            errors.append(f"{where}: odd number of inline '$' ({len(dollars)})")
            continue
        for a, b in zip(dollars[0::2], dollars[1::2]):
            for msg in _brace_errors(line[a + 1 : b]):
                errors.append(f"{where}: inline math ${line[a + 1:b]}$: {msg}")
    if block_start is not None:
        errors.append(f"{name}:{block_start}: '$$' block never closed")
    return errors


# --------------------------------------------------------------------------------------------
# 3. Heading
# --------------------------------------------------------------------------------------------


def check_heading(text: str, name: str = "<text>") -> list[str]:
    first = text.split("\n", 1)[0]
    if first.startswith("# ") and first[2:].strip():
        return []
    return [f"{name}:1: file must start with a '# Title' heading, found {first[:60]!r}"]


# --------------------------------------------------------------------------------------------
# 4. Symbols: the registry of letters with more than one use in lectures/notation.md
# --------------------------------------------------------------------------------------------

NOTATION = ROOT / "lectures" / "notation.md"
REGISTRY_HEADING = "## Letters with more than one use"
# font and text commands whose argument is a word, not a symbol (\mathrm{KL}, \text{vlb}, \tag{3.1})
_WORD_ARG = re.compile(
    r"\\(?:mathcal|mathbb|mathrm|text|textrm|operatorname|mathbf|mathsf|mathit|boldsymbol|tag|begin|end)"
    r"\s*\{[^{}]*\}"
)
_CELL_CODE = re.compile(r"^`(.+)`$")


def math_spans(text: str) -> list[tuple[int, str]]:
    """(line number, TeX) for every line of a display block and every inline ``$...$`` span,
    outside code, with word arguments of font commands removed. Each TeX string starts with a
    space, so a registry regex can use a look-behind such as ``(?<=[^A-Za-z\\\\])`` (the form
    ``(?<!...)`` cannot be written in notation.md: Markdown would read ``<!`` as HTML)."""
    out, inside = [], False
    for lineno, line in enumerate(mask_code(text).split("\n"), start=1):
        if _is_fence_line(line):
            inside = not inside
            continue
        if inside:
            out.append((lineno, " " + _WORD_ARG.sub(" ", line)))
            continue
        dollars = _unescaped_dollars(line)
        for a, b in zip(dollars[0::2], dollars[1::2]):
            out.append((lineno, " " + _WORD_ARG.sub(" ", line[a + 1 : b])))
    return out


def parse_registry(text: str) -> list[tuple[str, str, str, list[str]]]:
    """Rows (symbol cell, regex, meaning, notes) of the table under REGISTRY_HEADING; ``notes``
    are repository-relative paths, empty for a form the course does not use at all ("none")."""
    if REGISTRY_HEADING not in text:
        raise ValueError(f"notation: no section {REGISTRY_HEADING!r}")
    section = text.split(REGISTRY_HEADING, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.split("\n"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) != 4 or cells[0] in ("symbol", "---"):
            continue
        m = _CELL_CODE.match(cells[1])
        if not m:
            raise ValueError(f"notation registry: the 'written as' cell must be a `regex`, got {cells[1]!r}")
        notes = [] if cells[3] == "none" else [n.strip() for n in cells[3].split(",")]
        rows.append((cells[0], m.group(1), cells[2], notes))
    if not rows:
        raise ValueError("notation registry: the table has no rows")
    return rows


def check_symbols(notes: dict[str, str], registry: list[tuple[str, str, str, list[str]]]) -> list[str]:
    """Messages for uses of registered letters that the registry does not list for that note, for
    notes listed under two meanings of one letter, and for listings with no use behind them.
    ``notes`` maps a repository-relative path to the note's text."""
    errors = []
    by_regex: dict[str, list[tuple[str, str, list[str]]]] = {}
    for symbol, regex, meaning, listed in registry:
        by_regex.setdefault(regex, []).append((symbol, meaning, listed))
    for regex, meanings in by_regex.items():
        rx = re.compile(regex)
        symbol = meanings[0][0]
        where: dict[str, str] = {}
        for _, meaning, listed in meanings:
            for note in listed:
                if note in where:
                    errors.append(f"{note}: {symbol} is listed with two meanings, "
                                  f"{where[note]!r} and {meaning!r}; one note, one meaning")
                where[note] = meaning
        for note, text in sorted(notes.items()):
            hits = [lineno for lineno, tex in math_spans(text) if rx.search(tex)]
            if hits and note not in where:
                known = "; ".join(f"{m} ({', '.join(n) or 'nowhere'})" for _, m, n in meanings)
                errors.append(f"{note}:{hits[0]}: uses {symbol}, which lectures/notation.md reserves: "
                              f"{known}. Rename it, or register this note's meaning there.")
            elif not hits and note in where:
                errors.append(f"{note}: listed for {symbol} ({where[note]!r}) in lectures/notation.md "
                              f"but does not use it; remove the listing")
        for note in where:
            if note not in notes:
                errors.append(f"lectures/notation.md lists {note} for {symbol}, but there is no such note")
    return errors


def test_symbols_registered() -> None:
    registry = parse_registry(_read(NOTATION))
    notes = {_rel(p): _read(p) for p in NOTE_FILES if p != NOTATION}
    errors = check_symbols(notes, registry)
    assert not errors, "symbol registry:\n" + "\n".join(errors)


def test_selftest_symbol_registry_catches_misuse() -> None:
    registry_md = (
        "# N\n\n" + REGISTRY_HEADING + "\n\n| symbol | written as | meaning | notes |\n| --- | --- | --- | --- |\n"
        "| $S$ | `(?<=[^A-Za-z\\\\])S(?![A-Za-z])` | sampling steps | a.md |\n"
        "| $S$ | `(?<=[^A-Za-z\\\\])S(?![A-Za-z])` | Monte Carlo samples | b.md |\n"
        "| $\\epsilon$ | `\\\\epsilon(?![A-Za-z])` | not used: write $\\varepsilon$ | none |\n"
    )
    registry = parse_registry(registry_md)
    good = {"a.md": "DDIM with $S = 50$ steps.", "b.md": "$$\n\\frac1S \\sum_i f(z_i)\n$$"}
    assert check_symbols(good, registry) == []
    # a planted misuse: a third note uses S without being registered
    planted = dict(good, **{"c.md": "a matrix $S = A + A^\\top$"})
    errors = check_symbols(planted, registry)
    assert len(errors) == 1 and errors[0].startswith("c.md:1: uses $S$")
    # the forbidden form, anywhere in math
    errors = check_symbols(dict(good, **{"d.md": "noise $\\epsilon \\sim N(0, I)$"}), registry)
    assert len(errors) == 1 and "d.md:1" in errors[0]
    # words inside \\mathrm{...} and \\text{...} are not symbols; code is not math
    assert check_symbols(dict(good, **{"e.md": "$\\mathrm{S}$ and `$S$`"}), registry) == []
    # a stale listing and a note listed under two meanings
    assert any("does not use it" in e for e in check_symbols({"a.md": "no math", "b.md": good["b.md"]}, registry))
    twice = registry + [("$S$", registry[0][1], "a third meaning", ["a.md"])]
    assert any("two meanings" in e for e in check_symbols(good, twice))



# --------------------------------------------------------------------------------------------
# 5. Figures: every lecture has at least two, each captioned and made by a script in assets/
# --------------------------------------------------------------------------------------------

LECTURES = sorted((ROOT / "lectures").glob("[0-9][0-9]-*.md"))
_FIGURE = re.compile(r"^!\[[^\]]+\]\(\.\./assets/([\w.\-]+\.png)\)\s*$")
_SCRIPT = re.compile(r"`(assets/make_figures_\w+\.py)`")


def check_figures(text: str, name: str, minimum: int = 2) -> list[str]:
    """Messages for a lecture with fewer than ``minimum`` figures, a figure without a caption (a
    paragraph starting ``*Figure:`` right after the image), or a caption that does not name the
    assets/ script whose source writes that PNG."""
    errors, count = [], 0
    lines = text.split("\n")
    for i, line in enumerate(lines):
        m = _FIGURE.match(line)
        if not m:
            continue
        count += 1
        png = m.group(1)
        rest = "\n".join(lines[i + 1 : i + 30]).strip()
        caption = rest.split("\n\n", 1)[0]
        if not caption.startswith("*Figure:"):
            errors.append(f"{name}:{i + 1}: {png} has no '*Figure: ...' caption right after it")
            continue
        scripts = _SCRIPT.findall(caption)
        if not scripts:
            errors.append(f"{name}:{i + 1}: the caption of {png} names no assets/make_figures_*.py script")
        elif not any((ROOT / sc).is_file() and png in (ROOT / sc).read_text(encoding="utf-8") for sc in scripts):
            errors.append(f"{name}:{i + 1}: {png} is not written by {', '.join(scripts)}")
        if not (ROOT / "assets" / png).is_file():
            errors.append(f"{name}:{i + 1}: assets/{png} does not exist")
    if count < minimum:
        errors.append(f"{name}: {count} figure(s), at least {minimum} expected")
    return errors


@pytest.mark.parametrize("path", LECTURES, ids=[_rel(p) for p in LECTURES])
def test_lecture_has_captioned_generated_figures(path: Path) -> None:
    errors = check_figures(_read(path), _rel(path))
    assert not errors, "\n".join(errors)


def test_selftest_figures() -> None:
    ok = ("![a](../assets/em_loglik.png)\n\n*Figure: x. Produced by `assets/make_figures_a.py`.*\n\n"
          "![b](../assets/iwae_bound_vs_k.png)\n\n*Figure: y, by `assets/make_figures_a.py`.*\n")
    assert check_figures(ok, "ok.md") == []
    assert any("at least 2" in e for e in check_figures(ok.split("\n\n![b]")[0], "one.md"))
    no_caption = ok.replace("*Figure: x.", "Some text.")
    assert any("no '*Figure" in e for e in check_figures(no_caption, "nc.md"))
    wrong_script = ok.replace("make_figures_a.py`.*\n\n![b]", "make_figures_b.py`.*\n\n![b]")
    assert any("is not written by" in e for e in check_figures(wrong_script, "ws.md"))

# --------------------------------------------------------------------------------------------
# Tests over the notes
# --------------------------------------------------------------------------------------------


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


_param = pytest.mark.parametrize("path", NOTE_FILES, ids=[_rel(p) for p in NOTE_FILES])


@_param
def test_links_resolve(path: Path) -> None:
    errors = check_links(path, _read(path))
    assert not errors, f"{_rel(path)}: broken links:\n" + "\n".join(errors)


@_param
def test_math_is_well_formed(path: Path) -> None:
    errors = check_math(_read(path), _rel(path))
    assert not errors, f"{_rel(path)}: malformed math:\n" + "\n".join(errors)


@_param
def test_starts_with_title(path: Path) -> None:
    errors = check_heading(_read(path), _rel(path))
    assert not errors, "\n".join(errors)


# --------------------------------------------------------------------------------------------
# Self-tests: each checker reports a bad example and accepts a good one
# --------------------------------------------------------------------------------------------


def test_selftest_finds_broken_link_and_image(tmp_path: Path) -> None:
    (tmp_path / "ok.md").write_text("# Ok\n", encoding="utf-8")
    (tmp_path / "fig.png").write_bytes(b"")
    md = tmp_path / "note.md"
    text = (
        "# Note\n"
        "[good](ok.md#section) ![fig](fig.png) [web](https://example.org) [top](#top)\n"
        "[mail](mailto:a@b.c) `[in code](missing-in-code.md)`\n"
        "```\n[in fence](missing-in-fence.md)\n```\n"
        "[bad](missing.md#frag) and ![bad image](gone.png)\n"
        '<img src="also-gone.png"> [abs](/etc/passwd)\n'
        "[ref]: nowhere.md\n"
        "[^1]: A footnote, not a link.\n"
    )
    errors = check_links(md, text)
    joined = "\n".join(errors)
    for bad in ("missing.md#frag", "gone.png", "also-gone.png", "/etc/passwd", "nowhere.md"):
        assert bad in joined, f"broken link {bad!r} not reported:\n{joined}"
    assert "note.md:7" in joined, "line number of the broken link missing"
    skipped = ("ok.md", "fig.png", "example.org", "#top", "mailto", "in-code", "in-fence")
    skipped += ("footnote",)
    for fine in skipped:
        assert fine not in joined, f"good or skipped link {fine!r} reported:\n{joined}"
    assert len(errors) == 5


def test_selftest_unbalanced_brace_in_display_block() -> None:
    bad = "# T\n\n$$\n\\frac{a}{b\n$$\n"
    errors = check_math(bad, "x.md")
    assert errors and "unclosed" in errors[0] and "x.md:3-5" in errors[0]
    assert check_math("# T\n\n$$\n\\frac{a}{b} + \\{ x \\}\n$$\n") == []
    assert any("without a matching" in e for e in check_math("$$\na}{\n$$\n"))


def test_selftest_unpaired_display_fence() -> None:
    errors = check_math("# T\n\n$$\nx^2\n")
    assert errors and "never closed" in errors[0]
    assert any("alone" in e for e in check_math("text $$x$$ text\n"))


def test_selftest_begin_end_mismatch() -> None:
    errors = check_math("$$\n\\begin{aligned} a &= b \\end{align}\n$$\n")
    assert errors and "closes \\begin{aligned}" in errors[0]
    assert any("never closed" in e for e in check_math("$$\n\\begin{cases} 1\n$$\n"))
    ok = "$$\n\\begin{aligned} a &= b \\\\[4pt] c &= d \\end{aligned}\n$$\n"
    assert check_math(ok) == [], "\\\\[4pt] line spacing must not count as a \\[ delimiter"


def test_selftest_forbidden_delimiters() -> None:
    for bad in ("see \\(x\\) here", "\\[ x^2 \\]"):
        assert any("delimiter" in e for e in check_math(bad)), bad
    assert check_math("code `\\(x\\)` is fine, and so is a fence:\n```\n\\[ y \\]\n```\n") == []


def test_selftest_odd_inline_dollars() -> None:
    errors = check_math("# T\nIt costs $5 and $x$ is math.\n", "y.md")
    assert errors and errors[0].startswith("y.md:2") and "odd number" in errors[0]
    assert check_math("Math $a$ and $b_{i}$, code `$HOME`, escaped \\$ sign.\n") == []
    assert check_math("```\necho $PATH\n```\n") == []
    assert any("inline math" in e for e in check_math("Broken $\\mathbb{E[x]$ here.\n"))


def test_selftest_heading() -> None:
    assert check_heading("# Title\n\ntext") == []
    assert check_heading("Title\n# Later") != []
    assert check_heading("## Sub first\n") != []
    assert check_heading("#NoSpace\n") != []


def test_selftest_mask_code_keeps_lines() -> None:
    text = "a `b` c\n```python\nx = '$'\n```\nd"
    masked = mask_code(text)
    assert masked.count("\n") == text.count("\n")
    assert "$" not in masked and "b" not in masked.split("\n")[0]
    assert masked.split("\n")[4] == "d"


# --------------------------------------------------------------------------------------------
# The same checks over the Markdown cells of the problem-set notebooks
# --------------------------------------------------------------------------------------------

NOTEBOOKS = sorted((ROOT / "psets").glob("*.ipynb"))


def _notebook_markdown(path: Path) -> str:
    import json

    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[_rel(p) for p in NOTEBOOKS])
def test_notebook_markdown_math_and_links(path: Path) -> None:
    text = _notebook_markdown(path)
    errors = check_math(text, _rel(path)) + check_links(path, text)
    assert not errors, f"{_rel(path)} (Markdown cells):\n" + "\n".join(errors)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[_rel(p) for p in NOTEBOOKS])
def test_notebook_headings_have_no_code_spans(path: Path) -> None:
    """A heading with a `code span` gets one anchor in mkdocs-jupyter's table of contents and
    another on the page, so the site's contents link nowhere (tests/test_site.py finds it only
    after a full build): name the function in the text under the heading instead."""
    bad, fenced = [], False
    for line in _notebook_markdown(path).splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line) and "`" in line:
            bad.append(line)
    assert not bad, f"{_rel(path)}: headings with code spans:\n" + "\n".join(bad)
