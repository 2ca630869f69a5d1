r"""Draw the figures of the technique pages from the library itself: `python docs/figures/make_figures.py`.

Every figure is computed by the modules it illustrates (ALiBi's bias by `AlibiPositionalBias`, T5's
buckets by `relative_position_bucket`, ...), never drawn by hand, and written next to this script
as a PNG that the pages show. Run it again after changing one of those modules, and commit the
PNGs. `--only NAME` draws one figure; `--check` draws into a temporary folder and fails if a
committed figure is missing (the pictures themselves may differ by a pixel between matplotlib
versions, so they are not compared).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from labml_style_nn.positional.alibi import AlibiPositionalBias  # noqa: E402
from labml_style_nn.positional.rotary import RotaryEmbedding  # noqa: E402
from labml_style_nn.positional.t5_bias import relative_position_bucket  # noqa: E402

OUT = Path(__file__).resolve().parent
plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "figure.dpi": 100})


def _save(fig, out: Path, name: str) -> None:
    # No metadata: the PNG changes only when the picture does.
    fig.savefig(out / f"{name}.png", dpi=150, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def _matrix(ax, values, title: str, fmt: str = "{:g}", cmap: str = "viridis", masked=None) -> None:
    """A small matrix as a heat map with each entry written in its cell (`masked` cells blank)."""
    shown = values.clone().float()
    if masked is not None:
        shown[masked] = float("nan")
    ax.imshow(shown, cmap=cmap)
    n, m = values.shape
    for i in range(n):
        for j in range(m):
            if masked is not None and masked[i, j]:
                ax.text(j, i, "masked", ha="center", va="center", fontsize=7, color="0.55")
            else:
                ax.text(j, i, fmt.format(float(values[i, j]) + 0.0), ha="center", va="center", fontsize=9, color="white")
    ax.set_xticks(range(m), [f"j={j}" for j in range(m)])
    ax.set_yticks(range(n), [f"i={i}" for i in range(n)])
    ax.set_title(title)


def alibi_bias(out: Path) -> None:
    """ALiBi's bias for four tokens at slope 1/2 (head 1 of 8), and the weights it alone gives."""
    positions = torch.arange(4)
    bias = AlibiPositionalBias(8)(positions, positions)[0, 0]  # (i, j), slope 1/2
    ahead = torch.ones(4, 4).triu(1).bool()
    weights = bias.masked_fill(ahead, float("-inf")).softmax(-1)
    fig, axes = plt.subplots(1, 2, figsize=(8.2, 3.4))
    _matrix(axes[0], bias, r"bias $-m\,(i - j)$, $m = 1/2$", masked=ahead)
    _matrix(axes[1], weights, r"softmax of the bias alone ($q_i^\top k_j$ equal)", fmt="{:.2f}", masked=ahead)
    _save(fig, out, "alibi_bias")


def rotary_angles(out: Path) -> None:
    """Where pair $k$ lands at a few positions: a fast, a middle and a slow frequency ($r = 64$)."""
    r = 64
    rotary = RotaryEmbedding(r)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.1))
    for ax, k, step in zip(axes, (0, 8, 31), (1, 1, 1000), strict=True):
        positions = torch.arange(0, 9) * step
        cos, sin = rotary.angles(positions)  # (n, r) each
        theta = float(rotary.inv_freq[k])
        ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="0.8"))
        ax.plot(cos[:, k], sin[:, k], "-", color="0.75", lw=0.8)
        ax.scatter(cos[:, k], sin[:, k], c=range(9), cmap="viridis", zorder=3, s=28)
        for index in (0, 1, 2, 8):
            ax.annotate(f"p={int(positions[index])}", (float(cos[index, k]), float(sin[index, k])),
                        textcoords="offset points", xytext=(6, 4), fontsize=7)
        ax.set_xlim(-1.3, 1.3)
        ax.set_ylim(-1.3, 1.3)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"pair k = {k}: θ_k = {theta:.3g} rad per token\npositions p = 0, {step}, {2 * step}, ...", fontsize=9)
    fig.suptitle("where pair k of a query or key lands: a rotation by p·θ_k (cos on x, sin on y)", y=1.0)
    _save(fig, out, "rotary_angles")


def t5_buckets(out: Path) -> None:
    """T5's bucket of every distance 0..200 (32 buckets, max distance 128), causal and bidirectional."""
    delta = torch.arange(0, 201)
    causal = relative_position_bucket(-delta, causal=True)  # keys behind: j - i = -delta
    behind = relative_position_bucket(-delta, causal=False)
    ahead = relative_position_bucket(delta, causal=False)
    fig, ax = plt.subplots(figsize=(8, 3.4))
    ax.step(delta, causal, where="post", label="decoder (causal): keys behind, distance i - j")
    ax.step(delta, behind, where="post", label="encoder: keys behind, i - j")
    ax.step(delta, ahead, where="post", label="encoder: keys ahead, j - i (offset by 16)")
    ax.axvline(128, color="0.7", ls="--", lw=0.8)
    ax.text(130, 1, "max_distance = 128: where the log scale\nwould reach bucket 32; the floor reaches\nthe last bucket earlier (113 and 91)", fontsize=7, color="0.4")
    ax.set_xlabel("distance |i - j|")
    ax.set_ylabel("bucket")
    ax.set_title("T5 relative position buckets (num_buckets = 32, max_distance = 128)")
    ax.legend(fontsize=7, loc="center right")
    _save(fig, out, "t5_buckets")


