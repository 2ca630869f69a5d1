r"""
# Generating with a converted pretrained model

Load a Hugging Face checkpoint as a model of this library and generate from it with the library's
own `AutoregressiveWrapper` and key/value cache.  The whole conversion is one call:

```python
from labml_style_nn import AutoregressiveWrapper, from_pretrained
model = from_pretrained("gpt2")                # or a folder with config.json and *.safetensors
tokens = AutoregressiveWrapper(model).generate(prompt_ids, 40, temperature=0.0)
```

`from_pretrained` reads `config.json`, builds the architecture with the keyword API (see the
[GPT-2](../labml_style_nn/pretrained/gpt2.md) and [LLaMA](../labml_style_nn/pretrained/llama.md)
pages for the options each family needs), and loads every weight under its new name.  A local
folder needs neither `transformers` nor a network; a hub name (`--model gpt2`) is fetched through
`huggingface_hub`'s cache.  Text is turned into token ids with the checkpoint's own tokenizer,
which does need `transformers` (or pass `--prompt-ids`).

With no model given, the script runs offline: it builds a small model with random weights from a
config written here (GPT-2 or LLaMA shaped, `--arch`), saves it as a checkpoint folder, loads that
folder back through `from_pretrained` and generates token ids, which shows the whole path without
downloading anything.

```bash
python experiments/pretrained_generate.py --smoke                # offline, tiny random model, 8 tokens: a check that it runs
python experiments/pretrained_generate.py                        # offline, random GPT-2-shaped model
python experiments/pretrained_generate.py --arch llama           # offline, random LLaMA-shaped model
python experiments/pretrained_generate.py --model gpt2 --prompt "The meaning of life is"
python experiments/pretrained_generate.py --model /path/to/folder --prompt "Once upon a time"
```
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep, not spin: see experiments/common.py

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from experiments.cli import _summary  # noqa: E402
from labml_style_nn import AutoregressiveWrapper, from_pretrained  # noqa: E402

# Small random checkpoints for the offline run: the configs as `config.json` would hold them.
OFFLINE_CONFIGS = {
    "gpt2": dict(model_type="gpt2", vocab_size=512, n_positions=128, n_embd=64, n_layer=2, n_head=4,
                 activation_function="gelu_new", layer_norm_epsilon=1e-5, tie_word_embeddings=True),
    "llama": dict(model_type="llama", vocab_size=512, max_position_embeddings=128, hidden_size=64,
                  intermediate_size=176, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  rms_norm_eps=1e-6, rope_theta=10000.0, hidden_act="silu", tie_word_embeddings=False),
}


SMOKE_TOKENS = 8


def write_random_checkpoint(arch: str, folder: Path, seed: int) -> Path:
    """A checkpoint folder (`config.json` + `model.safetensors`) of a random model, written without `transformers`."""
    from safetensors.torch import save_file

    from labml_style_nn.pretrained import architecture

    config = OFFLINE_CONFIGS[arch]
    torch.manual_seed(seed)
    model = architecture(config).build(config)
    # Without `transformers` we cannot build their model, so we build ours and write its weights
    # under the names a Hugging Face checkpoint gives them.
    state = _to_hf_names(arch, config, model.state_dict())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    return folder


def _to_hf_names(arch: str, config: dict, ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename our weights to the checkpoint's names (the mapping tables of the two pages, read backwards)."""
    out: dict[str, torch.Tensor] = {}
    if arch == "gpt2":
        out["transformer.wte.weight"], out["transformer.wpe.weight"] = ours["token_emb.weight"], ours["pos_emb.emb.weight"]
        for i in range(config["n_layer"]):
            a, f, h = f"attn_layers.blocks.{2 * i}", f"attn_layers.blocks.{2 * i + 1}", f"transformer.h.{i}"
            for ours_name, theirs in ((f"{a}.pre_norm", f"{h}.ln_1"), (f"{f}.pre_norm", f"{h}.ln_2")):
                out[f"{theirs}.weight"], out[f"{theirs}.bias"] = ours[f"{ours_name}.weight"], ours[f"{ours_name}.bias"]
            for ours_name, theirs in ((f"{a}.fn.to_qkv", f"{h}.attn.c_attn"), (f"{a}.fn.to_out", f"{h}.attn.c_proj"),
                                      (f"{f}.fn.proj_in.0", f"{h}.mlp.c_fc"), (f"{f}.fn.proj_out", f"{h}.mlp.c_proj")):
                out[f"{theirs}.weight"], out[f"{theirs}.bias"] = ours[f"{ours_name}.weight"].t(), ours[f"{ours_name}.bias"]
        out["transformer.ln_f.weight"] = ours["attn_layers.final_norm.weight"]
        out["transformer.ln_f.bias"] = ours["attn_layers.final_norm.bias"]
        return out
    d, h, g = config["hidden_size"] // config["num_attention_heads"], config["num_attention_heads"], \
        config["num_key_value_heads"]
    out["model.embed_tokens.weight"], out["lm_head.weight"] = ours["token_emb.weight"], ours["to_logits.weight"]
    out["model.norm.weight"] = ours["attn_layers.final_norm.gamma"]
    for i in range(config["num_hidden_layers"]):
        a, f, layer = f"attn_layers.blocks.{2 * i}", f"attn_layers.blocks.{2 * i + 1}", f"model.layers.{i}"
        out[f"{layer}.input_layernorm.weight"] = ours[f"{a}.pre_norm.gamma"]
        out[f"{layer}.post_attention_layernorm.weight"] = ours[f"{f}.pre_norm.gamma"]
        q, k, v = ours[f"{a}.fn.to_qkv.weight"].split((h * d, g * d, g * d))
        out[f"{layer}.self_attn.q_proj.weight"], out[f"{layer}.self_attn.k_proj.weight"] = q, k
        out[f"{layer}.self_attn.v_proj.weight"] = v
        out[f"{layer}.self_attn.o_proj.weight"] = ours[f"{a}.fn.to_out.weight"]
        up, gate = ours[f"{f}.fn.proj_in.proj.weight"].chunk(2)
        out[f"{layer}.mlp.up_proj.weight"], out[f"{layer}.mlp.gate_proj.weight"] = up, gate
        out[f"{layer}.mlp.down_proj.weight"] = ours[f"{f}.fn.proj_out.weight"]
    return out


