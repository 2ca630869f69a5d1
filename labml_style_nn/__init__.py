"""labml_style_nn: annotated, tested transformer techniques.

Every public class is importable from here.  The keyword API of x-transformers:

    from labml_style_nn import TransformerWrapper, Decoder
    model = TransformerWrapper(num_tokens=20000, max_seq_len=1024,
                               attn_layers=Decoder(dim=512, depth=6, heads=8, rotary_pos_emb=True))
"""

# The one place the version is written; pyproject.toml reads it from here.
__version__ = "0.2.0"

from .attention import Attention
from .families import (
    DPO,
    GPTVAE,
    BeliefStateWrapper,
    ContinuousAutoregressiveWrapper,
    ContinuousTransformerAutoencoder,
    DiscoverDecoder,
    EntropyBasedTokenizer,
    FreeTransformer,
    FullBandwidth,
    LatentAutoregressive,
    MultiInputTransformerWrapper,
    NeoMLP,
    NextLatentWrapper,
    NonAutoregressiveWrapper,
    PrefixDecoder,
    Recirculation,
    SyntheticDataGenerator,
    TPREncoder,
    UniversalPretrainWrapper,
    XLAutoregressiveWrapper,
    XMLatentDecoder,
    XValAutoregressiveWrapper,
    XValTransformerWrapper,
)
from .feedback import FeedbackTransformer
from .feedforward import FeedForward as KeywordFeedForward
from .generation import AutoregressiveWrapper
from .generation.intermediates import LayerIntermediates
from .models import (
    AttentionLayers,
    ContinuousTransformerWrapper,
    CrossAttender,
    Decoder,
    Encoder,
    TransformerWrapper,
    ViTransformerWrapper,
    XTransformer,
)
from .models.layout import layer_schedule
from .norms import RMSNorm, ScaleNorm
from .pretrained import from_hf, from_pretrained
from .transformer_xl import (
    FeedForward,
    RelativeMultiHeadAttention,
    TransformerXL,
    TransformerXLLayer,
    causal_mask_with_memory,
    update_memory,
)
from .wrapping import AttentionPool

__all__ = [
    "Attention", "AttentionLayers", "AttentionPool", "AutoregressiveWrapper", "BeliefStateWrapper",
    "ContinuousAutoregressiveWrapper", "ContinuousTransformerAutoencoder", "ContinuousTransformerWrapper",
    "CrossAttender", "Decoder", "DiscoverDecoder", "DPO", "Encoder", "EntropyBasedTokenizer", "FeedbackTransformer",
    "FeedForward", "FreeTransformer", "FullBandwidth", "GPTVAE", "KeywordFeedForward", "LatentAutoregressive",
    "LayerIntermediates", "MultiInputTransformerWrapper", "NeoMLP", "NextLatentWrapper", "NonAutoregressiveWrapper",
    "PrefixDecoder", "Recirculation", "RelativeMultiHeadAttention", "RMSNorm", "ScaleNorm", "SyntheticDataGenerator",
    "TPREncoder", "TransformerWrapper", "TransformerXL", "TransformerXLLayer", "UniversalPretrainWrapper",
    "ViTransformerWrapper", "XLAutoregressiveWrapper", "XMLatentDecoder", "XTransformer", "XValAutoregressiveWrapper",
    "XValTransformerWrapper", "causal_mask_with_memory", "layer_schedule", "from_hf", "from_pretrained",
    "update_memory",
]


def _suggest_keywords_everywhere() -> None:
    """Every public module's constructor answers a misspelt keyword with the closest valid ones (checks.py)."""
    import sys

    from torch import nn

    from .checks import suggest_keywords

    for module in [m for name, m in sys.modules.items() if name.startswith(__name__ + ".") and name.count(".") == 1]:
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name, None)
            if isinstance(obj, type) and issubclass(obj, nn.Module):
                suggest_keywords(obj)


_suggest_keywords_everywhere()