def feedback_flow(out: Path) -> None:
    """Which states token 3's first layer reads: a Transformer next to the Feedback Transformer."""
    tokens, layers = 3, 3
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.9))
    for ax, feedback in zip(axes, (False, True), strict=True):
        for t in range(1, tokens + 1):
            for level in range(layers + 1):
                colour = "#c6dbef" if level == 0 else "#fdd0a2"
                ax.add_patch(plt.Rectangle((t - 0.3, level - 0.2), 0.6, 0.4, color=colour, zorder=2))
                ax.text(t, level, f"$x^{level}_{t}$", ha="center", va="center", zorder=3)
                if level:
                    ax.add_patch(FancyArrowPatch((t, level - 0.8), (t, level - 0.2), arrowstyle="-|>", mutation_scale=8, color="0.6"))
        if feedback:
            for t in (1, 2):
                ax.add_patch(plt.Rectangle((t - 0.3, layers + 0.55), 0.6, 0.4, color="#a1d99b", zorder=2))
                ax.text(t, layers + 0.75, f"$m_{t}$", ha="center", va="center", zorder=3)
                for level in range(layers + 1):
                    ax.add_patch(FancyArrowPatch((t + 0.3, level), (t + 0.05, layers + 0.55), arrowstyle="-", color="#74c476", lw=0.7, connectionstyle="arc3,rad=-0.25"))
                ax.add_patch(FancyArrowPatch((t + 0.3, layers + 0.75), (3 - 0.3, 1), arrowstyle="-|>", mutation_scale=10, color="#d94801", lw=1.4, connectionstyle="arc3,rad=0.3"))
            ax.set_title("Feedback Transformer: layer 1 of token 3 reads $m_1, m_2$,\nwhich mix every layer of tokens 1 and 2")
        else:
            for t in (1, 2):
                ax.add_patch(FancyArrowPatch((t + 0.3, 0), (3 - 0.3, 1), arrowstyle="-|>", mutation_scale=10, color="#d94801", lw=1.4, connectionstyle="arc3,rad=-0.2"))
            # Causal self-attention also reads the token's own input
            ax.add_patch(FancyArrowPatch((3.2, 0.2), (3.2, 0.8), arrowstyle="-|>", mutation_scale=10, color="#d94801", lw=1.4, zorder=3))
            ax.set_title("Transformer: layer 1 of token 3 attends to layer 0\nof tokens 1-3 (itself too), never to upper layers")
        ax.set_xlim(0.4, tokens + 0.6)
        ax.set_ylim(-0.6, layers + 1.2)
        ax.set_xticks(range(1, tokens + 1), [f"token {t}" for t in range(1, tokens + 1)])
        ax.set_yticks(range(layers + 1), ["embedding"] + [f"layer {level}" for level in range(1, layers + 1)])
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    _save(fig, out, "feedback_flow")


def attention_patterns(out: Path) -> None:
    """Masks and biases as attention weights, and a trained head, over 24 tokens.

    The last panel trains the notebook's model (`notebooks/attention_patterns.ipynb`): rows that
    repeat their first 8 tokens, so the answer to query $t$ is key $t - 7$.
    """
    import torch.nn.functional as F

    from labml_style_nn import Decoder, TransformerWrapper

    n = 24
    pos = torch.arange(n)
    causal = pos[None, :] <= pos[:, None]  # (i, j)
    panels = [("causal, no position: uniform\nover the past", torch.zeros(n, n).masked_fill(~causal, float("-inf")).softmax(-1))]
    # `attn_max_attend_past=3`: query i sees keys j with 0 <= i - j <= 3.
    sliding = causal & (pos[:, None] - pos[None, :] <= 3)
    panels.append(("sliding window W = 3\n(attn_max_attend_past=3)", torch.zeros(n, n).masked_fill(~sliding, float("-inf")).softmax(-1)))
    bias = AlibiPositionalBias(8)(pos, pos)[0]
    panels.append(("ALiBi prior alone,\nhead 1 (m = 1/2)", bias[0].masked_fill(~causal, float("-inf")).softmax(-1)))

    torch.manual_seed(0)
    period, length, vocab = 8, 48, 16

    def batch(b: int = 32):
        return torch.randint(0, vocab, (b, period)).repeat(1, length // period)

    model = TransformerWrapper(num_tokens=vocab, max_seq_len=length, attn_layers=Decoder(dim=64, depth=2, heads=4, alibi_pos_emb=True))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(400):
        x = batch()
        loss = F.cross_entropy(model(x[:, :-1]).transpose(1, 2), x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        _, maps = model(batch(64)[:, :-1], return_attn=True)
    rows = torch.arange(period, length - 1)
    answer = maps[-1][:, :, rows, rows - period + 1].mean(dim=(0, 2))  # (h,)
    head = int(answer.argmax())
    panels.append((f"trained (ALiBi), layer 2 head {head + 1}:\nstripes at key t - 7, t - 15, ...", maps[-1][0, head]))

    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.2))
    for ax, (title, w) in zip(axes, panels, strict=True):
        ax.imshow(w, cmap="viridis")
        ax.set_title(title, fontsize=8.5)
        ax.set_xlabel("key j")
        ax.set_ylabel("query i")
    _save(fig, out, "attention_patterns")


FIGURES = {f.__name__: f for f in (alibi_bias, rotary_angles, t5_buckets, feedback_flow, attention_patterns)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(FIGURES), help="draw one figure")
    parser.add_argument("--check", action="store_true", help="draw into a temporary folder; fail if a committed PNG is missing")
    args = parser.parse_args()
    names = [args.only] if args.only else list(FIGURES)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) if args.check else OUT
        for name in names:
            FIGURES[name](out)
            print(f"{name}: {out / (name + '.png')}")
        if args.check:
            missing = [n for n in names if not (OUT / f"{n}.png").is_file()]
            if missing:
                raise SystemExit(f"not committed: {missing}; run python docs/figures/make_figures.py")


if __name__ == "__main__":
    main()
