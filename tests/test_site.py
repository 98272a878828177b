"""The notes site: hook unit tests, a strict build, and every page checked in headless Chromium.

1. The link-rewriting and navigation functions of scripts/mkdocs_hooks.py, on small examples.
2. ``mkdocs build --strict`` into a temporary folder (mkdocs.yml raises broken links, broken
   anchors and pages missing from the nav to warnings, so strict fails on them); its output is
   shown on failure. Every note and every notebook in psets/ must have a page, and every
   repository file a note links to (helpers, tests, scripts) a code page with line anchors.
3. The built HTML loads no script, stylesheet or image from another host, and no link points to
   a placeholder host (a ``CHANGE-ME`` repository URL and the like).
4. The build is served on 127.0.0.1 (http.server in a thread) and every page is opened in
   headless Chromium. Per page: no console error, no failed request and no request to any host
   but 127.0.0.1 (from Chrome's performance log), every formula typeset by MathJax (each
   ``.arithmatex`` holds an ``mjx-container``; notebooks whose Markdown has math show some), no
   MathJax error, no raw ``$$``, ``\\(`` or ``\\[`` in visible text, every image loaded (and a
   notebook page shows at least as many as its saved image outputs), every same-site link
   resolves to a file of the build and every same-page ``#anchor`` to an element.
   Screenshots of a lecture page, a problem-set page and a code page go to test-artifacts/.

Part 4 is skipped, with a message naming the Debian packages, when chromium or chromedriver is
missing (.ci/run installs them).
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
BLOB = "https://example.org/repo/blob/main/"
TREE = "https://example.org/repo/tree/main/"


def _load_hooks():
    spec = importlib.util.spec_from_file_location(
        "mkdocs_hooks", ROOT / "scripts" / "mkdocs_hooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _load_hooks()


# ------------------------------------------------------------------------------------------------
# 1. Hook functions
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path):
    """A tiny repository: two notes, a helper module, a test file and a folder."""
    for rel in (
        "lectures/01-a.md",
        "lectures/02-b.md",
        "psets/helpers/data.py",
        "tests/test_notes_math_a.py",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"# Title of {Path(rel).stem}\n\nText.\n")
    cell = {"cell_type": "markdown", "metadata": {}, "source": ["# Problem set 1\n", "Intro."]}
    (tmp_path / "psets/p1.ipynb").write_text(json.dumps({"cells": [cell], "metadata": {}}))
    return tmp_path


def _rewrite(repo, src_uri="lectures/01-a.md", site=("lectures/01-a.md", "lectures/02-b.md")):
    def rewrite(target):
        return hooks.resolve_link(target, src_uri, set(site).__contains__, repo, BLOB, TREE)

    return rewrite


def test_links_to_repository_files_outside_the_site_become_repository_links(repo):
    md = (
        "See [`helpers.data`](../psets/helpers/data.py) and\n"
        '[the test](../tests/test_notes_math_a.py#L3 "t"),\n'
        "the [helpers folder](../psets/helpers/) and <https://example.com>.\n"
        "[ref]: ../tests/test_notes_math_a.py\n"
    )
    out = hooks.rewrite_markdown_links(md, _rewrite(repo))
    assert f"[`helpers.data`]({BLOB}psets/helpers/data.py)" in out
    assert f'[the test]({BLOB}tests/test_notes_math_a.py#L3 "t")' in out
    assert f"[helpers folder]({TREE}psets/helpers)" in out
    assert f"[ref]: {BLOB}tests/test_notes_math_a.py" in out
    assert "<https://example.com>" in out


def test_site_links_missing_files_code_and_external_links_are_kept(repo):
    md = (
        "[next](02-b.md#x) [missing](03-c.md) [out](../../elsewhere.py) [web](https://x.org/a.py)\n"
        "[anchor](#top) ![img](../assets/none.png) `[code](../tests/test_notes_math_a.py)`\n"
        "```python\n[fenced](../psets/helpers/data.py)\n```\n"
    )
    assert hooks.rewrite_markdown_links(md, _rewrite(repo)) == md


def test_expand_nav_fills_folders_in_order_without_repeating_named_pages():
    pages = [
        "lectures/02-b.md",
        "lectures/notation.md",
        "lectures/01-a.md",
        "readings/x.md",
        "readings/index.md",
        "psets/p2.ipynb",
        "psets/p1.ipynb",
    ]
    nav = [
        {"Home": "index.md"},
        {"Notation": "lectures/notation.md"},
        {"Lectures": "lectures/"},
        {"Readings": "readings/"},
        {"Problem sets": ["psets/p2.ipynb", "psets/"]},
        {"Empty": "figures/"},
    ]
    assert hooks.expand_nav(nav, pages) == [
        {"Home": "index.md"},
        {"Notation": "lectures/notation.md"},
        {"Lectures": ["lectures/01-a.md", "lectures/02-b.md"]},
        {"Readings": ["readings/index.md", "readings/x.md"]},
        {"Problem sets": ["psets/p2.ipynb", "psets/p1.ipynb"]},
    ]


def test_home_page_lists_follow_the_nav_and_skip_pages_linked_already(repo):
    md = "\n".join(
        [
            "- [A](lectures/01-a.md)",
            "<!-- pages: lectures -->",
            "<!-- pages: psets -->",
            "<!-- pages: readings -->",
        ]
    )
    nav = [
        {"Home": "index.md"},
        {"Lectures": ["lectures/01-a.md", "lectures/02-b.md"]},
        {"Problem sets": ["psets/p1.ipynb"]},
    ]
    assert hooks.nav_pages(nav) == [
        "index.md",
        "lectures/01-a.md",
        "lectures/02-b.md",
        "psets/p1.ipynb",
    ]
    assert hooks.pages_list(md, hooks.nav_pages(nav), repo).split("\n") == [
        "- [A](lectures/01-a.md)",
        "    - [Title of 02-b](lectures/02-b.md)",
        "    - [Problem set 1](psets/p1.ipynb)",
        "    - *(none yet)*",
    ]


def test_site_sources_is_an_allow_list(repo):
    (repo / ".gitignore").write_text("data/\n")
    for rel in (
        "psets/data/x.png",
        "psets/.ipynb_checkpoints/p1-checkpoint.ipynb",
        "assets/fig.png",
        "tests/fig.png",
        "psets/helpers/fig.png",
    ):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(b"")
    assert hooks.site_sources(repo) == [
        "assets/fig.png",
        "lectures/01-a.md",
        "lectures/02-b.md",
        "psets/p1.ipynb",
    ]


def test_notebook_html_loses_cdn_scripts_and_keeps_local_ones():
    html = (
        '<script src="https://cdn.example/mathjax.js"> </script><script src=""> </script>'
        '<script type="text/x-mathjax-config">MathJax.Hub.Config({})</script>'
        '<script type="module">await import("https://cdn.example/mermaid.mjs")</script>'
        "<script>copy()</script><p>text</p>"
    )
    assert hooks.strip_remote_scripts(html) == "<script>copy()</script><p>text</p>"


def test_html_links_are_rewritten_by_attribute(repo):
    html = '<a href="../tests/test_notes_math_a.py">t</a><img src="data:image/png;base64,AA"/>'
    out = hooks.rewrite_html_links(html, _rewrite(repo, src_uri="psets/p1.ipynb"))
    assert (
        out
        == f'<a href="{BLOB}tests/test_notes_math_a.py">t</a><img src="data:image/png;base64,AA"/>'
    )


def test_linked_code_collects_showable_files_and_folders(repo):
    (repo / ".gitignore").write_text("data/\n")
    (repo / "data").mkdir()
    (repo / "data/x.py").write_text("x = 1\n")
    (repo / "psets/helpers/nets.py").write_text("y = 2\n")
    (repo / "psets/helpers/blob.bin").write_bytes(b"\xff\xfe\x00\x80")
    (repo / "scripts").mkdir()
    (repo / "scripts/run.py").write_text("print(1)\n")
    (repo / ".hidden.py").write_text("")
    sources = {
        "lectures/01-a.md": "[t](../tests/test_notes_math_a.py#L2) [d](../data/x.py) "
        "[h](../.hidden.py) [l](02-b.md) [w](https://x.org/a.py) `[c](../scripts/run.py)`",
        "psets/p1.ipynb": "[folder](helpers/)",
    }
    site = {"lectures/01-a.md", "lectures/02-b.md", "psets/p1.ipynb"}.__contains__
    assert hooks.linked_code(sources, site, repo) == [
        "psets/helpers",  # the folder, and the text files directly inside it (not blob.bin)
        "psets/helpers/data.py",
        "psets/helpers/nets.py",
        "tests/test_notes_math_a.py",
    ]  # not: ignored data/, hidden files, site pages, external links, links inside code
    assert hooks.code_page_uri("psets/helpers", True) == "code/psets/helpers/index.md"
    assert hooks.code_page_uri("tests/t.py", False) == "code/tests/t.py.md"


def test_code_pages_number_every_line_with_an_anchor(repo):
    text = 'def f(x):\n    """One\n    docstring over lines."""\n    return x  # <&>\n'
    html = hooks.render_code("psets/helpers/data.py", text)
    assert re.findall(r'id="(L\d+)"', html) == ["L1", "L2", "L3", "L4"]
    assert re.findall(r'<a href="#(L\d+)">', html) == ["L1", "L2", "L3", "L4"]
    assert '<span class="k">def</span>' in html  # highlighted as Python
    assert "# &lt;&amp;&gt;" in html  # escaped
    (repo / "psets/helpers/data.py").write_text(text)
    page = hooks.code_page(repo, "psets/helpers/data.py")
    assert page.startswith("# `psets/helpers/data.py`\n") and "(4 lines)" in page
    folder = hooks.code_page(repo, "psets/helpers")
    assert "- [`data.py`](data.py.md)" in folder


def _page(repo, src_uri):
    from mkdocs.structure.files import File

    file = File(src_uri, str(repo), str(repo / "site"), True)
    return SimpleNamespace(file=file, edit_url=None)


def test_edit_links_and_repository_links_only_when_repo_url_is_set(repo):
    """Without repo_url, no page gets an edit link and a link to a code file goes to its page."""
    from mkdocs.structure.files import File, Files

    (repo / "mkdocs.yml").write_text("site_name: t\n")
    note = _page(repo, "lectures/01-a.md")
    files = Files([note.file, _page(repo, "lectures/02-b.md").file])
    md = "[t](../tests/test_notes_math_a.py#L2) [b](../psets/helpers/data.py)"
    config = SimpleNamespace(
        repo_url=None,
        edit_uri=None,
        nav=None,
        config_file_path=str(repo / "mkdocs.yml"),
        site_dir=str(repo / "site"),
        use_directory_urls=True,
        plugins=SimpleNamespace(_current_plugin="hooks"),
    )
    code = File.generated(config, "code/tests/test_notes_math_a.py.md", content="# t\n")
    files.append(code)
    out = hooks.on_page_markdown(md, note, config, files)
    assert note.edit_url is None
    # the file with a code page: a link to the page's source; the other one is left for
    # MkDocs to report (no page, no repository to point to)
    assert out == "[t](../code/tests/test_notes_math_a.py.md#L2) [b](../psets/helpers/data.py)"
    config.repo_url, config.edit_uri = "https://example.org/repo", "edit/main/"
    out = hooks.on_page_markdown(md, note, config, files)
    assert note.edit_url == "https://example.org/repo/edit/main/lectures/01-a.md"
    assert "[b](https://example.org/repo/blob/main/psets/helpers/data.py)" in out


# ------------------------------------------------------------------------------------------------
# 2. Strict build
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> tuple[Path, int, str]:
    """(site folder, exit code, output) of ``mkdocs build --strict`` into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(out),
        ],
        cwd=ROOT,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    return out, proc.returncode, proc.stdout


