r"""Every annotated library page, opened in headless Chromium.

Desktop (1600px): each section's prose sits left of its code, side by side. Math is rendered (by
KaTeX, at build time), with no TeX left in the visible text, and rendered right: function names
(`\cos`, `\log`) upright and spaced from their arguments, `\operatorname{...}` upright, no display
equation cut off by its column, no copy button over the text of a doctest. Mobile (390px): the
page never scrolls sideways. Everywhere: no console errors, and no request leaves 127.0.0.1 (the
site works offline). On every page of the site, at 1280 and 1600px: no code row, code block, table
or equation is clipped (wider than the box that shows it, so that part of it is only seen by
scrolling inside the box).

Needs Chromium (`apt-get install -y chromium`) and the `playwright` Python package; browsers are not
downloaded. With `CI` set, a missing browser is a failure, not a skip.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = ROOT / "build" / "screenshots"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-sync",
]


def _require(condition: bool, message: str) -> None:
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(message + " (required in CI)")
    pytest.skip(message)


def _screenshot(page, path: Path) -> None:
    """Save a screenshot for people to look at; it asserts nothing, so a stall is a warning, not a failure.

    On a loaded machine Chromium can stall in "waiting for fonts to load" for minutes (seen once at load
    average 11); the layout checks around it read the page itself and still run.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in (1, 2):
        try:
            page.screenshot(path=str(path))
            return
        except PlaywrightTimeout:
            if attempt == 2:
                warnings.warn(f"no screenshot {path.name}: Chromium timed out twice taking it", stacklevel=2)


def _library_pages():
    from literate import site

    pages = site.discover(ROOT)
    out = []
    for group in site.group_order({p.group for p in pages}):
        if group == site.EXPERIMENTS:
            continue
        out += site.content_pages(pages, group)
    return out


