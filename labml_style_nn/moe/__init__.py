"""Mixture-of-experts feed-forward layers: routing, grouped expert computation, expert parallelism, Switch, Mixtral, DeepSeek."""

from .deepseek import SigmoidRouter, group_limited_top_k
from .expert_parallel import ExpertParallel
from .experts import Experts, group_by_expert, grouped_linear
from .mixtral import Routing, SoftmaxRouter, top_k_softmax
from .mixture import MixtureOfExperts, mixture_from_options, moe_aux_loss
from .switch import capacity, load_balancing_loss, router_z_loss, within_capacity

__all__ = ["ExpertParallel", "Experts", "MixtureOfExperts", "Routing", "SigmoidRouter", "SoftmaxRouter", "capacity",
           "group_by_expert", "group_limited_top_k", "grouped_linear", "load_balancing_loss", "mixture_from_options",
           "moe_aux_loss", "router_z_loss", "top_k_softmax", "within_capacity"]
