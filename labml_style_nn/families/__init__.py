"""Model families that x-transformers ships, one file each."""

from .continuous_autoregressive import ContinuousAutoregressiveWrapper, GaussianNLL
from .discover import DiscoverDecoder, TPREncoder
from .dpo import DPO
from .entropy_based_tokenizer import EntropyBasedTokenizer
from .full_bandwidth import FullBandwidth
from .multi_input import MultiInputTransformerWrapper
from .neo_mlp import NeoMLP
from .prefix_decoder import PrefixDecoder
from .recirculation import Recirculation
from .xval import XValAutoregressiveWrapper, XValTransformerWrapper

__all__ = ["DiscoverDecoder", "DPO", "EntropyBasedTokenizer", "FullBandwidth", "ContinuousAutoregressiveWrapper", "GaussianNLL", "MultiInputTransformerWrapper", "NeoMLP", "PrefixDecoder", "Recirculation", "TPREncoder",
           "XValAutoregressiveWrapper", "XValTransformerWrapper"]
