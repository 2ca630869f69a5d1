"""Keywords are declared beside their techniques; the parser checks every declared type and reads nothing else."""

import importlib
import inspect
import pathlib

import pytest

from labml_style_nn import Decoder, keyword_reference, keywords, options
from labml_style_nn.keyword_descriptions import XTRANSFORMERS_2_31

ROOT = pathlib.Path(__file__).resolve().parents[2]


def all_declared():
    return [(spelt, k) for spelt, k in keyword_reference.declared_keywords() if not k.required]


@pytest.mark.parametrize("value", [object(), "yes"])
def test_every_declared_type_is_checked(value):
    # A value of no declared type is a ValueError that names the keyword, for every keyword.
    for spelt, k in all_declared():
        if "str" in k.type_name() and isinstance(value, str) and not k.choices:
            continue  # any string is a str
        with pytest.raises(ValueError, match=spelt):
            options.parse_layer_options("Decoder", 16, 1, {spelt: value})


def test_wrong_types_name_the_keyword():
    with pytest.raises(ValueError, match="rotary_pos_emb: expected True or False, got 'yes'"):
        Decoder(dim=16, depth=1, rotary_pos_emb="yes")
    with pytest.raises(ValueError, match="attn_dim_head: expected int"):
        Decoder(dim=16, depth=1, attn_dim_head=8.0)
    with pytest.raises(ValueError, match="cross_attn_num_mem_kv: expected int"):
        Decoder(dim=16, depth=1, cross_attend=True, cross_attn_num_mem_kv="4")
    with pytest.raises(ValueError, match="ff_mult: expected"):
        Decoder(dim=16, depth=1, ff_mult=float("nan"))
    # An int is a float; a bool is not an int.
    Decoder(dim=16, depth=1, heads=2, rotary_pos_emb=True, rotary_theta=500000)
    with pytest.raises(ValueError, match="heads"):
        Decoder(dim=16, depth=1, heads=True)


def test_each_keyword_is_explained_on_the_page_that_declares_it():
    for spelt, k in keyword_reference.declared_keywords():
        assert k.doc and not k.doc.endswith("."), spelt
        assert (ROOT / "labml_style_nn" / f"{k.page}.py").is_file(), (spelt, k.page)
    # The technique's own file holds its declaration.
    talking = keywords.declared("attn")["talking_heads"]
    assert talking.page == "attention/talking_heads"
    assert talking in importlib.import_module("labml_style_nn.attention.talking_heads").KEYWORDS


def test_a_keyword_declared_twice_is_refused():
    with pytest.raises(ValueError, match="declared twice"):
        keywords.declare("labml_style_nn.some.other_page", "attn", keywords.Keyword("talking_heads", False, "again"))
    with pytest.raises(ValueError, match="needs a declared type"):
        keywords.declare("labml_style_nn.some.page", "attn", keywords.Keyword("untyped_probe", None, "no type"))
    assert "untyped_probe" not in keywords.declared("attn")


def test_options_hold_every_declared_default():
    o = options.parse_layer_options("probe", 16, 2, {"attn_talking_heads": True})
    assert o.attn.talking_heads is True and o.attn.dim_head == 64 and o.ff.mult == 4
    assert set(vars(o.attn)) == set(keywords.declared("attn"))
    with pytest.raises(AttributeError, match="no option 'not_declared'"):
        _ = o.attn.not_declared
    assert o.attn.changed() == {"talking_heads": True}


def test_technique_modules_never_import_the_parser():
    # The layering that keeps import circles out: techniques import keywords.py, never options.py.
    for module in options.KEYWORD_MODULES:
        source = (ROOT / "labml_style_nn" / f"{module.replace('.', '/')}.py").read_text()
        assert "from ..options import" not in source.split("if TYPE_CHECKING:")[0], module


def test_xtransformers_coverage_is_counted_from_the_code():
    cov = keyword_reference.xtransformers_coverage()
    accepted = {k for a, _ in cov.values() for k in a}
    assert "rotary_pos_emb" in accepted and "attn_num_mem_kv" in accepted and "ff_glu" in accepted
    # A declaration that claims to be x-transformers' keyword is one of its keywords.
    spelt_xt = {("attn_" if c == "Attention" else "ff_" if c == "FeedForward" else "") + n
                for c, names in XTRANSFORMERS_2_31.items() for n in names}
    for spelt, k in keyword_reference.declared_keywords():
        assert k.xtransformers == (spelt in spelt_xt), spelt


def test_the_list_of_xtransformers_keywords_is_the_package_s():
    xt = pytest.importorskip("x_transformers.x_transformers")
    import x_transformers

    if getattr(x_transformers, "__version__", "2.31.10") != "2.31.10":
        from importlib.metadata import version
        if version("x-transformers") != "2.31.10":
            pytest.skip("another x-transformers version is installed")
    for cls, names in XTRANSFORMERS_2_31.items():
        params = [p for p in inspect.signature(getattr(xt, cls).__init__).parameters if p not in ("self", "kwargs")]
        assert tuple(params) == names, cls


def test_no_import_circle_in_the_package():
    # Every relative import at run time (imports under `if TYPE_CHECKING:` are not run) goes one way.
    import ast

    package = ROOT / "labml_style_nn"
    graph: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        here = list(parts[:-1])
        tree = ast.parse(path.read_text())
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                and ast.unparse(node.test) == "TYPE_CHECKING" for n in ast.walk(node)}
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level and id(node) not in skip:
                base = here[:len(here) - node.level + 1] + ([node.module] if node.module else [])
                for alias in node.names:
                    candidate = base + [alias.name]
                    is_module = (ROOT.joinpath(*candidate).with_suffix(".py")).is_file()
                    deps.add(".".join(candidate if is_module else base))
        graph[module] = deps - {module}

    def reaches(start: str, goal: str) -> bool:
        todo, seen = [start], set()
        while todo:
            m = todo.pop()
            # A package's __init__ re-exports its modules; a module importing its package is not a circle.
            for d in graph.get(m, ()):
                if d == goal:
                    return True
                if d not in seen and not goal.startswith(d + "."):
                    seen.add(d)
                    todo.append(d)
        return False

    circles = [(m, d) for m, deps in graph.items() for d in deps
               if not m.startswith(d + ".") and "." in m.removeprefix("labml_style_nn")
               and reaches(d, m) and not d.startswith(m + ".")]
    assert circles == [], circles


def test_the_readme_states_the_coverage_the_code_has():
    import re

    text = (ROOT / "README.md").read_text()
    m = re.search(r"Of the (\d+) constructor keywords of x-transformers 2\.31\.10 .*?labml_style_nn accepts (\d+)",
                  text, re.S)
    assert m, "the README's sentence on x-transformers compatibility is missing"
    cov = keyword_reference.xtransformers_coverage()
    total = sum(len(a) + len(m_) for a, m_ in cov.values())
    accepted = sum(len(a) for a, _ in cov.values())
    assert (int(m.group(1)), int(m.group(2))) == (total, accepted)
