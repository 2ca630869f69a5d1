r"""
# The site's structure, from the source tree

Which files become pages, where they go, how the navigation is nested, and the generated Markdown
of the landing page, the section indexes and the API reference. Pure functions of the source tree:
the hook (`hook.py`) feeds their output to MkDocs.
"""

from __future__ import annotations

import ast
import json
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

from .metadata import ModuleMeta, module_docstring, parse_metadata

__all__ = [
    "SUBPACKAGES",
    "SourcePage",
    "Export",
    "discover",
    "discover_notebooks",
    "find_exports",
    "relative_url",
    "page_url",
    "build_nav",
    "landing_markdown",
    "group_index_markdown",
    "api_markdown",
    "api_index_markdown",
]

PACKAGE = "labml_style_nn"
# Subpackages in reading order, with their section titles. Unknown subpackages follow, A to Z.
SUBPACKAGES = {
    "attention": "Attention",
    "positional": "Positional information",
    "feedforward": "Feed-forward",
    "norms": "Normalisation",
    "residual": "Residual connections",
    "memory": "Memory",
    "models": "Models",
    "wrapping": "Around the stack",
    "families": "Model families",
    "transformer_xl": "Transformer-XL",
    "feedback": "Feedback Transformer",
    "generation": "Generation",
}
CORE = ""  # modules at the package root (options.py): the "Core" section
EXPERIMENTS = "experiments"


@dataclass
class SourcePage:
    """One Python file that becomes an annotated page."""

    path: str  # repo-relative POSIX path: labml_style_nn/positional/rotary.py
    group: str  # subpackage, CORE, or EXPERIMENTS
    source: str
    meta: ModuleMeta = field(default_factory=ModuleMeta)
    is_init: bool = False

    @property
    def src_uri(self) -> str:
        """The virtual Markdown file: the source path with `.md` (no file is written)."""
        return self.path[: -len(".py")] + ".md"

    @property
    def url(self) -> str:
        return page_url(self.src_uri)

    @property
    def title(self) -> str:
        if self.meta.title:
            return self.meta.title
        return Path(self.path).stem.replace("_", " ").capitalize()

    @property
    def nav_title(self) -> str:
        """The title as plain text (navigation, window title): `top-$k$` becomes `top-k`."""
        return plain_text(self.title)

    @property
    def module(self) -> str:
        return self.path[: -len(".py")].replace("/", ".")


@dataclass
class Export:
    """A public name of `labml_style_nn.__all__` and where it is defined."""

    name: str
    module: str  # labml_style_nn.positional.rotary
    path: str  # labml_style_nn/positional/rotary.py
    line: int  # line of the definition (1-based), 0 if not found
    kind: str  # "class", "function" or "attribute"
    original: str = ""  # the name in its module, when re-exported under another name

    @property
    def identifier(self) -> str:
        return f"{self.module}.{self.original or self.name}"

    @property
    def group(self) -> str:
        parts = self.path.split("/")
        return parts[1] if len(parts) > 2 else CORE


def plain_text(markdown: str) -> str:
    """Markdown with inline math and code reduced to plain text (for titles)."""
    text = re.sub(r"\$([^$]+)\$", lambda m: re.sub(r"\\([A-Za-z]+)\s*", r"\1 ", m.group(1)).replace("{", "").replace("}", "").strip(), markdown)
    return re.sub(r"[`*]", "", text).strip()


def page_url(src_uri: str) -> str:
    """The URL MkDocs gives a Markdown file with `use_directory_urls: true`."""
    stem = src_uri[: -len(".md")]
    if stem == "index":
        return ""
    if stem.endswith("/index"):
        return stem[: -len("index")]
    return stem + "/"


