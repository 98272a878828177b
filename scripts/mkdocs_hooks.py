"""MkDocs hooks for the notes site (named under ``hooks:`` in mkdocs.yml).

The notes stay where the course keeps them (lectures/, readings/, psets/, assets/ at the
repository root); ``docs_dir`` (site_src/) holds only what exists for the site alone: the home
page and the vendored MathJax. The hooks:

1. ``on_files``: add the notes, notebooks and figures from the repository root to the site, by an
   allow-list (everything else, such as psets/helpers/, tests/, data/, .venv/, site/, stays out),
   and expand the ``"folder/"`` entries of ``nav`` into that folder's pages, so a new lecture or
   notebook appears without editing mkdocs.yml.
   Every repository file (or folder) that a note or notebook links to but that is not itself
   part of the site (``../tests/test_x.py``, ``../psets/helpers/data.py``) becomes a page under
   ``code/``: the file syntax-highlighted with numbered lines whose ids are ``L1``, ``L2``, ...
   (so ``data.py#L40`` lands on line 40), listed in the nav under "Code". The site needs no
   repository host: every link works offline.
2. ``on_page_markdown``: fill the home page's ``<!-- pages: folder -->`` lists, point the edit
   link at the file's real place in the repository (only when ``repo_url`` is set), and rewrite
   links to repository files outside the site into links to their ``code/`` pages. A file that
   cannot be shown (binary, ignored) becomes a repository link when ``repo_url`` is set; links to
   missing files are left alone for MkDocs to report.
3. ``on_page_content``: on notebook pages, drop the scripts that mkdocs-jupyter would load from
   CDNs (MathJax 2, mermaid, widgets: the site's own MathJax typesets notebooks too), resolve
   relative links the way Jupyter does (links to code go to its ``code/`` page), and add a
   download button for the ``.ipynb``.
4. ``on_post_page``, ``on_post_template``: stop the theme from asking the GitHub API for star
   counts (a request to a third-party host on every first visit; the repository link stays).

The rewriting functions are pure and tested in tests/test_site.py.
"""

from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path
from typing import Callable
from urllib.parse import quote, unquote

import mkdocs.plugins
import pathspec
from mkdocs.structure.files import File, Files

