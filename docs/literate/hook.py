r"""
# The MkDocs hook

Wires the pure parts (`parser`, `render`, `metadata`, `site`) into MkDocs:

* `on_config` scans the source tree and writes the `nav` (so new files appear by themselves);
* `on_files` adds a *virtual* page for every source file, the section indexes, the landing page
  and the API reference (`File.generated`: nothing is written into the source tree);
* `on_page_content` replaces a literate page's placeholder by the rendered two-column HTML, and
  renders the math of every other page (protected by `pymdownx.arithmatex`) with KaTeX;
* KaTeX's stylesheet and fonts are added to the site (`assets/katex/`).

Configuration, all optional, under `extra.literate` in `mkdocs.yml`:

* `source_url`: a template for source links, e.g. `https://github.com/o/r/blob/main/{path}`.
  Without it, `repo_url` + `/blob/main/{path}` if `repo_url` is set, otherwise a copy of the file
  served by the site itself under `source/`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files, InclusionLevel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from literate import site as _site  # noqa: E402
from literate.parser import nonraw_backslash_docstrings, parse  # noqa: E402
from literate.render import RenderOptions, render_page  # noqa: E402
from literate.tex import KATEX_DIST, convert_arithmatex  # noqa: E402

log = logging.getLogger("mkdocs.hooks.literate")

_PLACEHOLDER = "LITERATE_PAGE_PLACEHOLDER"
# KaTeX's stylesheet and fonts, served by the site itself (the math is rendered at build time).
_KATEX_CSS = "assets/katex/katex.min.css"
_state: dict = {}


def _root(config) -> Path:
    return Path(config.config_file_path).resolve().parent


def _literate_cfg(config) -> dict:
    extra = config.extra.get("literate") if config.extra else None
    return extra if isinstance(extra, dict) else {}


def on_config(config):
    root = _root(config)
    pages = _site.discover(root)
    exports = _site.find_exports(root)
    notebooks = _site.discover_notebooks(root)
    docs_dir = Path(config.docs_dir)
    extra_docs = sorted(p.relative_to(docs_dir).as_posix() for p in docs_dir.rglob("*.md") if "literate" not in p.parts)
    _state.clear()
    _state.update(root=root, pages=pages, exports=exports, notebooks=notebooks, by_uri={}, by_path={})
    if _literate_cfg(config).get("generate_nav", True):
        config.nav = _site.build_nav(pages, exports, notebooks, extra_docs)
    if _KATEX_CSS not in config.extra_css:
        config.extra_css.insert(0, _KATEX_CSS)
    for page in pages:
        for line in nonraw_backslash_docstrings(page.source):
            log.info("%s:%d: a docstring with a backslash is not raw (r\"\"\"); help() will see escapes", page.path, line)
    return config


def _stub(title: str, hide_toc: bool = True) -> str:
    quoted = title.replace('"', '\\"')
    front = ["---", f'title: "{quoted}"']
    if hide_toc:
        front += ["hide:", "  - toc"]
    return "\n".join(front + ["---", "", _PLACEHOLDER, ""])


def on_files(files: Files, config) -> Files:
    pages = _state["pages"]
    exports = _state["exports"]
    root = _state["root"]

    def add(uri: str, content: str | bytes) -> None:
        existing = files.get_file_from_path(uri)
        if existing is not None:
            files.remove(existing)  # generated content wins over a stale file of the same name
        files.append(File.generated(config, uri, content=content, inclusion=InclusionLevel.INCLUDED))

    if (KATEX_DIST / "katex.min.css").exists():
        add(_KATEX_CSS, (KATEX_DIST / "katex.min.css").read_bytes())
        # Every browser the site supports reads WOFF2, the first format the stylesheet offers.
        for font in sorted((KATEX_DIST / "fonts").glob("*.woff2")):
            add("assets/katex/fonts/" + font.name, font.read_bytes())
    for page in pages:
        _state["by_path"][page.path] = page
        if page.is_init and page not in _site.content_pages(pages, page.group):
            continue
        _state["by_uri"][page.src_uri] = page
        add(page.src_uri, _stub(page.nav_title))
        if _source_url_template(config) is None:
            add("source/" + page.path, page.source)
    for group in {p.group for p in pages}:
        add(_site.group_index_uri(group), _site.group_index_markdown(pages, group, exports))
    add("index.md", _site.landing_markdown(pages, exports, config.site_description or ""))
    add("api/index.md", _site.api_index_markdown(exports))
    add("api/keywords.md", _keyword_reference())
    for group in {e.group for e in exports}:
        add(_site.api_uri(group), _site.api_markdown(exports, group))
    notebooks = _state["notebooks"]
    if notebooks:
        lines = ["# Notebooks", "", "Worked examples, as Jupyter notebooks in the repository's `notebooks/` folder.", ""]
        for path, title in notebooks:
            uri = path[: -len(".ipynb")] + ".md"
            add(uri, _notebook_markdown(root / path, path, title))
            lines.append(f"- [{title}]({uri.split('/', 1)[1]}) — `{path}`")
        add("notebooks/index.md", "\n".join(lines) + "\n")
    return files


def _keyword_reference() -> str:
    """The keyword reference page, generated from `options.py` by `labml_style_nn/keyword_reference.py`."""
    if not (_state["root"] / "labml_style_nn" / "keyword_reference.py").is_file():
        # A project without the generator (the small test project of tests/docs): a stub page.
        return "# Keyword reference\n\nThis project has no keyword reference.\n"
    root = str(_state["root"])
    if root not in sys.path:
        sys.path.insert(0, root)
    from labml_style_nn import keyword_reference

    return keyword_reference.markdown()


def _notebook_markdown(file: Path, path: str, title: str) -> str:
    """A notebook as a page: its Markdown cells as prose, its code cells as code (no outputs)."""
    import json

    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return f"# {title}\n\nThis notebook could not be read.\n"
    out = [f"Source: `{path}`", ""]
    lang = (data.get("metadata", {}).get("language_info", {}) or {}).get("name", "python")
    for cell in data.get("cells", []):
        text = "".join(cell.get("source", []))
        if cell.get("cell_type") == "markdown":
            out += [text, ""]
        elif cell.get("cell_type") == "code" and text.strip():
            out += [f"```{lang}", text, "```", ""]
    if not any(line.startswith("# ") for line in out):
        out.insert(0, f"# {title}\n")
    return "\n".join(out)


def _source_url_template(config) -> str | None:
    template = _literate_cfg(config).get("source_url")
    if template:
        return template
    if config.repo_url:
        branch = _literate_cfg(config).get("branch", "main")
        return config.repo_url.rstrip("/") + f"/blob/{branch}/{{path}}"
    return None


def _docs_link(href: str, page: _site.SourcePage) -> str | None:
    """A relative link from a source file into `docs/` (a figure, the results page) or to a
    notebook, for the page.

    Written relative to the source file (`../../docs/figures/rotary_angles.png`), so it also works
    when the file is read on a code host; on the site it points at the copy MkDocs serves.
    """
    import posixpath

    if "://" in href or href.startswith(("/", "#", "mailto:")):
        return None
    path, hash_, fragment = href.partition("#")
    target = posixpath.normpath(posixpath.join(posixpath.dirname(page.path), path))
    if target.startswith("notebooks/") and target.endswith(".ipynb") and (_state["root"] / target).is_file():
        return _site.relative_url(_site.page_url(target[: -len(".ipynb")] + ".md") + hash_ + fragment, page.url)
    if not target.startswith("docs/"):
        return None
    if not (_state["root"] / target).is_file():
        log.warning("%s: a link to %s, which does not exist", page.path, target)
        return None
    site_path = target[len("docs/") :]
    if site_path.endswith(".md"):
        site_path = _site.page_url(site_path)
    return _site.relative_url(site_path + hash_ + fragment, page.url)


def _link_resolver(page: _site.SourcePage):
    def resolve(href: str) -> str | None:
        in_docs = _docs_link(href, page)
        if in_docs is not None:
            return in_docs
        found = _site.resolve_source_link(href, page.path, _state["by_path"])
        if found is None or found[0].src_uri not in _state["by_uri"]:
            if href.partition("#")[0].endswith(".py") and "://" not in href:
                log.warning("%s: a link to %s, which is not a page of the site", page.path, href)
            return None
        return _site.relative_url(found[0].url + found[1], page.url)

    return resolve


def on_page_content(html: str, page, config, files) -> str:
    uri = page.file.src_uri
    errors: list[str] = []
    source_page = _state.get("by_uri", {}).get(uri)
    if source_page is not None:
        template = _source_url_template(config)
        if template is None:
            source_url = _site.relative_url("source/" + source_page.path, source_page.url)
        else:
            source_url = template.format(path=source_page.path)
        api_links = {
            e.name: _site.relative_url(_site.api_anchor_url(e), source_page.url)
            for e in _state["exports"]
            if e.path == source_page.path
        }
        options = RenderOptions(
            source_path=source_page.path,
            source_url=source_url,
            api_links=api_links,
            link_resolver=_link_resolver(source_page),
        )
        html, errors = render_page(parse(source_page.source), source_page.source, options)
    else:
        html = convert_arithmatex(html, errors)
        if uri.startswith("api/") and uri != "api/index.md":
            html = _link_api_to_source(html, page)
    for error in errors:
        log.warning("%s: math: %s", source_page.path if source_page else uri, error)
    return html


def _link_api_to_source(html: str, page) -> str:
    """After each API entry's heading, a link back to the annotated source of its definition."""
    import re

    for e in _state["exports"]:
        target = _state["by_path"].get(e.path)
        if target is None or target.src_uri not in _state["by_uri"]:
            continue
        href = _site.relative_url(target.url + (f"#L{e.line}" if e.line else ""), page.url)
        pattern = re.compile(r'(<h(\d)[^>]*\bid="' + re.escape(e.identifier) + r'"[^>]*>.*?</h\2>)', re.S)
        link = (
            f'<p class="lit-source-link"><a href="{href}">Annotated source</a> '
            f"<code>{e.path}#L{e.line}</code></p>"
        )
        html = pattern.sub(lambda m, link=link: m.group(1) + link, html, count=1)
    return html


def on_serve(server, config, builder):
    root = _root(config)
    for name in (_site.PACKAGE, _site.EXPERIMENTS, "notebooks", "docs/literate"):
        if (root / name).exists():
            server.watch(str(root / name))
    return server