@pytest.fixture(scope="module")
def site(build) -> Path:
    out, code, _ = build
    if code != 0:
        pytest.skip("the strict build failed (see test_strict_build)")
    return out


def test_strict_build(build):
    _, code, output = build
    assert code == 0, f"mkdocs build --strict failed (exit {code}):\n{output}"


def _page_dir(src: Path) -> str:
    rel = src.relative_to(ROOT).with_suffix("")
    return rel.parent.as_posix() if rel.name in ("index", "README") else rel.as_posix()


def test_every_note_and_notebook_has_a_page(site):
    sources = [ROOT / p for p in hooks.site_sources(ROOT) if p.endswith((".md", ".ipynb"))]
    assert sources, "no notes or notebooks found"
    missing = [
        s.relative_to(ROOT).as_posix()
        for s in sources
        if not (site / _page_dir(s) / "index.html").is_file()
    ]
    assert not missing, f"no page built for: {missing}"
    for nb in (s for s in sources if s.suffix == ".ipynb"):  # download link target
        assert (site / _page_dir(nb) / nb.name).is_file(), f"{nb.name} not copied beside its page"


def test_note_links_to_code_and_tests_point_to_code_pages(site):
    """Each link from a note to a repository file outside the site goes to the file's page in
    the site (code/...), which shows the file, and to the line it names (#L12) if any."""
    in_site = set(hooks.site_sources(ROOT)).__contains__
    problems, checked = [], 0
    for rel in (p for p in hooks.site_sources(ROOT) if p.endswith(".md")):
        html = (site / _page_dir(ROOT / rel) / "index.html").read_text(encoding="utf-8")
        targets = []
        hooks.rewrite_markdown_links(
            (ROOT / rel).read_text(encoding="utf-8"),
            lambda t, targets=targets: targets.append(t),
        )
        for target in targets:
            hit = hooks.repo_target(target, rel, in_site, ROOT)
            if hit is None:
                continue
            path, suffix = hit
            checked += 1
            page = site / "code" / path / "index.html"
            url = posixpath.relpath(f"code/{path}/", _page_dir(ROOT / rel)) + "/" + suffix
            if f'href="{url}"' not in html:
                problems.append(f"{rel}: no link {url} for {target}")
            elif not page.is_file():
                problems.append(f"{rel}: {target} has no page {page.relative_to(site)}")
            elif suffix.startswith("#") and f'id="{suffix[1:]}"' not in page.read_text("utf-8"):
                problems.append(f"{rel}: {target}: no line {suffix} on its page")
    assert checked, "no note links to code (the test would check nothing)"
    assert not problems, "links to code:\n" + "\n".join(problems)


