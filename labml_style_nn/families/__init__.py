"""Model families that x-transformers ships, one file each."""

from .belief_state import BeliefStateWrapper
from .continuous_autoencoder import ContinuousTransformerAutoencoder
from .continuous_autoregressive import ContinuousAutoregressiveWrapper, GaussianNLL
from .dpo import DPO
from .entropy_based_tokenizer import EntropyBasedTokenizer
from .gpt_vae import GPTVAE
from .multi_input import MultiInputTransformerWrapper
from .neo_mlp import NeoMLP
from .nonautoregressive import NonAutoregressiveWrapper
from .prefix_decoder import PrefixDecoder
from .xval import XValAutoregressiveWrapper, XValTransformerWrapper

__all__ = ["BeliefStateWrapper", "DPO", "EntropyBasedTokenizer", "GPTVAE", "ContinuousAutoregressiveWrapper", "ContinuousTransformerAutoencoder", "GaussianNLL", "MultiInputTransformerWrapper", "NeoMLP", "NonAutoregressiveWrapper", "PrefixDecoder", "XValAutoregressiveWrapper",
           "XValTransformerWrapper"]