# Folder -> suffixes of its files that belong to the site (searched recursively).
SITE_SOURCES = {
    "lectures": (".md",),
    "readings": (".md",),
    "psets": (".ipynb",),
    "assets": (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"),
}
IMAGE_SUFFIXES = SITE_SOURCES["assets"]  # figures may also sit beside the notes
EXCLUDED_DIRS = {"helpers", "__pycache__", ".ipynb_checkpoints"}
PAGE_SUFFIXES = (".md", ".ipynb")

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
CODE_DIR = "code/"  # the pages that show repository files linked from the notes
CODE_MAX_BYTES = 1_000_000  # larger files are not shown as pages


# ------------------------------------------------------------------------------------------------
# Which files are part of the site
# ------------------------------------------------------------------------------------------------


def _ignore_spec(root: Path) -> pathspec.PathSpec:
    gitignore = root / ".gitignore"
    lines = gitignore.read_text(encoding="utf-8").splitlines() if gitignore.is_file() else []
    return pathspec.GitIgnoreSpec.from_lines(lines)


def site_sources(root: Path) -> list[str]:
    """Repository-relative POSIX paths of the notes, notebooks and figures that form the site.

    Skips hidden folders, psets/helpers/, caches and anything the root .gitignore ignores.
    """
    ignored = _ignore_spec(root)
    found = []
    for folder, suffixes in SITE_SOURCES.items():
        base = root / folder
        if not base.is_dir():
            continue
        for path in base.rglob("*"):
            rel = path.relative_to(root).as_posix()
            parts = rel.split("/")
            if not path.is_file() or any(p.startswith(".") or p in EXCLUDED_DIRS for p in parts):
                continue
            if not path.name.endswith(suffixes + IMAGE_SUFFIXES) or ignored.match_file(rel):
                continue
            found.append(rel)
    return sorted(found)


def _folder_order(path: str) -> tuple:
    """Sort key inside a folder: index.md first, then by path."""
    return (posixpath.basename(path) != "index.md", path)


def expand_nav(nav: list | None, pages: list[str]) -> list | None:
    """Replace every ``"folder/"`` entry of a nav by the pages under that folder.

    Pages that the nav names explicitly elsewhere are not repeated; a section left empty (a
    folder with no pages yet) is dropped. Other entries are returned unchanged.
    """
    if nav is None:
        return None
    named: set[str] = set()

    def collect(items):
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            if isinstance(value, list):
                collect(value)
            elif isinstance(value, str) and not value.endswith("/"):
                named.add(value)

    collect(nav)

    def in_folder(folder: str) -> list[str]:
        return sorted(
            (p for p in pages if p.startswith(folder) and p not in named), key=_folder_order
        )

    def expand(items: list) -> list:
        out = []
        for item in items:
            if isinstance(item, str) and item.endswith("/"):
                out.extend(in_folder(item))
            elif isinstance(item, dict):
                ((title, value),) = item.items()
                if isinstance(value, str) and value.endswith("/"):
                    value = in_folder(value)
                elif isinstance(value, list):
                    value = expand(value)
                if value != []:
                    out.append({title: value})
            else:
                out.append(item)
        return out

    return expand(nav)


def page_title(path: Path) -> str:
    """The first level-1 heading of a Markdown note or notebook, else the file name."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
        text = "\n".join(
            "".join(c.get("source", "")) for c in cells if c.get("cell_type") == "markdown"
        )
    else:
        text = path.read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem


def nav_pages(nav: list | None) -> list[str]:
    """The page paths of a (expanded) nav, in reading order."""
    out = []
    for item in nav or []:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += nav_pages(value) if isinstance(value, list) else [value]
    return [p for p in out if isinstance(p, str) and "://" not in p]


def pages_list(markdown: str, pages: list[str], root: Path) -> str:
    """Fill each ``<!-- pages: folder -->`` marker with a bulleted list of links to its pages.

    ``pages`` are repository-relative paths in the order to list them. Pages the Markdown
    already links to (as ``](path)``) are left out of the lists.
    """

    def fill(m: re.Match) -> str:
        folder = m.group(1).strip().rstrip("/") + "/"
        items = [
            f"    - [{page_title(root / p)}]({p})"
            for p in pages
            if p.startswith(folder) and f"]({p})" not in markdown
        ]
        return "\n".join(items) if items else "    - *(none yet)*"

    return re.sub(r"<!--\s*pages:\s*([^>]*?)\s*-->", fill, markdown)


# ------------------------------------------------------------------------------------------------
# Link rewriting
# ------------------------------------------------------------------------------------------------


def repo_target(
    target: str, src_uri: str, is_site_file: Callable[[str], bool], root: Path
) -> tuple[str, str] | None:
    """``(path, suffix)`` when ``target``, a link written in the file at ``src_uri``, points to a
    repository file or folder outside the site; ``None`` otherwise.

    ``path`` is repository-relative, ``suffix`` the link's ``#fragment`` or ``?query`` (or "").
    External (scheme, ``//host``), absolute and bare ``#anchor`` links, site files, paths
    outside the repository and missing paths give ``None``.
    """
    if not target or target.startswith(("#", "/")) or _SCHEME.match(target):
        return None
    path, suffix = re.match(r"([^#?]*)(.*)", target, re.DOTALL).groups()
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(src_uri), unquote(path)))
    if resolved.startswith("../") or resolved in (".", ".."):
        return None
    if is_site_file(resolved) or not (root / resolved).exists():
        return None
    return resolved, suffix


def resolve_link(
    target: str,
    src_uri: str,
    is_site_file: Callable[[str], bool],
    root: Path,
    blob_base: str,
    tree_base: str,
) -> str | None:
    """Rewrite a relative link to a repository file outside the site into a link to the file in
    the repository (``blob_base + path``, a folder ``tree_base + path``, the ``#fragment`` or
    ``?query`` kept); ``None`` means keep the link (see ``repo_target``)."""
    hit = repo_target(target, src_uri, is_site_file, root)
    if hit is None:
        return None
    resolved, suffix = hit
    return (blob_base if (root / resolved).is_file() else tree_base) + quote(resolved) + suffix


# ------------------------------------------------------------------------------------------------
# Pages that show repository files (code/)
# ------------------------------------------------------------------------------------------------


def code_page_uri(path: str, is_dir: bool) -> str:
    """The page of a repository file, ``code/<path>.md``, or folder, ``code/<path>/index.md``."""
    return f"{CODE_DIR}{path}/index.md" if is_dir else f"{CODE_DIR}{path}.md"


def showable(root: Path, path: str) -> bool:
    """Whether a repository file or folder may be shown as a page: not hidden, not ignored by
    .gitignore, and for a file, UTF-8 text of at most CODE_MAX_BYTES."""
    full = root / path
    if any(part.startswith(".") for part in path.split("/")) or _ignore_spec(root).match_file(
        path + ("/" if full.is_dir() else "")
    ):
        return False
    if full.is_dir():
        return True
    if not full.is_file() or full.stat().st_size > CODE_MAX_BYTES:
        return False
    try:
        full.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return False
    return True


def linked_code(
    sources: dict[str, str], is_site_file: Callable[[str], bool], root: Path
) -> list[str]:
    """Repository paths to show as code pages: the showable files and folders that the Markdown
    ``sources`` ({src_uri: text}) link to, plus the showable files directly inside each such
    folder (its page lists them). Sorted."""
    found: set[str] = set()
    for src_uri, text in sources.items():

        def collect(target: str, src_uri=src_uri) -> None:
            hit = repo_target(target, src_uri, is_site_file, root)
            if hit is not None and showable(root, hit[0]):
                found.add(hit[0])

        rewrite_markdown_links(text, collect)
    for folder in [p for p in found if (root / p).is_dir()]:
        found.update(
            f"{folder}/{c.name}"
            for c in (root / folder).iterdir()
            if c.is_file() and showable(root, f"{folder}/{c.name}")
        )
    return sorted(found)


def _line_id(m: re.Match) -> str:
    return f'id="L{m.group(1)}"'


def render_code(path: str, text: str) -> str:
    """HTML of a source file: Pygments highlighting (lexer chosen by the file name), a column of
    line numbers that link to their line, and each line wrapped in ``<span id="L<n>">``."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import TextLexer, get_lexer_for_filename
    from pygments.util import ClassNotFound

    try:
        lexer = get_lexer_for_filename(path, text, stripnl=False)
    except ClassNotFound:
        lexer = TextLexer(stripnl=False)
    html = highlight(text, lexer, HtmlFormatter(linenos="table", linespans="L", wrapcode=True))
    html = re.sub(r'id="L-(\d+)"', _line_id, html)  # GitHub's form: #L12
    number = r'<span class="normal"><a href="#L\1">\1</a></span>'
    return re.sub(r'<span class="normal">(\d+)</span>', number, html)


def code_page(root: Path, path: str) -> str:
    """The Markdown of the page that shows the repository file or folder ``path``."""
    full = root / path
    if full.is_dir():
        items = sorted(
            c.name for c in full.iterdir() if c.is_file() and showable(root, f"{path}/{c.name}")
        )
        listing = "\n".join(f"- [`{name}`]({quote(name)}.md)" for name in items) or "*(empty)*"
        return f"# `{path}/`\n\nFiles of the course repository in `{path}/`:\n\n{listing}\n"
    text = full.read_text(encoding="utf-8")
    lines = text.count("\n") + (not text.endswith("\n") and bool(text))
    return (
        f"# `{path}`\n\n"
        f'<p class="dgm-code-about">The file <code>{path}</code> of the course repository as '
        f"this site was built ({lines} lines). Link to a line with <code>#L</code> and its "
        f"number.</p>\n\n"
        f'<div class="dgm-code">\n{render_code(path, text)}\n</div>\n'
    )


def _markdown_sources(files: Files) -> dict[str, str]:
    """The Markdown of every page: .md files as they are, notebooks' Markdown cells joined."""
    out = {}
    for f in files:
        if f.src_uri.endswith(".md") and not f.generated_by:
            out[f.src_uri] = f.content_string
        elif f.src_uri.endswith(".ipynb"):
            cells = json.loads(f.content_string).get("cells", [])
            out[f.src_uri] = "\n\n".join(
                "".join(c.get("source", "")) for c in cells if c.get("cell_type") == "markdown"
            )
    return out


_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL)
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(?:<(?P<angled>[^>\n]*)>|(?P<bare>[^)\s]+))"
)
_REF_DEF = re.compile(r"^ {0,3}\[[^\]\n]+\]:[ \t]*(?:<(?P<angled>[^>\n]*)>|(?P<bare>\S+))", re.M)