def test_code_pages_show_the_whole_file_with_line_anchors(site):
    pages = sorted((site / "code").rglob("index.html"))
    assert pages, "no code pages were built"
    for page in pages:
        path = page.parent.relative_to(site / "code").as_posix()
        if (ROOT / path).is_dir():
            continue
        html = page.read_text(encoding="utf-8")
        n = len((ROOT / path).read_text(encoding="utf-8").splitlines())
        ids = re.findall(r'<span id="L(\d+)">', html)
        assert ids == [str(i) for i in range(1, n + 1)], f"{path}: lines 1..{n} not all anchored"
        assert 'class="highlight"' in html


_PLACEHOLDER_HOST = re.compile(
    r"change-?me|placeholder|your[-_]?(fork|name|user|org)|^example\.", re.IGNORECASE
)


def test_no_link_points_to_a_placeholder_host(site):
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    for key in ("repo_url", "site_url"):
        if config.get(key):
            host, path = urlsplit(config[key]).hostname or "", urlsplit(config[key]).path
            assert not (_PLACEHOLDER_HOST.search(host) or _PLACEHOLDER_HOST.search(path)), (
                f"mkdocs.yml: {key} is a placeholder ({config[key]}); set it or leave it out"
            )
    offenders = []
    for page in site.rglob("*.html"):
        for url in re.findall(r"\s(?:href|src)=[\"']([^\"']+)", page.read_text(encoding="utf-8")):
            parts = urlsplit(url)
            if parts.hostname and (
                _PLACEHOLDER_HOST.search(parts.hostname)
                or _PLACEHOLDER_HOST.search(parts.path.split("/")[1] if "/" in parts.path else "")
            ):
                offenders.append(f"{page.relative_to(site)}: {url}")
    assert not offenders, "links to placeholder hosts:\n" + "\n".join(offenders[:20])