@contextlib.contextmanager
def _serve(directory: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base, timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("http.server did not start")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# Runs in the page: each row with both prose and code, the prose must be left of the code and
# the two must overlap vertically.
_SIDE_BY_SIDE = """() => {
  const bad = [];
  let rows = 0;
  for (const row of document.querySelectorAll('.literate .lit-row')) {
    const prose = row.querySelector(':scope > .lit-prose:not(.lit-empty)');
    const code = row.querySelector(':scope > .lit-code:not(.lit-empty)');
    if (!prose || !code) continue;
    rows += 1;
    const p = prose.getBoundingClientRect(), c = code.getBoundingClientRect();
    const overlap = Math.min(p.bottom, c.bottom) - Math.max(p.top, c.top);
    if (!(p.right <= c.left + 1 && overlap > 0 && p.width > 200 && c.width > 300)) {
      bad.push(row.id + ' prose ' + JSON.stringify([p.left, p.right, p.top, p.bottom]) +
               ' code ' + JSON.stringify([c.left, c.right, c.top, c.bottom]));
    }
  }
  return {rows, bad};
}"""

# Runs in the page: faults of math rendering and of code in the prose, each a list of strings.
_MATH_FAULTS = r"""() => {
  const faults = {glued: [], italic: [], clipped: [], covered: [], unrendered: [], image: []};
  // Figures (drawn by docs/figures/make_figures.py) are found and shown.
  for (const img of document.querySelectorAll('.lit-prose img')) {
    if (!img.complete || !img.naturalWidth) faults.image.push(img.getAttribute('src'));
  }
  const leaves = (el) => Array.from(el.querySelectorAll('*')).filter(e => !e.children.length && e.textContent.trim());
  const name = (el) => (el.closest('[data-tex]') || {}).dataset ? el.closest('[data-tex]').dataset.tex : '?';
  // Every formula has been rendered (KaTeX's HTML, not a fallback).
  for (const m of document.querySelectorAll('.lit-prose [data-tex]')) {
    if (!m.querySelector('.katex-html')) faults.unrendered.push(m.dataset.tex);
  }
  // \cos, \sin, \log, \exp...: an upright operator with a gap to the letter beside it.
  const FUNCS = /^(cos|sin|tan|log|exp|ln|max|min|arg|sup|inf|lim|det|dim)$/;
  for (const op of document.querySelectorAll('.lit-prose .katex-html .mop')) {
    const text = op.textContent.replace(/\u2061/g, '');
    if (!FUNCS.test(text)) continue;
    if (leaves(op).some(e => getComputedStyle(e).fontStyle === 'italic')) faults.italic.push(name(op) + ' (' + text + ')');
    const r = op.getBoundingClientRect();
    const px = parseFloat(getComputedStyle(op).fontSize);
    for (const [side, sib] of [['after', op.nextElementSibling], ['before', op.previousElementSibling]]) {
      let s = sib;
      while (s && s.classList.contains('mspace')) s = side === 'after' ? s.nextElementSibling : s.previousElementSibling;
      if (!s || !s.classList.contains('mord') || !s.textContent.trim()) continue;
      const q = s.getBoundingClientRect();
      const gap = side === 'after' ? q.left - r.right : r.left - q.right;
      if (gap < 0.1 * px) faults.glued.push(name(op) + ' (' + text + ' ' + side + ', gap ' + gap.toFixed(1) + 'px)');
    }
  }
  // \operatorname{...} is upright, like \mathrm.
  for (const m of document.querySelectorAll('.lit-prose [data-tex*="\\operatorname"]')) {
    // The operator's own letters (not its sub/superscripts, not a big symbol like \sum).
    const ops = Array.from(m.querySelectorAll('.katex-html .mop:not(.op-symbol):not(.op-limits)'));
    const letters = (op) => leaves(op).filter(e => !e.closest('.msupsub, .mtight'));
    if (!ops.length || ops.some(op => letters(op).some(e => getComputedStyle(e).fontStyle === 'italic'))) faults.italic.push(m.dataset.tex);
  }
  // A display equation is never cut off by its column.
  for (const d of document.querySelectorAll('.lit-prose .lit-math-display')) {
    if (d.scrollWidth > d.clientWidth + 1) faults.clipped.push(d.dataset.tex.slice(0, 80) + ' (' + d.scrollWidth + ' > ' + d.clientWidth + ')');
  }
  // No copy button over the text of a code block in the prose (doctests).
  for (const pre of document.querySelectorAll('.lit-prose pre')) {
    const button = pre.querySelector('button, .md-clipboard');
    const code = pre.querySelector('code');
    if (!button || !code || getComputedStyle(button).opacity === '0') continue;
    const b = button.getBoundingClientRect();
    const walker = document.createTreeWalker(code, NodeFilter.SHOW_TEXT);
    let hit = null;
    while (!hit && walker.nextNode()) {
      if (!walker.currentNode.textContent.trim()) continue;
      const range = document.createRange();
      range.selectNodeContents(walker.currentNode);
      for (const t of range.getClientRects()) {
        if (t.width > 0 && t.left < b.right && t.right > b.left && t.top < b.bottom && t.bottom > b.top) { hit = walker.currentNode.textContent; break; }
      }
    }
    if (hit !== null) faults.covered.push(code.textContent.slice(0, 40) + ' (under the button: ' + JSON.stringify(hit.slice(0, 20)) + ')');
  }
  return faults;
}"""

_PROSE_TEXT = "() => Array.from(document.querySelectorAll('.lit-prose')).map(e => e.innerText).join('\\n')"


def _expected_math(source: str) -> int:
    from literate.parser import parse
    from literate.tex import extract_math

    return sum(len(extract_math(s.prose)[1]) for s in parse(source))


def test_library_pages_in_chromium(built_site, tmp_path):
    _require(Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}; install it with `apt-get install -y chromium`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "the `playwright` Python package is not installed")
    pages = _library_pages()
    assert pages, "no library pages to check"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []

    with _serve(built_site) as base, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1600, "height": 1000},
            service_workers="block",
        )
        # A loaded machine (CI on 2 cores) can take longer than Playwright's 30 s for a screenshot.
        context.set_default_timeout(120_000)
        try:
            for page_info in pages:
                url = base + page_info.url
                name = page_info.path[:-3].replace("/", "__")
                errors: list[str] = []
                foreign: list[str] = []
                page = context.new_page()
                page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.on(
                    "request",
                    lambda r, foreign=foreign: foreign.append(r.url)
                    if not r.url.startswith((base, "data:", "blob:", "about:"))
                    else None,
                )
                response = page.goto(url, wait_until="load")
                where = page_info.path
                if response is None or response.status != 200:
                    failures.append(f"{where}: HTTP {response.status if response else '?'} for {url}")
                    page.close()
                    continue

                # Desktop: prose beside code.
                layout = page.evaluate(_SIDE_BY_SIDE)
                if layout["bad"]:
                    failures.append(f"{where}: prose not beside code at 1600px: {layout['bad'][:3]}")
                code_rows = page.locator(".lit-code:not(.lit-empty)").count()
                if code_rows and not layout["rows"]:
                    failures.append(f"{where}: code cells but no row with prose beside code")

                # Math: rendered (one <math> for screen readers per formula), no TeX left in the visible prose.
                text = page.evaluate(_PROSE_TEXT)
                for tex in ("$$", "\\frac", "\\begin"):
                    if tex in text:
                        failures.append(f"{where}: visible text contains {tex!r}")
                expected = _expected_math(page_info.source)
                found = page.locator(".lit-prose math").count()
                if found != expected:
                    failures.append(f"{where}: {found} <math> elements in the prose, expected {expected}")
                if page.locator(".math-error").count():
                    failures.append(f"{where}: math that could not be rendered")
                for fault, items in page.evaluate(_MATH_FAULTS).items():
                    if items:
                        failures.append(f"{where}: math/code {fault}: {items[:4]}")

                # The source link works (when it points into the site itself).
                source = page.evaluate("() => (document.querySelector('.lit-bar-source a') || {}).href || ''")
                if not source:
                    failures.append(f"{where}: no link to the source file")
                elif source.startswith(base):
                    status = context.request.get(source).status
                    if status != 200:
                        failures.append(f"{where}: source link {source} gives HTTP {status}")

                # Every line of the file has its anchor.
                n_lines = len(page_info.source.replace("\r\n", "\n").rstrip("\n").split("\n"))
                ids = page.evaluate("() => document.querySelectorAll('.literate [id^=\"L\"]').length")
                if ids != n_lines:
                    failures.append(f"{where}: {ids} line anchors for {n_lines} lines")

                _screenshot(page, SCREENSHOTS / f"{name}-desktop.png")

                # No code row, table or equation clipped, at 1600 and at 1280px.
                _check_clipped(page, where, failures)

                # Mobile: one column, no sideways scrolling.
                page.set_viewport_size({"width": 390, "height": 844})
                page.wait_for_timeout(50)
                overflow = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
                if overflow[0] > overflow[1]:
                    failures.append(f"{where}: scrollWidth {overflow[0]} > innerWidth {overflow[1]} at 390px")
                _screenshot(page, SCREENSHOTS / f"{name}-mobile.png")

                if errors:
                    failures.append(f"{where}: console errors: {errors[:3]}")
                if foreign:
                    failures.append(f"{where}: requests outside 127.0.0.1: {sorted(set(foreign))[:5]}")
                page.close()
        finally:
            context.close()

    assert not failures, "\n".join(failures)


