"""ViT: our keyword-built `ViTransformerWrapper` against Hugging Face `transformers`' `ViTForImageClassification`."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from labml_style_nn import ViTransformerWrapper, from_hf, from_pretrained  # noqa: E402
from labml_style_nn.pretrained import vit  # noqa: E402

ATOL = 1e-4

CONFIGS = {
    "rgb-3-heads": dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=40,
                        image_size=16, patch_size=4, num_channels=3, num_labels=5),
    # One channel, 5 heads, no biases on q/k/v, one layer, an MLP width that is no multiple of D.
    "grey-5-heads": dict(hidden_size=30, num_hidden_layers=1, num_attention_heads=5, intermediate_size=37,
                         image_size=12, patch_size=6, num_channels=1, num_labels=3, qkv_bias=False,
                         layer_norm_eps=0.1),  # an epsilon that matters: norm_eps must carry it
    "tanh-gelu": dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                      image_size=8, patch_size=2, num_channels=2, num_labels=4, hidden_act="gelu_new",
                      layer_norm_eps=1e-6),
}


def make_hf(name: str):
    torch.manual_seed(0)
    # Weights larger than the usual 0.02, so that attention is far from uniform and logits are of order one.
    config = transformers.ViTConfig(initializer_range=0.3, **CONFIGS[name])
    hf = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():
        # Initialised at zero or one by `transformers`; random values make every weight count.
        for p in hf.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return hf


def images(hf, b: int = 3):
    c = hf.config
    return torch.randn(b, c.num_channels, c.image_size, c.image_size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_match(name):
    hf = make_hf(name)
    ours = from_hf(hf)
    assert isinstance(ours, ViTransformerWrapper) and not ours.training
    img = images(hf)
    with torch.no_grad():
        diff = (ours(img) - hf(pixel_values=img).logits).abs().max().item()
    assert diff < ATOL


def test_hub_names_of_older_checkpoints_convert_alike():
    hf = make_hf("rgb-3-heads")
    state = hf.state_dict()
    old = {}
    for k, v in state.items():
        k = k.replace("vit.layers.", "vit.encoder.layer.").replace(".attention.q_proj.", ".attention.attention.query.")
        k = k.replace(".attention.k_proj.", ".attention.attention.key.").replace(".attention.v_proj.",
                                                                                 ".attention.attention.value.")
        k = k.replace(".attention.o_proj.", ".attention.output.dense.").replace(".mlp.fc1.", ".intermediate.dense.")
        old[k.replace(".mlp.fc2.", ".output.dense.")] = v
    assert "vit.encoder.layer.0.attention.attention.query.weight" in old
    config = hf.config.to_dict()
    new, renamed = vit.convert(config, state), vit.convert(config, old)
    assert new.keys() == renamed.keys() and all(torch.equal(new[k], renamed[k]) for k in new)


def test_convert_refuses_unknown_weights_and_missing_head():
    hf = make_hf("rgb-3-heads")
    config, state = hf.config.to_dict(), dict(hf.state_dict())
    with pytest.raises(ValueError, match="does not know"):
        vit.convert(config, {**state, "vit.layers.0.attention.extra.weight": torch.zeros(1)})
    # A pooler is not on the classification path, and is left alone as `transformers` does.
    assert vit.convert(config, {**state, "vit.pooler.dense.weight": torch.zeros(1)}).keys() == \
        vit.convert(config, state).keys()
    del state["classifier.weight"]
    with pytest.raises(KeyError, match="ViTForImageClassification"):
        vit.convert(config, state)
    with pytest.raises(ValueError, match="square"):
        vit.build({**config, "image_size": [16, 8]})


def test_from_pretrained_folder(tmp_path):
    hf = make_hf("grey-5-heads")
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(tmp_path)
    img = images(hf)
    with torch.no_grad():
        assert (ours(img) - hf(pixel_values=img).logits).abs().max().item() < ATOL