def mask_code(markdown: str) -> str:
    """``markdown`` with fenced code blocks and inline code spans blanked out (same length)."""
    lines, fence = [], None
    for line in markdown.split("\n"):
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            lines.append(" " * len(line))
        elif fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            lines.append(" " * len(line))
        else:
            lines.append(line)
    text = "\n".join(lines)
    return _CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def rewrite_markdown_links(markdown: str, rewrite: Callable[[str], str | None]) -> str:
    """Apply ``rewrite`` to the target of every inline link, image and reference definition.

    ``rewrite`` returns the new target or ``None`` to keep it. Code (fenced blocks and inline
    code spans) is left untouched; link text may contain code.
    """
    masked = mask_code(markdown)
    edits = []  # (start, end, new target) in the original text
    for pattern in (_INLINE_LINK, _REF_DEF):
        for m in pattern.finditer(masked):
            group = "angled" if m.group("angled") is not None else "bare"
            new = rewrite(markdown[m.start(group) : m.end(group)])
            if new is not None:
                edits.append((m.start(group), m.end(group), new))
    for start, end, new in sorted(edits, reverse=True):
        markdown = markdown[:start] + new + markdown[end:]
    return markdown


_ATTR = re.compile(r"(?P<head>\s(?:href|src)=)(?P<q>[\"'])(?P<url>[^\"'>]*)(?P=q)")


