"""Bad inputs to every public class of `labml_style_nn.__all__` raise a TypeError or ValueError naming the argument.

The table below has one entry per public name.  A class added to `__all__` without an entry fails
`test_every_public_name_has_cases`: add its cases here (a small instance, and calls with bad
inputs, each with the argument its error must name).
"""

import pytest
import torch

import labml_style_nn as lsn

D = 16


def ids(*shape, high=10):
    return torch.randint(0, high, shape)


def float_mask(b, n):
    mask = torch.ones(b, n)
    mask[:, -1] = 0
    return mask


def lm():
    return lsn.TransformerWrapper(num_tokens=10, max_seq_len=16, attn_layers=lsn.Decoder(dim=D, depth=1, heads=2))


def tied_lm(depth=1):
    """A model the full-bandwidth transformer accepts (tied, normalised embeddings, depth-scaled residuals)."""
    return lsn.TransformerWrapper(num_tokens=10, max_seq_len=8, tie_embedding=True, post_emb_norm=True,
                                  attn_layers=lsn.Decoder(dim=D, depth=depth, heads=2, depth_scale_residual=True))


def xtransformer():
    return lsn.XTransformer(dim=D, enc_num_tokens=10, enc_depth=1, enc_heads=2, enc_max_seq_len=8,
                            dec_num_tokens=10, dec_depth=1, dec_heads=2, dec_max_seq_len=8)


def xl_layer():
    return lsn.TransformerXLLayer(d_model=D, self_attn=lsn.RelativeMultiHeadAttention(2, D, 0.0),
                                  feed_forward=lsn.FeedForward(D, 32, 0.0), dropout_prob=0.0)


x3 = torch.randn(2, 5, D)
seq_first = torch.randn(5, 2, D)
causal = lsn.causal_mask_with_memory(5, 0)

