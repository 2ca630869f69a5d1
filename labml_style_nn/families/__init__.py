"""Model families that x-transformers ships, one file each."""

from .belief_state import BeliefStateWrapper
from .continuous_autoencoder import ContinuousTransformerAutoencoder
from .continuous_autoregressive import ContinuousAutoregressiveWrapper, GaussianNLL
from .discover import DiscoverDecoder, TPREncoder
from .dpo import DPO
from .entropy_based_tokenizer import EntropyBasedTokenizer
from .free_transformer import BinaryMapper, FreeTransformer
from .full_bandwidth import FullBandwidth
from .gpt_vae import GPTVAE
from .latent_autoregressive import LatentAutoregressive
from .multi_input import MultiInputTransformerWrapper
from .neo_mlp import NeoMLP
from .next_latent_wrapper import NextLatentWrapper
from .nonautoregressive import NonAutoregressiveWrapper
from .prefix_decoder import PrefixDecoder
from .recirculation import Recirculation
from .universal_pretrain import SyntheticDataGenerator, UniversalPretrainWrapper
from .xl_autoregressive import XLAutoregressiveWrapper
from .xl_test_time_training import (
    LowRankLinear,
    TTTMetaLearningTargetKLLoss,
    TTTModuleWrapper,
    TTTNextLatentPredictionLoss,
)
from .xm_latent_decoder import XMLatentDecoder
from .xval import XValAutoregressiveWrapper, XValTransformerWrapper

__all__ = [
    "BeliefStateWrapper", "BinaryMapper", "ContinuousAutoregressiveWrapper", "ContinuousTransformerAutoencoder",
    "DiscoverDecoder", "DPO", "EntropyBasedTokenizer", "FreeTransformer", "FullBandwidth", "GaussianNLL", "GPTVAE",
    "LatentAutoregressive", "LowRankLinear", "MultiInputTransformerWrapper", "NeoMLP", "NextLatentWrapper",
    "NonAutoregressiveWrapper", "PrefixDecoder", "Recirculation", "SyntheticDataGenerator", "TPREncoder",
    "TTTMetaLearningTargetKLLoss", "TTTModuleWrapper", "TTTNextLatentPredictionLoss", "UniversalPretrainWrapper",
    "XLAutoregressiveWrapper", "XMLatentDecoder", "XValAutoregressiveWrapper", "XValTransformerWrapper",
]