def relative_url(url: str, from_url: str) -> str:
    """`url` (site-relative, may carry `#fragment`) as seen from the page at `from_url`."""
    path, hash_, fragment = url.partition("#")
    base = from_url if from_url.endswith("/") or not from_url else posixpath.dirname(from_url) + "/"
    rel = posixpath.relpath("/" + path, "/" + base) if path or base else "."
    if rel == ".":
        rel = "./"
    elif path.endswith("/") and not rel.endswith("/"):
        rel += "/"
    return rel + (hash_ + fragment if hash_ else "")


def _only_reexports(source: str) -> bool:
    """True when a file holds nothing but a docstring, imports, `__all__`, `__version__` and private set-up."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        # A private set-up function of the package, and the call that runs it, teach nothing.
        if isinstance(node, ast.FunctionDef) and node.name.startswith("_"):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) \
                and isinstance(node.value.func, ast.Name) and node.value.func.id.startswith("_"):
            continue
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if all(isinstance(t, ast.Name) and t.id in ("__all__", "__version__") for t in targets):
                continue
        return False
    return True


def discover(root: Path) -> list[SourcePage]:
    """Every library and experiment file that becomes a page, in navigation order."""
    pages: list[SourcePage] = []
    for top in (PACKAGE, EXPERIMENTS):
        base = root / top
        if not base.is_dir():
            continue
        for file in sorted(base.rglob("*.py")):
            rel = file.relative_to(root).as_posix()
            if "__pycache__" in rel or any(part.startswith(".") for part in file.relative_to(root).parts):
                continue
            source = file.read_text(encoding="utf-8")
            parts = rel.split("/")
            if top == EXPERIMENTS:
                group = EXPERIMENTS
            else:
                group = parts[1] if len(parts) > 2 else CORE
            is_init = file.name == "__init__.py"
            if is_init and _only_reexports(source):
                # Shown as the section's index page, not as a page of its own.
                page = SourcePage(rel, group, source, parse_metadata(module_docstring(source)), is_init=True)
                pages.append(page)
                continue
            pages.append(SourcePage(rel, group, source, parse_metadata(module_docstring(source)), is_init=is_init))
    return pages


def group_order(groups: set[str]) -> list[str]:
    known = [g for g in SUBPACKAGES if g in groups]
    unknown = sorted(g for g in groups if g not in SUBPACKAGES and g not in (CORE, EXPERIMENTS))
    order = ([CORE] if CORE in groups else []) + known + unknown
    return order + ([EXPERIMENTS] if EXPERIMENTS in groups else [])


def group_title(group: str) -> str:
    if group == CORE:
        return "Core"
    if group == EXPERIMENTS:
        return "Experiments"
    return SUBPACKAGES.get(group, group.replace("_", " ").capitalize())


def group_index_uri(group: str) -> str:
    if group == CORE:
        return f"{PACKAGE}/index.md"
    if group == EXPERIMENTS:
        return f"{EXPERIMENTS}/index.md"
    return f"{PACKAGE}/{group}/index.md"


def content_pages(pages: list[SourcePage], group: str) -> list[SourcePage]:
    """A group's annotated pages: the file named like the subpackage first, then A to Z."""
    members = [p for p in pages if p.group == group and not (p.is_init and _only_reexports(p.source))]
    members = [p for p in members if not (p.is_init and p.path.count("/") <= (1 if group == CORE else 2))] + [
        p for p in members if p.is_init and p.path.count("/") <= (1 if group == CORE else 2)
    ]

    def key(p: SourcePage):
        stem = Path(p.path).stem
        main = stem == group or stem == group.rstrip("s") or (group == EXPERIMENTS and stem == "common")
        return (not main, p.path.count("/"), p.path)

    return sorted(members, key=key)


def init_page(pages: list[SourcePage], group: str) -> SourcePage | None:
    want = f"{PACKAGE}/__init__.py" if group == CORE else f"{PACKAGE}/{group}/__init__.py"
    if group == EXPERIMENTS:
        want = f"{EXPERIMENTS}/__init__.py"
    return next((p for p in pages if p.path == want), None)


