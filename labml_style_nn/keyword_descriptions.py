r"""
# Keyword descriptions

The hand-written part of the [keyword reference](keyword_reference.md) for the wrappers and
`generate`: a line per keyword saying what it does and which page explains it.  (The stacks'
keywords are declared beside their techniques instead, see [keywords](keywords.md).)  Types and
defaults are not written here; the reference reads them from the signatures.  A keyword the code
accepts without a line here, or a line for a keyword the code does not accept, fails
`tests/core/test_keyword_reference.py`.
"""

# Keywords of the wrappers, by name (a name means the same in every wrapper that takes it).
WRAPPERS = {
    "num_tokens": ("vocabulary size", "models/wrappers"),
    "max_seq_len": ("longest sequence the learned absolute positions cover", "models/sequence_wrapper"),
    "attn_layers": ("the stack: an Encoder, Decoder or AttentionLayers", "models/wrappers"),
    "emb_dim": ("token embedding width, projected to dim if different", "models/wrappers"),
    "emb_dropout": ("dropout after the embedding", "models/wrappers"),
    "num_memory_tokens": ("learned memory tokens prepended to every sequence", "memory/memory_tokens"),
    "max_mem_len": ("Transformer-XL memory length (0: no memory)", "memory/xl_recurrence"),
    "shift_mem_down": ("enhanced recurrence: layer l reads the memory of layer l + k", "memory/xl_recurrence"),
    "tie_embedding": ("the token embedding matrix is also the output projection", "models/logits_head"),
    "tie_embedding_scale": ("with tie_embedding: scale the hidden states before the tied projection (T5: D^-1/2)",
                            "models/logits_head"),
    "use_abs_pos_emb": ("absolute positions (None: off when the stack has relative ones)", "positional/absolute"),
    "sinusoidal_pos_emb": ("fixed sinusoids instead of learned absolute positions", "positional/absolute"),
    "logits_dim": ("output width (default: num_tokens)", "models/logits_head"),
    "logits_bias": ("a bias on the untied output projection (default none, as x-transformers)", "models/logits_head"),
    "token_emb_init_std": ("std of the token embedding's normal draw (None: Kaiming normal, sqrt(2/E), as "
                           "x-transformers; 0.02: GPT-2's)", "models/initialisation"),
    "pos_emb_init_std": ("std of the learned position table's draw, added unscaled (None: N(0, 1) times E^-1/2, "
                         "as x-transformers; 0.02: GPT-2's)", "positional/absolute"),
    "dim_in": ("input feature width (default: dim)", "models/continuous_wrapper"),
    "dim_out": ("output feature width (default: dim)", "models/continuous_wrapper"),
    "image_size": ("height and width of the (square) images", "models/vit"),
    "patch_size": ("height and width of each patch (divides image_size)", "models/vit"),
    "channels": ("image channels", "models/vit"),
    "num_classes": ("classes of the linear head (None: return the patch embeddings)", "models/vit"),
    "use_cls_token": ("prepend a learned [class] token and classify from it (the paper's head)", "models/vit"),
    "patch_norm": ("LayerNorms before and after the patch projection (False: the paper's plain projection)",
                   "models/vit"),
    "net": ("the causal TransformerWrapper (or FeedbackTransformer) to train and sample", "generation/autoregressive"),
    "ignore_index": ("target value the loss skips", "generation/autoregressive"),
    "pad_value": ("token that fills ended rows and left padding", "generation/autoregressive"),
    "tie_token_emb": ("XTransformer: one token embedding for encoder and decoder", "models/xtransformer"),
    "cross_attn_tokens_dropout": ("XTransformer: in training, drop this fraction of the encoded tokens from the "
                                  "decoder's view (Perceiver AR)", "models/xtransformer"),
    "embed_num_tokens": ("extra embedding tables by name, e.g. {'type': 2}, fed with embed_ids=", "wrapping/embeddings"),
    "memory_tokens_interspersed_every": ("a copy of the memory tokens before every block of this many tokens "
                                         "(a decoder)", "memory/interspersed_memory_tokens"),
    "post_emb_norm": ("a LayerNorm on the embeddings, before the stack", "models/wrappers"),
    "return_only_embed": ("no output layer: the forward returns the final hidden states", "models/logits_head"),
    "num_output_heads": ("that many independent linear heads, the logits a tuple", "wrapping/output_heads"),
    "scaled_sinu_pos_emb": ("absolute positions: sinusoids times one learned scale", "wrapping/embeddings"),
    "l2norm_embed": ("token and position embeddings at unit length, tables initialised tiny", "wrapping/embeddings"),
    "recycling": ("rerun the stack on its own output, AlphaFold-style (recycle_steps= at inference)",
                  "wrapping/recycling"),
    "train_max_recycle_steps": ("with recycling: training draws 1 to this many passes", "wrapping/recycling"),
    "emb_frac_gradient": ("fraction of the gradient that reaches the embeddings (CogView, GLM-130B: 0.1)",
                          "wrapping/embeddings"),
    "attn_z_loss_weight": ("default weight of the attention z-loss of return_attn_z_loss=True", "wrapping/z_loss"),
    "average_pool_embed": ("return the mean of the outputs over the real tokens, (b, D)", "wrapping/pooling"),
    "num_cls_tokens": ("with use_cls_token: how many [CLS] tokens (more than one: (b, k, D))", "wrapping/pooling"),
    "attn_pool": ("learned queries attend to the outputs; an encoder returns the pooled tokens", "wrapping/pooling"),
    "num_pooled_tokens": ("queries of the attention pool", "wrapping/pooling"),
    "attn_pool_depth": ("cross-attention layers of the attention pool", "wrapping/pooling"),
    "dim_pooled_tokens": ("width of the attention pool's tokens (default: dim)", "wrapping/pooling"),
    "squeeze_out_last_dim": ("drop a last logits axis of size 1 (e.g. logits_dim=1 for regression)",
                             "models/logits_head"),
    "token_emb": ("a module of one's own from token ids (b, n) to embeddings (b, n, emb_dim)", "models/wrappers"),
    "mixture_of_softmax": ("the head mixes several softmaxes (log-probabilities out)", "wrapping/output_heads"),
    "mixture_of_softmax_k": ("components of the mixture of softmaxes", "wrapping/output_heads"),
    "sigsoftmax_logits": ("logits z + log sigmoid(z): the softmax becomes a sigsoftmax", "wrapping/output_heads"),
    "ff_deep_embed": ("each feed-forward output times a learned vector per token and layer (RWKV-8)",
                      "wrapping/deep_embed"),
    "to_logits": ("a module of one's own from hidden states (b, n, D) to logits", "models/logits_head"),
    "add_continuous_pred_head": ("a head that predicts the next input embedding (L1 loss in training)",
                                 "wrapping/output_heads"),
    "input_not_include_cache": ("with cache= intermediates, x holds only the new tokens", "generation/intermediates"),
    "probabilistic": ("ContinuousTransformerWrapper: output a mean and a variance, (2, b, n, dim_out)",
                      "families/continuous_autoregressive"),
    "project_in": ("ContinuousTransformerWrapper: a module of one's own from inputs to the model width",
                   "models/continuous_wrapper"),
    "project_out": ("ContinuousTransformerWrapper: a module of one's own from the model width to outputs",
                    "models/continuous_wrapper"),
    "use_identity_if_same_dim": ("ContinuousTransformerWrapper: no projection where dim_in or dim_out equals dim",
                                 "models/continuous_wrapper"),
    "num_register_tokens": ("ViT: learned register tokens after the patches, dropped at the output", "models/vit"),
    "mask_prob": ("in training, hide this fraction of keys at random (first token never)", "generation/autoregressive"),
    "add_attn_z_loss": ("add the network's attention z-loss to the training loss", "wrapping/z_loss"),
    "next_embed_loss_weight": ("weight of the next-embedding loss of add_continuous_pred_head",
                               "wrapping/output_heads"),
    "looped": ("the looped LM: the stack runs several times, an exit gate decides when to stop (needs "
               "pre_and_post_norm)", "wrapping/looped"),
    "max_looped_steps": ("with looped: the most passes through the stack in training", "wrapping/looped"),
    "looped_loss_threshold_exit": ("with a looped network: the loss gain below which the exit gate learns to stop",
                                   "wrapping/looped"),
    "looped_loss_slope": ("with a looped network: the steepness of the exit gate's target", "wrapping/looped"),
    "looped_exit_loss_weight": ("with a looped network: the weight of the exit gate's loss", "wrapping/looped"),
}
# Keywords of `generate` (`AutoregressiveWrapper.generate`, `XTransformer.generate`); others go to `forward`.
GENERATE = {
    "prompts": ("(b, n) token ids, or a list of 1-D prompts of different lengths (left-padded)",
                "generation/autoregressive"),
    "seq_len": ("tokens to sample after the prompt", "generation/autoregressive"),
    "temperature": ("divides the logits; 0 decodes greedily", "generation/sampling"),
    "filter_logits_fn": ("top_k, top_p, min_p (or their names), applied before sampling", "generation/sampling"),
    "filter_kwargs": ("keywords of the filter: k for top_k, p for top_p and min_p", "generation/sampling"),
    "eos_token": ("a row stops at this token; later tokens are pad_value", "generation/autoregressive"),
    "cache_kv": ("the key/value cache, or a factory (layers, batch) -> cache such as sink_cache(...)",
                 "generation/kv_cache"),
    "compile": ("steps after the prompt as one torch.compile graph on a static cache (a dict: compile keywords)",
                "generation/static_cache"),
    "draft": ("a smaller model over the same vocabulary: speculative decoding", "generation/speculative"),
    "num_speculative": ("draft guesses per pass of the model", "generation/speculative"),
    "src": ("XTransformer: the (b, n) source token ids, encoded once", "models/xtransformer"),
    "start_tokens": ("XTransformer: (b, t) target tokens to start from, or one token id for every row",
                     "models/xtransformer"),
    "src_mask": ("XTransformer: (b, n) bool, true for real source tokens", "models/xtransformer"),
    "mask": ("XTransformer: x-transformers' name for src_mask", "models/xtransformer"),
    "prompt_lens": ("(b,) lengths of right-padded prompts (x-transformers' spelling of a list of prompts)",
                    "generation/autoregressive"),
    "restrict_to_max_seq_len": ("False: feed learned positions more than max_seq_len tokens (an error)",
                                "generation/autoregressive"),
    "return_intermediates": ("also return the cache as intermediates: (tokens, intermediates)",
                             "generation/intermediates"),
    "amateur_model": ("contrastive decoding: a weaker model (or a tuple) whose log-probabilities are subtracted",
                      "generation/contrastive"),
    "contrastive_decode_kwargs": ("contrastive decoding's alpha (plausibility cut) and beta (amateur weight)",
                                  "generation/contrastive"),
}
WRAPPER_CLASSES = ("TransformerWrapper", "ContinuousTransformerWrapper", "ViTransformerWrapper",
                   "AutoregressiveWrapper", "XTransformer")