# name -> (factory, [(label, call on the instance, argument the error names)])
CASES = {
    "Attention": (lambda: lsn.Attention(D, heads=2, dim_head=8), [
        ("float 0/1 mask", lambda m: m(x3, mask=float_mask(2, 5)), "mask"),
        ("integer mask", lambda m: m(x3, mask=float_mask(2, 5).long()), "mask"),
        ("mask of the wrong length", lambda m: m(x3, mask=torch.ones(2, 4, dtype=torch.bool)), "mask"),
        ("integer x", lambda m: m(ids(2, 5, D)), "x"),
        ("x of the wrong width", lambda m: m(torch.randn(2, 5, D + 1)), "x"),
        ("2-D x", lambda m: m(torch.randn(5, D)), "x"),
        ("context to self-attention", lambda m: m(x3, context=x3), "context"),
        ("memory of the wrong width", lambda m: m(x3, mem=torch.randn(2, 3, D - 1)), "mem"),
        ("misspelt constructor keyword", lambda m: lsn.Attention(D, head=2), "head"),
    ]),
    "AttentionLayers": (lambda: lsn.AttentionLayers(dim=D, depth=1, heads=2), [
        ("float 0/1 mask", lambda m: m(x3, mask=float_mask(2, 5)), "mask"),
        ("x of the wrong width", lambda m: m(torch.randn(2, 5, D + 1)), "x"),
        ("misspelt keyword", lambda m: lsn.AttentionLayers(dim=D, depth=1, rotary_pos_embb=True), "rotary_pos_embb"),
        ("condition without an adaptive norm", lambda m: m(x3, condition=torch.randn(2, D)), "condition"),
        ("condition of the wrong width", lambda m: lsn.AttentionLayers(dim=D, depth=1, heads=2,
         use_adaptive_layernorm=True)(x3, condition=torch.randn(2, D + 1)), "condition"),
    ]),
    "Encoder": (lambda: lsn.Encoder(dim=D, depth=1, heads=2), [
        ("float 0/1 mask", lambda m: m(x3, mask=float_mask(2, 5)), "mask"),
        ("context without cross-attention", lambda m: m(x3, context=x3), "context"),
        ("per-row positions of the wrong length", lambda m: m(x3, pos=torch.zeros(2, 4, dtype=torch.long)), "pos"),
        ("float positions", lambda m: m(x3, pos=torch.arange(5.0)), "pos"),
        ("positions per head without ALiBi", lambda m: lsn.Encoder(dim=D, depth=1, heads=2, rotary_pos_emb=True,
         verbose=False)(x3, pos=torch.zeros(2, 2, 5, dtype=torch.long)), "pos"),
    ]),
    "Decoder": (lambda: lsn.Decoder(dim=D, depth=1, heads=2, cross_attend=True), [
        ("missing context", lambda m: m(x3), "context"),
        ("float context mask", lambda m: m(x3, context=x3, context_mask=float_mask(2, 5)), "context_mask"),
    ]),
    "CrossAttender": (lambda: lsn.CrossAttender(dim=D, depth=1, heads=2), [
        ("context of the wrong width", lambda m: m(x3, context=torch.randn(2, 4, D + 2)), "context"),
    ]),
    "TransformerWrapper": (lm, [
        ("float token ids", lambda m: m(torch.rand(2, 5)), "x"),
        ("token id out of range", lambda m: m(ids(2, 5, high=10) + 10), "x"),
        ("float 0/1 mask", lambda m: m(ids(2, 5), mask=float_mask(2, 5)), "mask"),
        ("mask of the wrong shape", lambda m: m(ids(2, 5), mask=torch.ones(2, 6, dtype=torch.bool)), "mask"),
        ("misspelt constructor keyword", lambda m: lsn.TransformerWrapper(
            num_tokens=10, max_seqlen=8, attn_layers=lsn.Decoder(dim=D, depth=1)), "max_seqlen"),
    ]),
    "ContinuousTransformerWrapper": (lambda: lsn.ContinuousTransformerWrapper(
            max_seq_len=16, dim_in=3, attn_layers=lsn.Encoder(dim=D, depth=1, heads=2)), [
        ("integer x", lambda m: m(ids(2, 5, 3)), "x"),
        ("float 0/1 mask", lambda m: m(torch.randn(2, 5, 3), mask=float_mask(2, 5)), "mask"),
    ]),
    "ViTransformerWrapper": (lambda: lsn.ViTransformerWrapper(
            image_size=8, patch_size=4, attn_layers=lsn.Encoder(dim=D, depth=1, heads=2), num_classes=3), [
        ("integer image", lambda m: m(ids(1, 3, 8, 8, high=255)), "img"),
        ("image of the wrong size", lambda m: m(torch.randn(1, 3, 9, 9)), "img"),
        ("misspelt keyword", lambda m: lsn.ViTransformerWrapper(
            image_size=8, patch_sise=4, attn_layers=lsn.Encoder(dim=D, depth=1)), "patch_sise"),
    ]),
    "AutoregressiveWrapper": (lambda: lsn.AutoregressiveWrapper(lm()), [
        ("float tokens", lambda m: m(torch.rand(2, 5)), "x"),
        ("float 0/1 mask", lambda m: m(ids(2, 5), mask=float_mask(2, 5)), "mask"),
        ("misspelt generate keyword", lambda m: m.generate(ids(1, 3), 2, temprature=0.5), "temprature"),
        ("misspelt filter keyword", lambda m: m.generate(ids(1, 3), 2, filter_logits_fn="top_p",
                                                         filter_kwargs={"thresh": 0.9}), "thresh"),
        ("float prompts", lambda m: m.generate(torch.rand(1, 3), 2), "prompts"),
    ]),
    "XTransformer": (xtransformer, [
        ("float source", lambda m: m(torch.rand(2, 5), ids(2, 4)), "src"),
        ("float target", lambda m: m(ids(2, 5), torch.rand(2, 4)), "tgt"),
        ("float source mask", lambda m: m(ids(2, 5), ids(2, 4), src_mask=float_mask(2, 5)), "src_mask"),
        ("misspelt generate keyword", lambda m: m.generate(ids(1, 5), ids(1, 1), 2, temprature=1.0), "temprature"),
    ]),
    "FeedbackTransformer": (lambda: lsn.FeedbackTransformer(num_tokens=10, dim=D, depth=1, seq_len=2, mem_len=4,
                                                            heads=2, dim_head=8), [
        ("float tokens", lambda m: m(torch.rand(2, 5)), "x"),
        ("memory of the wrong width", lambda m: m(ids(2, 5), memory=torch.randn(2, 2, D + 1)), "memory"),
    ]),
    "KeywordFeedForward": (lambda: lsn.KeywordFeedForward(D, mult=2), [
        ("integer x", lambda m: m(ids(2, 5, D)), "x"),
        ("x of the wrong width", lambda m: m(torch.randn(2, 5, D + 1)), "x"),
        ("misspelt keyword", lambda m: lsn.KeywordFeedForward(D, mul=2), "mul"),
    ]),
    "RMSNorm": (lambda: lsn.RMSNorm(D), [
        ("integer x", lambda m: m(ids(2, D)), "x"),
        ("x of the wrong width", lambda m: m(torch.randn(2, D + 1)), "x"),
        ("misspelt keyword", lambda m: lsn.RMSNorm(D, epsilon=1e-5), "epsilon"),
    ]),
    "ScaleNorm": (lambda: lsn.ScaleNorm(D), [
        ("integer x", lambda m: m(ids(2, D)), "x"),
    ]),
    "FeedForward": (lambda: lsn.FeedForward(D, 32, 0.0), [
        ("integer x", lambda m: m(ids(5, 2, D)), "x"),
        ("x of the wrong width", lambda m: m(torch.randn(5, 2, D + 1)), "x"),
    ]),
    "RelativeMultiHeadAttention": (lambda: lsn.RelativeMultiHeadAttention(2, D, 0.0), [
        ("float 0/1 mask", lambda m: m(query=seq_first, key=seq_first, value=seq_first, mask=causal.float()), "mask"),
        ("integer query", lambda m: m(query=ids(5, 2, D), key=seq_first, value=seq_first, mask=causal), "query"),
        ("no mask", lambda m: m(query=seq_first, key=seq_first, value=seq_first, mask=None), "mask"),
    ]),
    "TransformerXLLayer": (xl_layer, [
        ("integer x", lambda m: m(x=ids(5, 2, D), mem=None, mask=causal), "x"),
    ]),
    "TransformerXL": (lambda: lsn.TransformerXL(xl_layer(), 2), [
        ("batch-first x", lambda m: m(torch.randn(2, 5, D), [], causal), "batch-first"),
        ("float 0/1 mask", lambda m: m(seq_first, [], causal.float()), "mask"),
    ]),
    "causal_mask_with_memory": (lambda: lsn.causal_mask_with_memory, [
        ("no tokens", lambda f: f(0, 2), "seq_len"),
    ]),
    "update_memory": (lambda: lsn.update_memory, [
        ("negative length", lambda f: f([], [torch.zeros(2, 1, 1)], -1), "max_len"),
    ]),
    "layer_schedule": (lambda: lsn.layer_schedule, [
        ("one layer", lambda f: f(1.0, 2.0, 1), "depth"),
        ("unknown schedule", lambda f: f(1.0, 2.0, 3, "exponential"), "schedule"),
    ]),
    "AttentionPool": (lambda: lsn.AttentionPool(D, num_pooled_tokens=0, heads=2, dim_head=8), [
        ("no queries without learned ones", lambda m: m(x3), "queries"),
        ("misspelt keyword", lambda m: lsn.AttentionPool(D, num_pooled_token=2), "num_pooled_token"),
    ]),
    "ContinuousAutoregressiveWrapper": (lambda: lsn.ContinuousAutoregressiveWrapper(lsn.ContinuousTransformerWrapper(
            max_seq_len=8, attn_layers=lsn.Decoder(dim=D, depth=1, heads=2))), [
        ("rollouts", lambda m: m(x3, rollout_steps=2), "rollout_steps"),
        ("lens and mask", lambda m: m(x3, lens=torch.tensor([5, 5]), mask=torch.ones(2, 5, dtype=torch.bool)),
         "lens"),
    ]),
    "DPO": (lambda: lsn.DPO(lm()), [
        ("pairs of different shapes", lambda m: m(ids(2, 5), ids(2, 4), prompt_mask=torch.zeros(2, 5, dtype=torch.bool)),
         "preferred_seq"),
    ]),
    "EntropyBasedTokenizer": (lambda: lsn.EntropyBasedTokenizer(lm(), entropy_threshold=1.0), [
        ("floor above the threshold", lambda m: lsn.EntropyBasedTokenizer(lm(), 1.0, ignore_entropy_below=2.0),
         "ignore_entropy_below"),
    ]),
    "FreeTransformer": (lambda: lsn.FreeTransformer(num_tokens=10, dim=D, dec_head_depth=1, dec_tail_depth=1,
                                                   max_seq_len=8, heads=2, attn_dim_head=8, latent_bits=2), [
        ("float tokens", lambda m: m(torch.randn(2, 5)), "seq"),
        ("latents of another batch", lambda m: m.generate(ids(2, 1), 3, latents=torch.tensor([1, 2, 3])), "latents"),
        ("no tail", lambda m: lsn.FreeTransformer(num_tokens=10, dim=D, dec_head_depth=1, dec_tail_depth=0,
                                                  max_seq_len=8), "dec_tail_depth"),
    ]),
    "LayerIntermediates": (lambda: lsn.LayerIntermediates(), [
        ("intermediates without keys as a cache", lambda i: lm().eval()(ids(1, 3), cache=i), "cache"),
    ]),
    "MultiInputTransformerWrapper": (lambda: lsn.MultiInputTransformerWrapper(
            num_tokens=dict(a=10, b=4), max_seq_len=8, attn_layers=lsn.Decoder(dim=D, depth=1, heads=2)), [
        ("a tensor instead of streams", lambda m: m(ids(2, 5)), "x"),
        ("a stream missing", lambda m: m(dict(a=ids(2, 5))), "x"),
    ]),
    "NeoMLP": (lambda: lsn.NeoMLP(dim_in=3, dim_hidden=2, dim_out=1, dim_model=D, depth=1), [
        ("inputs of the wrong width", lambda m: m(torch.randn(2, 4)), "x"),
    ]),
    "NextLatentWrapper": (lambda: lsn.NextLatentWrapper(lm(), dim=D, num_rollouts=2), [
        ("a sequence too short to roll out", lambda m: m(ids(2, 3)), "num_rollouts"),
        ("an unknown loss", lambda m: lsn.NextLatentWrapper(lm(), dim=D, loss_type="l3"), "loss_type"),
    ]),
    "PrefixDecoder": (lambda: lsn.PrefixDecoder(dim=D, depth=1, heads=2), [
        ("attention mask of the wrong shape", lambda m: m(x3, attn_mask=torch.ones(4, 4, dtype=torch.bool)),
         "attn_mask"),
        ("causal given", lambda m: lsn.PrefixDecoder(dim=D, depth=1, causal=True), "causal"),
    ]),
    "NonAutoregressiveWrapper": (lambda: lsn.NonAutoregressiveWrapper(lsn.TransformerWrapper(
            num_tokens=10, max_seq_len=8, attn_layers=lsn.Encoder(dim=D, depth=1, heads=2)), mask_id=9), [
        ("a sequence shorter than max_seq_len", lambda m: m(ids(2, 5)), "x"),
        ("a mask id outside the vocabulary", lambda m: lsn.NonAutoregressiveWrapper(lm(), mask_id=10), "mask_id"),
        ("an unknown schedule", lambda m: lsn.NonAutoregressiveWrapper(lm(), mask_id=9, schedule="square"),
         "schedule"),
    ]),
    "BeliefStateWrapper": (lambda: lsn.BeliefStateWrapper(lm()), [
        ("lengths past the sequence", lambda m: m(ids(2, 5), lens=torch.tensor([6, 2])), "lens"),
        ("float tokens", lambda m: m(torch.randn(2, 5)), "seq"),
    ]),
    "ContinuousTransformerAutoencoder": (lambda: lsn.ContinuousTransformerAutoencoder(
            dim=D, enc_depth=1, dec_depth=1, max_seq_len=8, dim_input=3, heads=2, attn_dim_head=8), [
        ("inputs of the wrong width", lambda m: m(torch.randn(2, 5, 4)), "seq"),
        ("an unknown loss", lambda m: lsn.ContinuousTransformerAutoencoder(
            dim=D, enc_depth=1, dec_depth=1, max_seq_len=8, loss_type="huber"), "loss_type"),
    ]),
    "GPTVAE": (lambda: lsn.GPTVAE(num_tokens=10, dim=D, depth=1, enc_depth=1, max_seq_len=8, heads=2,
                                  attn_dim_head=8), [
        ("float tokens", lambda m: m(torch.randn(2, 5)), "seq"),
        ("latents of the wrong width", lambda m: m.generate(ids(2, 2), 2, latents=torch.randn(3)), "latents"),
    ]),
    "XMLatentDecoder": (lambda: lsn.XMLatentDecoder(lm(), num_latents=2), [
        ("latents of another width", lambda m: m(ids(2, 5), latents=torch.randn(2, 2, D + 1)), "latents"),
        ("no candidates", lambda m: m(ids(2, 5), candidates=0), "candidates"),
        ("a slot that does not exist", lambda m: m(ids(2, 5), active_latent_index=2), "active_latent_index"),
    ]),
    "XValTransformerWrapper": (lambda: lsn.XValTransformerWrapper(
            num_tokens=10, max_seq_len=8, numerical_token_id=9, attn_layers=lsn.Decoder(dim=D, depth=1, heads=2)), [
        ("numbers of another shape", lambda m: m(ids(2, 5), torch.randn(2, 4)), "x_num"),
        ("a number token outside the vocabulary", lambda m: lsn.XValTransformerWrapper(
            num_tokens=10, max_seq_len=8, numerical_token_id=10, attn_layers=lsn.Decoder(dim=D, depth=1)),
         "numerical_token_id"),
    ]),
    "XValAutoregressiveWrapper": (lambda: lsn.XValAutoregressiveWrapper(lsn.XValTransformerWrapper(
            num_tokens=10, max_seq_len=8, numerical_token_id=9, attn_layers=lsn.Decoder(dim=D, depth=1, heads=2))), [
        ("numbers of another shape", lambda m: m.generate(ids(2, 3), torch.randn(2, 2), 2), "start_tokens"),
    ]),
    "XLAutoregressiveWrapper": (lambda: lsn.XLAutoregressiveWrapper(lsn.TransformerWrapper(
            num_tokens=10, max_seq_len=8, max_mem_len=8, attn_layers=lsn.Decoder(dim=D, depth=1, heads=2,
                                                                                 rotary_pos_emb=True))), [
        ("a model without memories", lambda m: lsn.XLAutoregressiveWrapper(lm()), "max_mem_len"),
        ("1-D tokens", lambda m: m(ids(5)), "x"),
        ("a module path that does not exist", lambda m: lsn.XLAutoregressiveWrapper(
            m.net, ttt_module_paths=("attn_layers.nothing",), tbptt_steps=2), "ttt_module_paths"),
        ("a negative length", lambda m: m.generate(ids(1, 3), -1), "seq_len"),
    ]),
    "SyntheticDataGenerator": (lambda: lsn.SyntheticDataGenerator(dim=D, num_tokens=10, max_seq_len=8), [
        ("neither seed nor condition", lambda m: m.generate(4), "seed, condition"),
    ]),
    "UniversalPretrainWrapper": (lambda: lsn.UniversalPretrainWrapper(lm(), seq_len=12, batch_size=2, buffer_size=4), [
        ("an encoder", lambda m: lsn.UniversalPretrainWrapper(lsn.TransformerWrapper(
            num_tokens=10, max_seq_len=8, attn_layers=lsn.Encoder(dim=D, depth=1, heads=2)), seq_len=12), "model"),
        ("a buffer no larger than a batch", lambda m: lsn.UniversalPretrainWrapper(
            lm(), seq_len=12, batch_size=4, buffer_size=4), "buffer_size"),
    ]),
    "LatentAutoregressive": (lambda: lsn.LatentAutoregressive(lm(), dim=D), [
        ("1-D tokens", lambda m: m(ids(5)), "x"),
        ("the wrong width", lambda m: lsn.LatentAutoregressive(lm(), dim=D + 1), "dim"),
        ("too few rollout weights", lambda m: lsn.LatentAutoregressive(
            lm(), dim=D, num_rollouts=2, rollout_loss_weights=[1.0]), "rollout_loss_weights"),
    ]),
    "Recirculation": (lambda: lsn.Recirculation(tied_lm(depth=2), source_layer=1, destination_layer=0), [
        ("token ids without a batch", lambda m: m(ids(5)), "x"),
        ("destination not shallower", lambda m: lsn.Recirculation(tied_lm(depth=2), 1, 1), "destination_layer"),
        ("a source beyond the stack", lambda m: lsn.Recirculation(tied_lm(depth=2), 3, 0), "source_layer"),
    ]),
    "FullBandwidth": (lambda: lsn.FullBandwidth(tied_lm(depth=2)), [
        ("one token, no target", lambda m: m(ids(2, 1)), "token_ids"),
        ("no passes", lambda m: m(ids(2, 5), temporal_parallel_passes=0), "temporal_parallel_passes"),
        ("an unknown transition", lambda m: lsn.FullBandwidth(tied_lm(depth=2), transition="lstm"), "transition"),
    ]),
    "DiscoverDecoder": (lambda: lsn.DiscoverDecoder(decoder=lm(), num_fillers=8, bos_id=8, pad_id=9, max_seq_len=6), [
        ("both lengths and eos", lambda m: m.decode(torch.randn(2, D), torch.tensor([2, 2]), eos_id=3), "lengths"),
        ("longer than max_seq_len", lambda m: m.decode(torch.randn(2, D), torch.tensor([7, 2])), "max_seq_len"),
    ]),
    "TPREncoder": (lambda: lsn.TPREncoder(dim=D, num_fillers=4, num_roles=3), [
        ("a filler beyond the table", lambda m: m(ids(2, 3, high=10) + 4, ids(2, 3, high=3)), "tokens"),
        ("targets of the wrong width", lambda m: m.fit(ids(2, 3, high=4), ids(2, 3, high=3), torch.randn(2, D + 1),
                                                       steps=1), "target_encodings"),
    ]),
}