def tokenizer_for(folder_or_name: str):
    """The checkpoint's tokenizer through `transformers`, or `None` when that is not possible."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder_or_name)
    except Exception:  # not installed, no tokenizer files, no network
        return None


def main(argv=None) -> torch.Tensor:
    # The page's title and first paragraph, in plain words, cut before the sentence that announces the code.
    parser = argparse.ArgumentParser(description=_summary(__doc__))
    parser.add_argument("--smoke", action="store_true", help="the offline run on the tiny random model, "
                        f"{SMOKE_TOKENS} new tokens: a check that it runs (no --model)")
    parser.add_argument("--model", default="", help="a checkpoint folder or a hub name such as gpt2 "
                        "(default: none, a small random model built offline)")
    parser.add_argument("--arch", choices=sorted(OFFLINE_CONFIGS), default="gpt2",
                        help="the shape of the offline random model")
    parser.add_argument("--prompt", default="The meaning of life is", help="text prompt (needs the tokenizer)")
    parser.add_argument("--prompt-ids", default="", help="comma-separated token ids instead of --prompt")
    parser.add_argument("--new-tokens", type=int, default=40, help="how many tokens to generate")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 decodes greedily")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.smoke and args.model:
        parser.error("argument --smoke: runs the offline tiny model; leave --model out (or --smoke)")
    if args.smoke:
        args.new_tokens = SMOKE_TOKENS
    torch.manual_seed(args.seed)

    tokenizer = None
    if args.model:
        model = from_pretrained(args.model)
        tokenizer = tokenizer_for(args.model)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            folder = write_random_checkpoint(args.arch, Path(tmp) / args.arch, args.seed)
            model = from_pretrained(folder)
        print(f"offline: a random {args.arch}-shaped model, saved and loaded back through from_pretrained")
    print(f"{type(model).__name__} with {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")

    if args.prompt_ids or tokenizer is None:
        ids = [int(t) for t in args.prompt_ids.split(",")] if args.prompt_ids else [1, 2, 3, 4]
    else:
        ids = tokenizer(args.prompt)["input_ids"]
    prompt = torch.tensor([ids])
    out = AutoregressiveWrapper(model).generate(prompt, args.new_tokens, temperature=args.temperature)
    print("prompt ids:", ids)
    print("generated ids:", out[0].tolist())
    if tokenizer is not None:
        print(tokenizer.decode(ids + out[0].tolist()))
    return out


if __name__ == "__main__":
    main()
