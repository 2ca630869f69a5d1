r"""
# Loading pretrained checkpoints

A checkpoint of Hugging Face `transformers` is two things: a `config.json` that names the
architecture (`model_type`) and its sizes, and the weights, a flat dictionary from names to tensors
stored in `*.safetensors` files (several *shards* plus an index for large models).  Converting it
takes three steps, each done by the page of its architecture ([GPT-2](gpt2.md), [LLaMA](llama.md),
...):

1. `build(config)`: the same architecture written with this library's keyword API, from the
   config's sizes;
2. `convert(config, state)`: every weight renamed (and, where the layouts differ, reshaped) to the
   name our model gives it;
3. `load_state_dict(..., strict=True)`: every weight of ours is filled and none of theirs is left
   over, so a forgotten or misnamed weight is an error, never a silently random layer.

`from_hf(model)` does this for a `transformers` model in memory; `from_pretrained(path)` for a
checkpoint on disk, reading `config.json` and the safetensors files directly, so that loading a
local folder needs neither `transformers` nor a network.  A hub name (`"gpt2"`) is fetched with
`huggingface_hub` into its cache when it is installed and a network is reachable.

An architecture module is any file of this package with the attributes `MODEL_TYPES` (the
`model_type` values it reads), `build` and `convert`; this file finds them by scanning the package,
so adding an architecture is adding a file.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn


#
# ## Finding the architecture of a config
def _architecture_modules() -> tuple[dict[str, ModuleType], dict[str, str]]:
    """`{model_type: module}` for every architecture file of the package, and import errors by file."""
    found, errors = {}, {}
    package_name = __name__.rpartition(".")[0]  # this file's package, `labml_style_nn.pretrained`
    package = importlib.import_module(package_name)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name in ("loading", "common") or info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{package_name}.{info.name}")
        except ImportError as e:  # an architecture whose optional dependency is missing
            errors[info.name] = str(e)
            continue
        for model_type in getattr(module, "MODEL_TYPES", ()):
            found[model_type] = module
    return found, errors


def supported_model_types() -> list[str]:
    """Every `config.model_type` that `from_hf` and `from_pretrained` convert."""
    return sorted(_architecture_modules()[0])


def architecture(config: dict[str, Any]) -> ModuleType:
    """The architecture module for a config dict; `ValueError` naming `model_type` if there is none."""
    if not isinstance(config, dict) or "model_type" not in config:
        raise ValueError("config: expected a dict with a 'model_type' entry, as in a Hugging Face config.json")
    found, errors = _architecture_modules()
    model_type = config["model_type"]
    if model_type not in found:
        failed = f" (could not import: {errors})" if errors else ""
        raise ValueError(f"model_type: no converter for {model_type!r}; the converters are for "
                         f"{', '.join(sorted(found))} (GPT-2, LLaMA, Qwen2, Mistral, Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek-V3, T5, mT5 and ViT checkpoints of "
                         f"Hugging Face transformers){failed}")
    return found[model_type]


def from_config_and_state(config: dict[str, Any], state: dict[str, Tensor],
                          dtype: Optional[torch.dtype] = None) -> nn.Module:
    """Build our model for `config`, load the converted `state` strictly, return it in eval mode."""
    arch = architecture(config)
    model = arch.build(config)
    model.load_state_dict(arch.convert(config, state), strict=True)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


#
# ## From a model in memory
def from_hf(hf_model: nn.Module, dtype: Optional[torch.dtype] = None) -> nn.Module:
    """The model of this library equal to a `transformers` model, with its weights, in eval mode.

    `hf_model` is e.g. a `GPT2LMHeadModel` or `LlamaForCausalLM`; the returned model computes the
    same logits (a test checks it within 1e-4 in float32).
    """
    config = getattr(hf_model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise TypeError(f"hf_model: expected a Hugging Face transformers model with a .config, "
                        f"got {type(hf_model).__name__}")
    state = {k: v.detach() for k, v in hf_model.state_dict().items()}
    return from_config_and_state(config.to_dict(), state, dtype)


#
# ## From a checkpoint on disk
#
# A folder holds `config.json` and either one `model.safetensors` or shards listed by
# `model.safetensors.index.json` (`{"weight_map": {name: file}}`).
def read_checkpoint(folder: Union[str, Path]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """`(config, state)` of a checkpoint folder, read without `transformers`."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"name_or_path: {folder} has no config.json")
    config = json.loads(config_file.read_text())
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"name_or_path: {folder} has no *.safetensors weights "
                                "(PyTorch .bin checkpoints are not read; re-save with safe_serialization)")
    state: dict[str, Tensor] = {}
    for name in files:
        state.update(load_file(str(folder / name)))
    return config, state


def _download(name: str, revision: Optional[str]) -> Path:
    """A hub repository's config and safetensors files, through `huggingface_hub`'s cache."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise OSError(f"name_or_path: {name!r} is not a local folder, and fetching it from the Hugging Face "
                      "hub needs huggingface_hub (pip install 'labml-style-nn[hf]'); or pass the path of a "
                      "folder holding config.json and *.safetensors") from e
    patterns = ["config.json", "*.safetensors", "model.safetensors.index.json"]
    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=patterns))
    except Exception as e:  # no network, unknown repository, no safetensors, ...
        raise OSError(f"name_or_path: {name!r} is not a local folder, and fetching it from the Hugging Face "
                      f"hub (and its local cache) failed: {type(e).__name__}: {str(e).rstrip('.')}.  With no network, pass the "
                      "path of a folder holding config.json and *.safetensors (for example one written by "
                      "save_pretrained, or a copy of the hub's files)") from e


def from_pretrained(name_or_path: Union[str, os.PathLike], *, revision: Optional[str] = None,
                    dtype: Optional[torch.dtype] = None) -> nn.Module:
    """Load a checkpoint folder (or a hub name, through `huggingface_hub`) as a model of this library.

    `transformers` is not needed; a local folder needs no network either.
    """
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        if os.path.isabs(str(name_or_path)) or str(name_or_path).startswith("."):
            raise FileNotFoundError(f"name_or_path: no folder at {path}")
        path = _download(str(name_or_path), revision)
    config, state = read_checkpoint(path)
    return from_config_and_state(config, state, dtype)