# The constructor keywords of x-transformers 2.31.10, by class, as its source spells them: the target of
# the drop-in API (`keyword_reference.xtransformers_coverage` says which are accepted here; a test checks
# this list against the installed package when it is there).  `Attention`'s keywords are `attn_<name>`
# on the stacks, `FeedForward`'s `ff_<name>`.
XTRANSFORMERS_2_31 = {
    "Attention": (
        "dim", "dim_head", "dim_context", "heads", "causal", "flash", "pre_talking_heads", "post_talking_heads",
        "pre_scale_post_talking_heads", "head_scale", "sparse_topk", "sparse_topk_straight_through", "num_mem_kv",
        "dropout", "sublayer_dropout", "on_attn", "gate_value_heads", "swiglu_values", "gate_values",
        "gate_values_rank", "gate_values_headwise", "output_gate", "output_gate_rank", "output_gate_headwise",
        "low_rank_silu_gates", "zero_init_output", "output_proj_depth", "hard", "max_attend_past", "qk_norm",
        "qk_norm_groups", "qk_norm_scale", "qk_norm_dim_scale", "qk_rmsnorm", "k_rmsnorm", "value_rmsnorm",
        "l2_distance", "sigmoid", "gumbel_softmax", "gumbel_softmax_temp", "gumbel_softmax_hard", "selective",
        "cog_signed", "custom_attn_fn", "hybrid_module", "hybrid_mask_kwarg", "hybrid_fold_axial_dim",
        "hybrid_learned_mix", "one_kv_head", "kv_heads", "value_dim_head", "dim_out", "add_zero_kv",
        "head_learned_sink", "rotate_num_heads", "data_dependent_alibi", "data_dependent_alibi_per_row",
        "data_dependent_alibi_per_row_dim_head", "data_dependent_alibi_kwargs", "use_rel_proj_pos_bias",
        "rel_proj_num_distance_basis", "rel_proj_max_dist", "use_cope", "cope_max_pos", "cope_soft_onehot_pos",
        "cope_talking_heads", "softclamp_logits", "logit_softclamp_value", "learned_value_residual_mix",
        "orthog_projected_values", "orthog_projected_values_per_head", "laser", "laser_softclamp_value",
        "qkv_receive_diff_residuals", "project_out", "use_latent_q", "dim_latent_q", "use_latent_kv",
        "dim_latent_kv", "latent_rope_subheads", "onnxable", "inverted_attention", "attend_sdp_kwargs",
        "flash_pack_seq"
    ),
    "FeedForward": (
        "dim", "dim_out", "mult", "glu", "glu_mult_bias", "swish", "relu_squared", "solu", "custom_activation",
        "post_act_ln", "dropout", "sublayer_dropout", "no_bias", "zero_init_output", "output_proj_depth",
        "softclamp_value", "glu_softclamp", "glu_gate_softclamp_value", "glu_up_softclamp_value"
    ),
    "AttentionLayers": (
        "dim", "depth", "heads", "causal", "cross_attend", "only_cross", "only_attn", "use_scalenorm",
        "use_rmsnorm", "use_dynamic_tanh", "use_derf", "dynamic_tanh_init_alpha", "use_simple_rmsnorm",
        "use_adaptive_layernorm", "use_adaptive_rmsnorm", "use_adaptive_layerscale", "norm_add_unit_offset",
        "dim_condition", "adaptive_condition_mlp", "adaptive_condition_mlp_expansion", "alibi_pos_bias",
        "alibi_num_heads", "rel_pos_bias", "rel_pos_num_buckets", "rel_pos_max_distance", "dynamic_pos_bias",
        "dynamic_pos_bias_log_distance", "dynamic_pos_bias_mlp_depth", "dynamic_pos_bias_norm", "rotary_pos_emb",
        "rotary_emb_dim", "rotary_xpos", "rotary_interpolation_factor", "rotary_xpos_scale_base",
        "rotary_base_rescale_factor", "rotate_num_heads", "polar_pos_emb", "polar_bias_uniform_init",
        "weight_tie_layers", "custom_layers", "layers_execute_order", "sandwich_coef", "par_ratio", "residual_attn",
        "cross_residual_attn", "macaron", "pre_norm", "pre_norm_has_final_norm", "pre_and_post_norm",
        "attn_aggregated_residuals", "attn_aggregated_residual_kwargs", "gate_residual", "orthog_residual",
        "mv_split_residual", "gated_multi_residual", "scale_residual", "scale_residual_constant",
        "depth_scale_residual", "shift_tokens", "sandwich_norm", "softclamp_output", "softclamp_output_value",
        "zero_init_branch_output", "layer_dropout", "cross_attn_tokens_dropout", "disable_abs_pos_emb",
        "use_layerscale", "layerscale_init_value", "unet_skips", "integrate_layers", "layer_integrate_use_softmax",
        "num_residual_streams", "qkv_receive_diff_residuals", "reinject_input", "learned_reinject_input_gate",
        "add_value_residual", "learned_value_residual_mix", "rel_pos_kwargs", "residual_fn_kwargs",
        "hyper_conn_sinkhorn_iters", "verbose"
    ),
    "TransformerWrapper": (
        "num_tokens", "max_seq_len", "attn_layers", "embed_num_tokens", "emb_dim", "max_mem_len", "shift_mem_down",
        "emb_dropout", "post_emb_norm", "num_memory_tokens", "memory_tokens_interspersed_every", "tie_embedding",
        "tie_embedding_scale", "logits_dim", "return_only_embed", "num_output_heads", "use_abs_pos_emb",
        "scaled_sinu_pos_emb", "l2norm_embed", "recycling", "train_max_recycle_steps", "looped", "max_looped_steps",
        "emb_frac_gradient", "attn_z_loss_weight", "average_pool_embed", "use_cls_token", "num_cls_tokens",
        "attn_pool", "num_pooled_tokens", "attn_pool_depth", "dim_pooled_tokens", "squeeze_out_last_dim",
        "token_emb", "mixture_of_softmax", "mixture_of_softmax_k", "sigsoftmax_logits", "ff_deep_embed",
        "to_logits", "add_continuous_pred_head", "input_not_include_cache"
    ),
}