_REMOTE = re.compile(
    r"<(?:script|img|iframe|link)\b[^>]*\s(?:src|href)=[\"']?(?:https?:)?//[^>]*>", re.IGNORECASE
)


def test_built_html_loads_nothing_from_other_hosts(site):
    offenders = {}
    for page in site.rglob("*.html"):
        tags = [
            t
            for t in _REMOTE.findall(page.read_text(encoding="utf-8"))
            if not re.search(r"<link\b[^>]*rel=[\"']?(?:canonical|alternate)", t)
        ]
        if tags:
            offenders[page.relative_to(site).as_posix()] = tags[:3]
    assert not offenders, f"pages load resources from other hosts: {offenders}"


# ------------------------------------------------------------------------------------------------
# 3. Every page in headless Chromium
# ------------------------------------------------------------------------------------------------

_CHECK_PAGE_JS = r"""
const skip = 'pre, code, script, style, noscript, textarea, mjx-container';
const raw = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
while (walker.nextNode()) {
  const node = walker.currentNode;
  const parent = node.parentElement;
  if (!parent || parent.closest(skip) || !parent.checkVisibility()) continue;
  if (/\$\$|\\\(|\\\[/.test(node.nodeValue)) raw.push(node.nodeValue.trim().slice(0, 100));
}
const wrapper = document.querySelector('.jupyter-wrapper');
const hrefs = [...document.querySelectorAll('a')]
  .map(a => a.getAttribute('href') || a.getAttribute('xlink:href'))
  .filter(h => h);
return {
  raw: raw,
  arithmatex: document.querySelectorAll('.arithmatex').length,
  untypeset: [...document.querySelectorAll('.arithmatex')]
    .filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 100)),
  notebook_mjx: wrapper ? wrapper.querySelectorAll('mjx-container').length : null,
  errors: [...document.querySelectorAll('mjx-merror, [data-mjx-error], [data-mml-node="merror"]')]
    .map(e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 150)),
  images: [...document.images].map(i => ({
    src: (i.getAttribute('src') || '').slice(0, 80), ok: i.complete && i.naturalWidth > 0,
    notebook: !!i.closest('.jupyter-wrapper')})),
  links: hrefs.map(h => new URL(h, location.href).href),
  missing_anchors: hrefs.filter(h => h.startsWith('#') && h.length > 1)
    .filter(h => !document.getElementById(decodeURIComponent(h.slice(1)))),
};
"""