def rewrite_html_links(html: str, rewrite: Callable[[str], str | None]) -> str:
    """Apply ``rewrite`` to every ``href``/``src`` attribute value of an HTML fragment."""

    def sub(m: re.Match) -> str:
        new = rewrite(m.group("url"))
        return m.group(0) if new is None else f"{m.group('head')}{m.group('q')}{new}{m.group('q')}"

    return _ATTR.sub(sub, html)


_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.DOTALL | re.IGNORECASE)


def strip_remote_scripts(html: str) -> str:
    """Remove scripts that load code from another host (in ``src`` or by ``import``), scripts
    with an empty ``src`` and MathJax 2 configuration blocks; keep the rest."""

    def keep(m: re.Match) -> str:
        tag = m.group(0)
        drop = (
            re.search(r"https?://|src=[\"']?//", tag)
            or re.match(r"<script\b[^>]*\bsrc=([\"'])\s*\1", tag)
            or "text/x-mathjax-config" in tag
        )
        return "" if drop else tag

    return _SCRIPT.sub(keep, html)


# ------------------------------------------------------------------------------------------------
# MkDocs events
# ------------------------------------------------------------------------------------------------


def _root(config) -> Path:
    return Path(config.config_file_path).resolve().parent


def _repo_bases(config) -> tuple[str, str, str]:
    """(blob, tree, edit) URL prefixes of repository files, from repo_url and edit_uri."""
    repo = (config.repo_url or "").rstrip("/") + "/"
    edit = (config.edit_uri or "edit/main/").strip("/") + "/"
    blob = edit.replace("edit/", "blob/", 1)
    return repo + blob, repo + blob.replace("blob/", "tree/", 1), repo + edit


def _repo_path(file: File, root: Path) -> str | None:
    """Where a page's source lives in the repository (a code page: the file it shows)."""
    if file.src_uri.startswith(CODE_DIR) and file.generated_by:
        path = file.src_uri[len(CODE_DIR) :]
        return None if path.endswith("/index.md") else path[: -len(".md")]
    return Path(file.abs_src_path).resolve().relative_to(root).as_posix()


def _code_link(
    target: str, src_file: File, files: Files, root: Path, config, as_url: bool
) -> str | None:
    """A link from ``src_file`` to a repository file outside the site, made a relative link to
    its code page (a URL in HTML, the page's source in Markdown, which MkDocs then checks), or a
    repository link when the file has no page and repo_url is set."""
    hit = repo_target(
        target, src_file.src_uri, lambda p: files.get_file_from_path(p) is not None, root
    )
    if hit is None:
        return None
    path, suffix = hit
    page = files.get_file_from_path(code_page_uri(path, (root / path).is_dir()))
    if page is not None and as_url:
        return page.url_relative_to(src_file) + suffix
    if page is not None:
        rel = posixpath.relpath(page.src_uri, posixpath.dirname(src_file.src_uri) or ".")
        return quote(rel) + suffix
    if config.repo_url:
        blob, tree, _ = _repo_bases(config)
        return resolve_link(target, src_file.src_uri, lambda p: False, root, blob, tree)
    return None