# Public names whose bad inputs are tested elsewhere, with where.
ELSEWHERE = {
    "from_hf": "loaders of pretrained checkpoints: tests/pretrained",
    "from_pretrained": "loaders of pretrained checkpoints: tests/pretrained",
}


def test_every_public_name_has_cases():
    missing = [name for name in lsn.__all__ if name not in CASES and name not in ELSEWHERE]
    assert not missing, f"add bad-input cases for {missing} to CASES in {__file__}"
    assert all(name in lsn.__all__ for name in CASES), "CASES names something that is not public"


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_inputs_name_the_argument(name):
    torch.manual_seed(0)
    factory, cases = CASES[name]
    module = factory()
    for label, call, argument in cases:
        with pytest.raises((TypeError, ValueError)) as info:
            call(module)
        assert argument in str(info.value), f"{name}, {label}: {info.value}"


def test_float_mask_is_refused_not_misread():
    """PyTorch reads a float attn_mask as an additive bias: a 0/1 float mask would silently be wrong."""
    attention = lsn.Attention(D, heads=2, dim_head=8)
    with pytest.raises(ValueError, match=r"mask: expected a bool tensor.*float32.*mask\.bool\(\)"):
        attention(x3, mask=float_mask(2, 5))
    out_bool, _ = attention(x3, mask=float_mask(2, 5).bool())
    out_short, _ = attention(x3[:, :4])
    torch.testing.assert_close(out_bool[:, :4], out_short)