def discover_notebooks(root: Path) -> list[tuple[str, str]]:
    """`(repo-relative path, title)` of every notebook under `notebooks/`."""
    out = []
    base = root / "notebooks"
    if not base.is_dir():
        return out
    for nb in sorted(base.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in nb.parts:
            continue
        title = nb.stem.replace("_", " ").capitalize()
        try:
            data = json.loads(nb.read_text(encoding="utf-8"))
            for cell in data.get("cells", []):
                if cell.get("cell_type") == "markdown":
                    text = "".join(cell.get("source", []))
                    m = re.search(r"^#\s+(.+)$", text, re.M)
                    if m:
                        title = m.group(1).strip()
                    break
        except (ValueError, OSError):
            pass
        out.append((nb.relative_to(root).as_posix(), title))
    return out


def build_nav(pages: list[SourcePage], exports: list[Export], notebooks: list[tuple[str, str]], extra_docs: list[str]) -> list:
    """The `nav` of `mkdocs.yml`, mirroring the package tree."""
    nav: list = [{"Home": "index.md"}]
    groups = {p.group for p in pages}
    for group in group_order(groups):
        entries: list = [group_index_uri(group)]
        for page in content_pages(pages, group):
            entries.append({page.nav_title: page.src_uri})
        nav.append({group_title(group): entries})
    api = ["api/index.md", {"Keyword reference": "api/keywords.md"}] + \
        [{group_title(g): f"api/{g or 'core'}.md"} for g in _export_groups(exports)]
    nav.append({"API reference": api})
    if "results.md" in extra_docs:
        nav.append({"Results": "results.md"})
    if "benchmarks.md" in extra_docs:
        nav.append({"Benchmarks": "benchmarks.md"})
    if notebooks:
        nav.append({"Notebooks": ["notebooks/index.md"] + [{t: p[: -len(".ipynb")] + ".md"} for p, t in notebooks]})
    if "dev/conventions.md" in extra_docs:
        nav.append({"Contributing": ["dev/conventions.md"]})
    return nav


# ## Public names


def _definitions(source: str) -> dict[str, tuple[int, str]]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    found: dict[str, tuple[int, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            found[node.name] = (min([node.lineno, *[d.lineno for d in node.decorator_list]]), "class")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found[node.name] = (min([node.lineno, *[d.lineno for d in node.decorator_list]]), "function")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    found[t.id] = (node.lineno, "attribute")
    return found


def _imports(source: str, module: str, is_package: bool) -> dict[str, tuple[str, str]]:
    """`name -> (absolute module, original name)` for the `from ... import` of a file."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    package = module if is_package else module.rpartition(".")[0]
    found = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                found[alias.asname or alias.name] = (target, alias.name)
    return found


def _all_names(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            try:
                return [str(x) for x in ast.literal_eval(node.value)]
            except ValueError:
                return []
    return []


def find_exports(root: Path) -> list[Export]:
    """Resolve each name of `labml_style_nn.__all__` to the module that defines it."""
    init = root / PACKAGE / "__init__.py"
    if not init.is_file():
        return []
    exports = []
    for name in _all_names(init.read_text(encoding="utf-8")):
        module, original = PACKAGE, name
        for _ in range(10):  # follow re-exports
            rel = module.replace(".", "/")
            file, is_package = root / (rel + ".py"), False
            if not file.is_file():
                file, is_package = root / rel / "__init__.py", True
            if not file.is_file():
                break
            source = file.read_text(encoding="utf-8")
            defs = _definitions(source)
            if original in defs and not (is_package and original in _imports(source, module, is_package)):
                line, kind = defs[original]
                exports.append(Export(name, module, file.relative_to(root).as_posix(), line, kind, original))
                break
            imports = _imports(source, module, is_package)
            if original not in imports:
                break
            target, original = imports[original]
            if (root / (target.replace(".", "/") + ".py")).is_file() or (root / target.replace(".", "/") / "__init__.py").is_file():
                module = target
            else:
                break
    return exports


def _export_groups(exports: list[Export]) -> list[str]:
    return group_order({e.group for e in exports})


def api_uri(group: str) -> str:
    return f"api/{group or 'core'}.md"


def api_anchor_url(export: Export) -> str:
    return page_url(api_uri(export.group)) + "#" + export.identifier


# ## Generated Markdown


def _paper_links(meta: ModuleMeta) -> str:
    out = []
    for p in meta.papers:
        who = ", ".join(x for x in (p.authors, p.year) if x)
        out.append(f"[{p.title}]({p.url})" + (f" ({who})" if who else ""))
    return "; ".join(out)


def resolve_source_link(href: str, source_path: str, known: dict[str, SourcePage]) -> tuple[SourcePage, str] | None:
    """The page a relative link of a source file points to: `rotary.py#L3` or `rotary.md`.

    Returns the page and the fragment (with its `#`), or None when the link is not to a page.
    """
    if "://" in href or href.startswith(("/", "#", "mailto:")):
        return None
    path, hash_, fragment = href.partition("#")
    if path.endswith(".md"):
        path = path[: -len(".md")] + ".py"
    if not path.endswith(".py"):
        return None
    target = posixpath.normpath(posixpath.join(posixpath.dirname(source_path), path))
    page = known.get(target)
    return (page, hash_ + fragment) if page is not None else None


_MD_LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(([^()\s]+)\)")


def _relink(markdown: str, page: SourcePage, from_uri: str, known: dict[str, SourcePage]) -> str:
    """Relative links of a docstring, rewritten for a page elsewhere (dropped if unresolvable)."""

    def fix(m: re.Match) -> str:
        href = m.group(2)
        if "://" in href or href.startswith(("#", "mailto:")):
            return m.group(0)
        found = resolve_source_link(href, page.path, known)
        if found is None:
            return m.group(1)
        return f"[{m.group(1)}]({_md_link(found[0].src_uri, from_uri)}{found[1]})"

    return _MD_LINK.sub(fix, markdown)


def _technique_list(pages: list[SourcePage], from_uri: str, known: dict[str, SourcePage] | None = None) -> list[str]:
    known = known if known is not None else {p.path: p for p in pages}
    lines = []
    for page in pages:
        item = f"- **[{page.title}]({_md_link(page.src_uri, from_uri)})**"
        if page.meta.summary:
            item += f" — {_relink(page.meta.summary, page, from_uri, known)}"
        papers = _paper_links(page.meta)
        if papers:
            item += f"<br><span class=\"lit-paper\">{papers}</span>"
        lines.append(item)
    return lines


def _md_link(target_uri: str, from_uri: str) -> str:
    """A Markdown link between two (virtual) `.md` files: MkDocs checks and rewrites it."""
    return posixpath.relpath(target_uri, posixpath.dirname(from_uri) or ".")


GETTING_STARTED = '''\
## Getting started

Install the library from a checkout (the `docs` extra builds this site):

```bash
pip install -e .            # the library: torch, einops
pip install -e ".[dev]"     # + experiments, docs and tests
```

{usage}

Every page of this site is a file of the repository, rendered with its prose beside the code;
every line has an anchor (`#L42`) that you can link to.
'''

USAGE_XTRANSFORMER = '''\
Build a model with the keyword API:

```python
import torch
from labml_style_nn import Decoder, TransformerWrapper

model = TransformerWrapper(
    num_tokens=256,
    max_seq_len=128,
    attn_layers=Decoder(dim=64, depth=2, heads=4, rotary_pos_emb=True),
)
tokens = torch.randint(0, 256, (1, 128))
logits = model(tokens)  # (1, 128, 256)
```'''

USAGE_FALLBACK = '''\
Then import the pieces you need from `labml_style_nn` (every public class is listed in the
[API reference](api/index.md)).'''


def usage_snippet(exports: list[Export]) -> str:
    names = {e.name for e in exports}
    if {"Decoder", "TransformerWrapper"} <= names:
        return USAGE_XTRANSFORMER
    return USAGE_FALLBACK


def landing_markdown(pages: list[SourcePage], exports: list[Export], description: str = "") -> str:
    """The home page: what this is, how to start, and every technique with its paper."""
    out = [
        "---",
        "hide:",
        "  - toc",
        "---",
        "",
        "# labml_style_nn",
        "",
        description
        or "Annotated, tested PyTorch implementations of transformer techniques, readable side by side with their papers.",
        "",
        GETTING_STARTED.format(usage=usage_snippet(exports)),
        "## Techniques",
        "",
    ]
    groups = {p.group for p in pages}
    for group in group_order(groups):
        members = content_pages(pages, group)
        if not members:
            continue
        out.append(f"### [{group_title(group)}]({_md_link(group_index_uri(group), 'index.md')})")
        out += ["", '<div class="lit-catalog" markdown>', ""]
        out.extend(_technique_list(members, "index.md", {p.path: p for p in pages}))
        out += ["", "</div>", ""]
    if not any(content_pages(pages, g) for g in groups):
        out.append("No technique files yet.")
    return "\n".join(out) + "\n"


def group_index_markdown(pages: list[SourcePage], group: str, exports: list[Export]) -> str:
    """A section's index page: the subpackage docstring, its files, its public names."""
    uri = group_index_uri(group)
    init = init_page(pages, group)
    title = group_title(group)
    out = []
    intro = ""
    if init is not None:
        doc = module_docstring(init.source) or ""
        if init.meta.title:
            title = init.meta.title
            doc = doc.split("\n", 1)[1] if "\n" in doc else ""
        intro = _relink(doc.strip(), init, uri, {p.path: p for p in pages})
    out += [f"# {title}", ""]
    if intro:
        out += [intro, ""]
    members = content_pages(pages, group)
    if members:
        known = {p.path: p for p in pages}
        out += ['<div class="lit-catalog" markdown>', ""] + _technique_list(members, uri, known) + ["", "</div>", ""]
    mine = [e for e in exports if e.group == group and group != EXPERIMENTS]
    if mine:
        out += ["## Public names", ""]
        for e in mine:
            api = _md_link(api_uri(e.group), uri) + "#" + e.identifier
            out.append(f"- [`{e.name}`]({api}) — from `{e.module}`")
        out.append("")
    if init is not None:
        out += [f"Source of this index: `{init.path}`.", ""]
    return "\n".join(out)


def api_index_markdown(exports: list[Export]) -> str:
    out = ["# API reference", ""]
    if not exports:
        out += ["`labml_style_nn/__init__.py` exports no public names yet.", ""]
        return "\n".join(out)
    out += [
        "Every public name of `labml_style_nn` (its `__all__`), grouped by subpackage. Each entry links to "
        "its annotated source, where the prose explains the math line by line.  Every keyword of the "
        "layer stacks and wrappers, with its type, default and conflicts, is in the "
        "[keyword reference](keywords.md).",
        "",
    ]
    for group in _export_groups(exports):
        out += [f"## [{group_title(group)}]({_md_link(api_uri(group), 'api/index.md')})", ""]
        for e in exports:
            if e.group == group:
                alias = f" (`{e.identifier}`)" if e.original != e.name else ""
                out.append(f"- [`{e.name}`]({_md_link(api_uri(group), 'api/index.md')}#{e.identifier}){alias}")
        out.append("")
    return "\n".join(out)


def api_markdown(exports: list[Export], group: str) -> str:
    """The mkdocstrings page of one subpackage: one `:::` block per public name."""
    out = [f"# {group_title(group)}: API reference", ""]
    seen = set()
    for e in exports:
        if e.group == group and e.identifier not in seen:
            seen.add(e.identifier)
            out += [f"::: {e.identifier}", ""]
    return "\n".join(out)