@mkdocs.plugins.event_priority(100)  # before mkdocs-jupyter wraps the notebooks
def on_files(files: Files, config) -> Files:
    root = _root(config)
    sources = site_sources(root)
    for rel in sources:
        if files.get_file_from_path(rel) is None:
            files.append(File(rel, str(root), config.site_dir, config.use_directory_urls))
    pages = [p for p in sources if p.endswith(PAGE_SUFFIXES)]
    pages += [f.src_uri for f in files if f.src_uri.endswith(".md") and f.src_uri not in pages]
    code = []
    for path in linked_code(
        _markdown_sources(files), lambda p: files.get_file_from_path(p) is not None, root
    ):
        uri = code_page_uri(path, (root / path).is_dir())
        files.append(File.generated(config, uri, content=code_page(root, path)))
        code.append(uri)
    config.nav = expand_nav(config.nav, pages)
    if code and config.nav is not None:
        config.nav.append({"Code": code})
    return files


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    root = _root(config)
    _, _, edit = _repo_bases(config)
    repo_path = _repo_path(page.file, root)
    if config.repo_url and repo_path:
        page.edit_url = edit + repo_path
    if page.file.src_uri.endswith(".ipynb"):  # the notebook's JSON; on_page_content handles it
        return markdown
    if "<!-- pages:" in markdown:
        in_nav = nav_pages(config.nav)
        others = sorted(
            f.src_uri
            for f in files
            if f.src_uri.endswith(PAGE_SUFFIXES) and f.src_uri not in in_nav
        )
        markdown = pages_list(markdown, in_nav + others, root)
    if page.file.src_uri.startswith(CODE_DIR) and page.file.generated_by:
        return markdown  # written by code_page, its links are final
    return rewrite_markdown_links(
        markdown, lambda target: _code_link(target, page.file, files, root, config, as_url=False)
    )


_MARKER_HEADING = re.compile(r"^\s*(BEGIN|END) SOLUTION\s*$")


def drop_marker_headings(items: list) -> list:
    """The table-of-contents entries without the nbgrader marker lines of Markdown answers
    (``### BEGIN SOLUTION`` renders as a heading; several on one page get anchors that
    mkdocs-jupyter's table of contents and the page's heading ids number differently)."""
    kept = []
    for item in items:
        if _MARKER_HEADING.match(item.title):
            continue
        item.children = drop_marker_headings(item.children)
        kept.append(item)
    return kept


def on_page_content(html: str, page, config, files: Files) -> str:
    if not page.file.src_uri.endswith(".ipynb"):
        return html
    root = _root(config)
    if page.toc is not None:
        page.toc.items = drop_marker_headings(list(page.toc.items))
    # The answer regions of written questions read as such on the site.
    html = re.sub(r">\s*BEGIN SOLUTION\s*<", ">Answer (solution edition)<", html)
    html = re.sub(r">\s*END SOLUTION\s*<", ">End of the answer<", html)

    def rewrite(target: str) -> str | None:
        if not target or target.startswith(("#", "/")) or _SCHEME.match(target):
            return None
        path, _, fragment = target.partition("#")
        resolved = posixpath.normpath(
            posixpath.join(posixpath.dirname(page.file.src_uri), unquote(path))
        )
        site_file = files.get_file_from_path(resolved)
        if site_file is not None:  # Jupyter resolves against the notebook's folder; so do we
            return site_file.url_relative_to(page.file) + ("#" + fragment if fragment else "")
        return _code_link(target, page.file, files, root, config, as_url=True)

    html = rewrite_html_links(strip_remote_scripts(html), rewrite)
    name = posixpath.basename(page.file.src_uri)
    button = (
        f'<p><a class="md-button" href="{quote(name)}" download>'
        f"Download the notebook ({name})</a></p>\n"
    )
    return button + html


def _no_source_facts(html: str) -> str:
    # data-md-component="source" makes the theme fetch repository facts from api.github.com.
    return re.sub(r'\sdata-md-component="source"', "", html)


def on_post_page(output: str, page, config) -> str:
    return _no_source_facts(output)


def on_post_template(output: str, template_name: str, config) -> str:  # 404.html
    return _no_source_facts(output)