@pytest.mark.parametrize("module, call", [
    ("AlibiPositionalBias(4)", lambda m: m(torch.arange(4), torch.arange(4.0))),
    ("T5RelativePositionBias(4, causal=True)", lambda m: m(torch.arange(4)[None], torch.arange(4))),
    ("PositionInfusedAttention(16)", lambda m: m(torch.arange(4.0))),
    ("LearnedPositionalEmbedding(16, 8)", lambda m: m(torch.arange(4.0))),
    ("SinusoidalPositionalEmbedding(16)", lambda m: m(torch.arange(4)[None])),
])
def test_positional_modules_take_integer_positions(module, call):
    """Tables and biases are looked up by integer positions (rotary angles also take fractional ones)."""
    from labml_style_nn import positional

    with pytest.raises(ValueError, match=r"(positions|q_pos|k_pos): expected an integer tensor"):
        call(eval(module, vars(positional)))


def public_module_classes() -> list[type]:
    """Every `nn.Module` class in the `__all__` of the package and of its subpackages."""
    import importlib
    import pkgutil

    found = {}
    for info in pkgutil.iter_modules(lsn.__path__):
        module = importlib.import_module(f"labml_style_nn.{info.name}")
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, torch.nn.Module):
                found[obj.__qualname__, obj.__module__] = obj
    return list(found.values())


def test_every_public_constructor_suggests_close_keywords():
    from labml_style_nn.checks import keyword_names

    classes = public_module_classes()
    assert len(classes) > 20
    for cls in classes:
        names = keyword_names(cls.__init__)
        if not names:  # `**kwargs` parsed by the class itself (the stacks, XTransformer), or no keywords
            continue
        with pytest.raises(TypeError, match=rf"{cls.__name__}\(\) got an unexpected keyword argument.*did you mean.*{names[0]}"):
            cls(**{names[0] + "s": 1})