_WAIT_FOR_MATHJAX_JS = """
const done = arguments[arguments.length - 1];
const mj = window.MathJax;
if (!mj || !mj.startup || !mj.startup.promise) { done('MathJax did not start'); return; }
mj.startup.promise.then(() => done('ok'), e => done('MathJax failed: ' + e));
"""


def _find_browser() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip(
            "headless Chromium not available: install the Debian packages 'chromium' and "
            "'chromium-driver' (apt-get install -y chromium chromium-driver)"
        )
    return chromium, driver


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(site):
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, driver_path = _find_browser()
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium (requirements.txt) is needed"
    )
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    driver.get("about:blank")  # leave the start tab (a new-tab page that tries the network)
    driver.get_log("browser"), driver.get_log("performance")  # and forget its log
    yield driver
    driver.quit()


def _network_problems(entries, host: str) -> list[str]:
    """Foreign hosts and failed requests in a batch of Chrome performance-log entries."""
    problems, urls = [], {}
    for entry in entries:
        msg = json.loads(entry["message"])["message"]
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            urls[params["requestId"]] = url
            parts = urlsplit(url)  # chrome:// and the like are the browser's own pages
            if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname != host:
                problems.append(f"request to another host: {url}")
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            problems.append(f"HTTP {params['response']['status']}: {params['response']['url']}")
        elif (
            method == "Network.loadingFailed"
            and not params.get("canceled")  # cut short by the next navigation: not a fault
            and params.get("errorText") != "net::ERR_ABORTED"
        ):
            url = urls.get(params["requestId"], params["requestId"])
            problems.append(f"request failed ({params.get('errorText')}): {url}")
    return problems


def _target_exists(site: Path, path: str) -> bool:
    target = site / unquote(path).lstrip("/")
    return (
        (target / "index.html").is_file()
        if path.endswith("/") or target.is_dir()
        else target.is_file()
    )


def _notebook_expectations(page_dir: Path) -> tuple[int, bool]:
    """(image outputs, whether the Markdown has math) of the notebook copied beside a page."""
    notebooks = list(page_dir.glob("*.ipynb"))
    if not notebooks:
        return 0, False
    cells = json.loads(notebooks[0].read_text(encoding="utf-8"))["cells"]
    images = sum(
        any(k in out.get("data", {}) for k in ("image/png", "image/jpeg", "image/gif"))
        for c in cells
        for out in c.get("outputs", [])
    )
    markdown = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    markdown = re.sub(r"```.*?```|`[^`]*`", "", markdown, flags=re.DOTALL)
    return images, bool(re.search(r"(?<!\\)\$", markdown))


