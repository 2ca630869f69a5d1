"""`help(Decoder)` opens with a short summary and the keywords most used, before the full table."""

import pydoc

import pytest

from labml_style_nn import AttentionLayers, Decoder, Encoder


@pytest.mark.parametrize("cls", [Decoder, Encoder, AttentionLayers])
def test_help_leads_with_a_summary_and_the_most_used_keywords(cls):
    lines = pydoc.render_doc(cls, renderer=pydoc.plaintext).splitlines()
    most_used = next(i for i, line in enumerate(lines) if "Most used keywords" in line)
    table = next(i for i, line in enumerate(lines) if "Keywords (generated from" in line)
    assert most_used < 40 and most_used < table < 60, (most_used, table)
    head = "\n".join(lines[:table])
    for keyword in ("dim, depth, heads", "rotary_pos_emb", "ff_glu", "attn_kv_heads", "cross_attend"):
        assert keyword in head, keyword
    assert len(lines) > table + 100  # the full table still follows
