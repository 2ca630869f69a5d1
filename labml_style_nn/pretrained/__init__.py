"""Pretrained checkpoints of Hugging Face `transformers`, converted to models of this library.

One file per architecture (`gpt2.py`, `llama.py`, ...), each with `MODEL_TYPES`, `build(config)` and
`convert(config, state)`; `loading.py` finds them and loads weights:

    from labml_style_nn import from_hf, from_pretrained
    model = from_pretrained("path/to/checkpoint")   # a folder with config.json and *.safetensors
"""

from .loading import architecture, from_config_and_state, from_hf, from_pretrained, supported_model_types

__all__ = ["architecture", "from_config_and_state", "from_hf", "from_pretrained", "supported_model_types"]