def _screenshot(driver, url: str, selector: str, name: str) -> None:
    driver.get(url)
    driver.execute_async_script(_WAIT_FOR_MATHJAX_JS)
    driver.execute_script(
        "const e = document.querySelector(arguments[0]);"
        "if (e) { e.scrollIntoView({block: 'center'}); }",
        selector,
    )
    time.sleep(0.5)  # let the header's title transition finish
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / name))


def test_every_page_in_headless_chromium(site, server, browser):
    host = urlsplit(server).hostname
    pages = sorted(site.rglob("*.html"))
    problems: dict[str, list[str]] = {}
    links: dict[str, str] = {}  # same-site link -> first page that has it
    math_per_page: dict[str, int] = {}  # formulas, to pick the lecture for the screenshot
    figures_per_page: dict[str, int] = {}
    for page in pages:
        rel = page.relative_to(site).as_posix()
        url = f"{server}/{rel[: -len('index.html')] if rel.endswith('index.html') else rel}"
        found: list[str] = []
        browser.get(url)
        state = browser.execute_async_script(_WAIT_FOR_MATHJAX_JS)
        if state != "ok":
            found.append(state)
        result = browser.execute_script(_CHECK_PAGE_JS)
        math_per_page[rel] = result["arithmatex"]
        figures_per_page[rel] = sum(i["ok"] and i["notebook"] for i in result["images"])
        found += [
            f"console: {e['message'][:300]}"
            for e in browser.get_log("browser")
            if e["level"] == "SEVERE"
        ]
        found += _network_problems(browser.get_log("performance"), host)
        found += [f"formula not typeset: {t!r}" for t in result["untypeset"]]
        found += [f"MathJax error: {t!r}" for t in result["errors"]]
        found += [f"raw TeX delimiters in visible text: {t!r}" for t in result["raw"]]
        found += [f"image not loaded: {i['src']}" for i in result["images"] if not i["ok"]]
        found += [f"broken same-page anchor: {a}" for a in result["missing_anchors"]]
        expected_images, has_math = _notebook_expectations(page.parent)
        if result["notebook_mjx"] is not None:
            shown = figures_per_page[rel]
            if shown < expected_images:
                found.append(f"notebook shows {shown} of its {expected_images} figures")
            if has_math and not result["notebook_mjx"]:
                found.append("notebook Markdown has math but nothing was typeset")
        for link in result["links"]:
            links.setdefault(link, rel)
        if found:
            problems[rel] = list(dict.fromkeys(found))  # one line per distinct problem
    for link, rel in links.items():
        parts = urlsplit(link)
        if parts.hostname == host and not _target_exists(site, parts.path):
            problems.setdefault(rel, []).append(
                f"link to a file missing from the build: {parts.path}"
            )

    lectures = [p for p in math_per_page if p.startswith("lectures/") and "notation" not in p]
    lecture = max(lectures or math_per_page, key=lambda p: math_per_page[p])
    _screenshot(
        browser, f"{server}/{lecture[: -len('index.html')]}", "div.arithmatex", "lecture.png"
    )
    psets = sorted(p for p in figures_per_page if p.startswith("psets/"))
    if psets:  # the problem set with the most figures; a real one rather than the setup check
        pset = max(psets, key=lambda p: (figures_per_page[p], "setup_check" not in p))
        _screenshot(
            browser, f"{server}/{pset[: -len('index.html')]}", ".jupyter-wrapper img", "pset.png"
        )

    code = sorted(p for p in math_per_page if p.startswith("code/") and ".py/" in p)
    if code:  # a code page opened at a line, as a link from a note opens it
        page = f"{server}/{code[0][: -len('index.html')]}#L20"
        _screenshot(browser, page, ".dgm-code span[id='L20']", "code.png")

    report = "\n".join(f"{page}:\n  " + "\n  ".join(items) for page, items in problems.items())
    assert not problems, f"{len(problems)} of {len(pages)} pages have problems:\n{report}"