# Runs in the page: every box that would hide part of a code line, a table or an equation behind a
# sideways scroll (its content wider than itself), and every table that sticks out of the text column.
_CLIPPED = """() => {
  const out = [];
  const root = document.querySelector('.md-content__inner') || document.body;
  const right = root.getBoundingClientRect().right;
  const describe = (el) => el.tagName.toLowerCase() + '.' + (el.classList[0] || '') + ' "' +
    (el.textContent || '').trim().replace(/\\s+/g, ' ').slice(0, 60) + '"';
  const boxes = 'pre, pre > code, table, .lit-code, .md-typeset__scrollwrap, .md-typeset__table, .lit-math-display';
  for (const el of root.querySelectorAll(boxes)) {
    const cs = getComputedStyle(el);
    if (cs.display === 'none' || cs.overflowX === 'visible') continue;
    if (el.scrollWidth > el.clientWidth + 1) out.push(describe(el) + ' ' + el.scrollWidth + ' > ' + el.clientWidth + 'px');
  }
  for (const t of root.querySelectorAll('table')) {
    const r = t.getBoundingClientRect();
    if (r.width && r.right > right + 1) out.push(describe(t) + ' ends at ' + Math.round(r.right) + ' > ' + Math.round(right) + 'px');
  }
  return out;
}"""


def _check_clipped(page, where: str, failures: list[str]) -> None:
    for width in (1600, 1280):
        page.set_viewport_size({"width": width, "height": 1000})
        clipped = page.evaluate(_CLIPPED)
        if clipped:
            failures.append(f"{where} at {width}px: {len(clipped)} clipped: {clipped[:3]}")


def test_nothing_is_clipped_on_the_other_pages(built_site):
    """Every other HTML page of the built site (landing page, indexes, experiments, API, results,
    benchmarks, notebooks), in one browser, at both desktop widths; the library pages get the same
    check in `test_library_pages_in_chromium`, so each page is loaded once."""
    _require(Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}; install it with `apt-get install -y chromium`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "the `playwright` Python package is not installed")
    library = {page_info.url + "index.html" for page_info in _library_pages()}
    every = sorted(p.relative_to(built_site).as_posix() for p in built_site.rglob("*.html") if p.name != "404.html")
    pages = [rel for rel in every if rel not in library]
    assert len(library & set(every)) == len(library), "a library page is missing from the built site"
    assert {"index.html", "results/index.html", "benchmarks/index.html"} <= set(pages), pages[:10]
    failures: list[str] = []
    with _serve(built_site) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000}, service_workers="block")
            page.set_default_timeout(120_000)
            # Pictures do not change what is clipped; not loading them keeps the test quick.
            page.route("**/*.{png,jpg,jpeg,gif,svg}", lambda route: route.abort())
            for rel in pages:
                page.goto(base + rel, wait_until="load")
                _check_clipped(page, rel, failures)
        finally:
            browser.close()
    assert not failures, "\n".join(failures)
