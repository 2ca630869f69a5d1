"""Model families that x-transformers ships, one file each."""

from .continuous_autoregressive import ContinuousAutoregressiveWrapper, GaussianNLL
from .dpo import DPO
from .entropy_based_tokenizer import EntropyBasedTokenizer
from .free_transformer import BinaryMapper, FreeTransformer
from .multi_input import MultiInputTransformerWrapper
from .neo_mlp import NeoMLP
from .next_latent_wrapper import NextLatentWrapper
from .prefix_decoder import PrefixDecoder
from .xm_latent_decoder import XMLatentDecoder
from .xval import XValAutoregressiveWrapper, XValTransformerWrapper

__all__ = ["BinaryMapper", "DPO", "EntropyBasedTokenizer", "FreeTransformer", "ContinuousAutoregressiveWrapper", "GaussianNLL", "MultiInputTransformerWrapper", "NeoMLP", "NextLatentWrapper", "PrefixDecoder", "XMLatentDecoder", "XValAutoregressiveWrapper",
           "XValTransformerWrapper"]
