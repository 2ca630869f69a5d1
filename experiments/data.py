r"""
# Experiment data

Text and images for the experiments, each with a default that needs no network.

**Text** is always read as bytes, so every corpus shares one fixed vocabulary of 256 symbols and
the loss in bits per byte is the usual *bits per character* of character-level modelling.

* `stdlib` (the default) is built from the Python standard library's own `.py` sources: every
  interpreter carries a few megabytes of varied, well-formed text, so the experiments run
  anywhere, offline. Files are read in sorted order and capped, so the corpus is deterministic for
  a given Python version.
* `tinyshakespeare` and `enwik8` are downloaded once into a cache folder
  (`~/.cache/labml_style_nn`, or `--cache-dir`) and verified against a checksum; a mismatch raises
  `ChecksumError` rather than training on a truncated or changed file. `enwik8` uses the
  customary split of its 100M bytes: the first 90M for training, then 5M validation, 5M test.
* Any other value is a path to a local text file.

**Images.** `shapes` is a procedurally generated task: 32x32 RGB images of a coloured shape
(circle, square, triangle, plus, ring) at one of two sizes, placed in one of four quadrants on a
noisy background. The class is `shape x size` (10 classes); `caption_of` describes the same image
in five words ("red large circle top left") for the captioning experiment. Everything is a pure
function of the seed. `mnist` and `cifar10` have download code with SHA-256 checksums.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import sysconfig
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

# ## Downloads with checksums

DEFAULT_CACHE = Path(os.environ.get("LABML_STYLE_NN_CACHE", Path.home() / ".cache" / "labml_style_nn"))


class ChecksumError(ValueError):
    """A cached or downloaded file does not have the digest it should."""


class DownloadError(OSError):
    """A file could not be downloaded (offline, or the server refused): the message says what to do instead."""


def fetch(url: str, path: Path) -> None:
    """Download `url` to `path` (through a `.part` file, so a broken download leaves nothing behind)."""
    tmp = path.with_suffix(path.suffix + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": "labml_style_nn"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response, open(tmp, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
    except OSError as e:  # URLError, timeouts and refused connections are all OSErrors
        tmp.unlink(missing_ok=True)
        reason = getattr(e, "reason", e)
        raise DownloadError(
            f"could not download {url} ({reason}).\n"
            f"Without network: download it on another machine and copy it to {path}, "
            f"or train on a local text file with --data PATH (the default, --data stdlib, needs no download)."
        ) from None
    os.replace(tmp, path)


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: str | Path, checksum: str) -> Path:
    """Check `path` against `checksum`, written `"sha256:<hex>"` (or `"sha1:"`, `"md5:"`; bare hex is SHA-256)."""
    algorithm, _, expected = checksum.rpartition(":")
    algorithm = algorithm or "sha256"
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        raise ChecksumError(
            f"checksum mismatch for {path}: expected {algorithm} {expected}, got {actual}. "
            f"The file is corrupt, truncated or not the expected one; delete it to download it again."
        )
    return Path(path)


def download(url: str, filename: str, checksum: str, *, cache_dir: str | Path | None = None) -> Path:
    """Return `cache_dir/filename`, downloading `url` first if it is not cached; always verified."""
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / filename
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fetch(url, path)
    return verify(path, checksum)


# ## Text


@dataclass
class TextData:
    """A byte-level corpus split into train and validation (and test, where the corpus defines one)."""

    name: str
    train: torch.Tensor  # (n_train,) uint8
    val: torch.Tensor  # (n_val,) uint8
    test: torch.Tensor | None = None
    vocab_size: int = 256

    @staticmethod
    def decode(ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    @staticmethod
    def encode(text: str) -> torch.Tensor:
        return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


TINYSHAKESPEARE = dict(
    url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    filename="tinyshakespeare.txt",
    checksum="sha256:86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
)
# The digest published for enwik8 is the SHA-1 of the unzipped 100,000,000-byte file, so that is
# what we check (after extracting); the zip itself is only a transport.
ENWIK8 = dict(
    url="http://mattmahoney.net/dc/enwik8.zip",
    filename="enwik8.zip",
    checksum="sha1:57b8363b814821dc9d47aa4d41f58733519076b2",
)


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _split(name: str, data: bytes, val_fraction: float) -> TextData:
    all_ids = _bytes_tensor(data)
    n_val = max(1, int(len(all_ids) * val_fraction))
    return TextData(name=name, train=all_ids[:-n_val], val=all_ids[-n_val:])


def stdlib_text(max_bytes: int = 4_000_000) -> bytes:
    """The standard library's `.py` files, in sorted path order, concatenated up to `max_bytes`.

    Third-party packages (`site-packages`) and the regression tests are left out.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"}
    files = sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts[:-1]))
    chunks, total = [], 0
    for path in files:
        text = path.read_bytes()
        chunks.append(text)
        total += len(text)
        if total >= max_bytes:
            break
    return b"".join(chunks)[:max_bytes]


def load_enwik8(cache_dir: str | Path | None = None) -> TextData:
    """enwik8 with the 90M/5M/5M split; the zip is downloaded once, extracted and checked."""
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    raw = cache / "enwik8"
    if not raw.exists():
        cache.mkdir(parents=True, exist_ok=True)
        zip_path = cache / ENWIK8["filename"]
        if not zip_path.exists():
            fetch(ENWIK8["url"], zip_path)
        with zipfile.ZipFile(zip_path) as z:
            z.extract("enwik8", cache)
    verify(raw, ENWIK8["checksum"])
    data = _bytes_tensor(raw.read_bytes())
    n_train, n_val = 90_000_000, 5_000_000
    return TextData(name="enwik8", train=data[:n_train], val=data[n_train : n_train + n_val],
                    test=data[n_train + n_val : n_train + 2 * n_val])


def load_text(name: str = "stdlib", *, cache_dir: str | Path | None = None, val_fraction: float = 0.1,
              max_bytes: int = 4_000_000) -> TextData:
    """`stdlib` (embedded, offline), `tinyshakespeare`, `enwik8`, or a path to a local text file."""
    if name == "stdlib":
        return _split("stdlib", stdlib_text(max_bytes), val_fraction)
    if name == "tinyshakespeare":
        path = download(TINYSHAKESPEARE["url"], TINYSHAKESPEARE["filename"], TINYSHAKESPEARE["checksum"],
                        cache_dir=cache_dir)
        return _split(name, path.read_bytes(), val_fraction)
    if name == "enwik8":
        return load_enwik8(cache_dir)
    path = Path(name)
    if not path.is_file():
        raise ValueError(f"data: expected 'stdlib', 'tinyshakespeare', 'enwik8' or a path to a text file, got {name!r}")
    return _split(path.name, path.read_bytes(), val_fraction)


def sample_windows(data: torch.Tensor, batch_size: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """`batch_size` random windows of `length` consecutive bytes, as int64 token ids."""
    starts = torch.randint(0, len(data) - length, (batch_size,), generator=generator)
    offsets = torch.arange(length)
    return data[starts[:, None] + offsets].long()  # (b, length)


def contiguous_streams(data: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut `data` into `batch_size` equal contiguous streams, one per row, for segment-recurrent models.

    Row $r$ continues where it left off from one segment to the next, so memory carried between
    segments is the true preceding text (as in Transformer-XL's training).
    """
    n = len(data) // batch_size
    return data[: n * batch_size].view(batch_size, n).long()  # (b, n)


# ## Procedural images

SHAPES = ("circle", "square", "triangle", "plus", "ring")
SIZES = ("small", "large")
COLOURS = {"red": (0.9, 0.15, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.15, 0.3, 0.95), "yellow": (0.95, 0.85, 0.1)}
VERTICAL = ("top", "bottom")
HORIZONTAL = ("left", "right")
NUM_SHAPE_CLASSES = len(SHAPES) * len(SIZES)


@dataclass
class ShapeImages:
    """`n` images with their attributes; `labels` is the class `shape * 2 + size`."""

    images: torch.Tensor  # (n, 3, s, s) float in [0, 1]
    shape: torch.Tensor  # (n,)
    size: torch.Tensor
    colour: torch.Tensor
    vertical: torch.Tensor
    horizontal: torch.Tensor

    @property
    def labels(self) -> torch.Tensor:
        return self.shape * len(SIZES) + self.size

    def caption(self, i: int) -> str:
        return " ".join((list(COLOURS)[self.colour[i]], SIZES[self.size[i]], SHAPES[self.shape[i]],
                         VERTICAL[self.vertical[i]], HORIZONTAL[self.horizontal[i]]))


def make_shapes(n: int, *, seed: int = 0, image_size: int = 32, noise: float = 0.15) -> ShapeImages:
    """Render `n` images; the same `seed` always gives the same images."""
    g = torch.Generator().manual_seed(seed)
    s = image_size
    shape = torch.randint(0, len(SHAPES), (n,), generator=g)
    size = torch.randint(0, len(SIZES), (n,), generator=g)
    colour = torch.randint(0, len(COLOURS), (n,), generator=g)
    vertical = torch.randint(0, 2, (n,), generator=g)
    horizontal = torch.randint(0, 2, (n,), generator=g)
    # Radius: small shapes span about a sixth of the image, large ones about a third.
    radius = torch.where(size == 0, s * 0.14, s * 0.26) + torch.rand(n, generator=g) * s * 0.03
    # The centre sits in its quadrant, jittered, and the shape stays inside the image.
    quarter = s / 4
    jitter = (torch.rand(2, n, generator=g) - 0.5) * s * 0.12
    cy = quarter + vertical * 2 * quarter + jitter[0]
    cx = quarter + horizontal * 2 * quarter + jitter[1]
    coords = torch.arange(s, dtype=torch.float32) + 0.5
    dy = coords.view(1, s, 1) - cy.view(n, 1, 1)  # (n, s, 1)
    dx = coords.view(1, 1, s) - cx.view(n, 1, 1)  # (n, 1, s)
    r = radius.view(n, 1, 1)
    dist = (dx**2 + dy**2).sqrt()
    masks = torch.stack([
        dist <= r,  # circle
        (dx.abs() <= r * 0.85) & (dy.abs() <= r * 0.85),  # square
        (dy <= r * 0.8) & (dy >= -r) & (dx.abs() <= (dy + r) * 0.55),  # triangle, apex up
        ((dx.abs() <= r * 0.3) & (dy.abs() <= r)) | ((dy.abs() <= r * 0.3) & (dx.abs() <= r)),  # plus
        (dist <= r) & (dist >= r * 0.55),  # ring
    ])  # (shapes, n, s, s)
    mask = masks[shape, torch.arange(n)].float()  # (n, s, s)
    palette = torch.tensor(list(COLOURS.values()))  # (colours, 3)
    fill = palette[colour].view(n, 3, 1, 1)
    background = torch.rand(n, 3, 1, 1, generator=g) * 0.25
    images = background + mask[:, None] * (fill - background)
    images = images + noise * torch.randn(n, 3, s, s, generator=g)
    return ShapeImages(images.clamp(0, 1), shape, size, colour, vertical, horizontal)


# Caption vocabulary: padding, start, end, then every word of every attribute.
CAPTION_WORDS = ("<pad>", "<bos>", "<eos>", *COLOURS, *SIZES, *SHAPES, *VERTICAL, *HORIZONTAL)
PAD, BOS, EOS = 0, 1, 2


def caption_tokens(data: ShapeImages) -> torch.Tensor:
    """`<bos> colour size shape vertical horizontal <eos>` as token ids, shape `(n, 7)`."""
    index = {w: i for i, w in enumerate(CAPTION_WORDS)}
    rows = [[BOS, *(index[w] for w in data.caption(i).split()), EOS] for i in range(len(data.shape))]
    return torch.tensor(rows)


def caption_text(tokens) -> str:
    return " ".join(CAPTION_WORDS[int(t)] for t in tokens if int(t) not in (PAD, BOS, EOS))


# ## Real image datasets

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
CIFAR10 = dict(
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    filename="cifar-10-python.tar.gz",
    checksum="sha256:6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
)


def read_idx(path: str | Path) -> torch.Tensor:
    """Parse a gzipped IDX file (MNIST's format): a big-endian header, then unsigned bytes."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return _bytes_tensor(data[4 + 4 * ndim :]).view(*shape)


def load_mnist(cache_dir: str | Path | None = None):
    """MNIST as `((train_x, train_y), (test_x, test_y))`, images `(n, 3, 28, 28)` in [0, 1] (grey copied to RGB)."""
    paths = {name: download(MNIST_URL + name, f"mnist/{name}", checksum, cache_dir=cache_dir)
             for name, checksum in MNIST_FILES.items()}

    def images(name):
        return (read_idx(paths[name]).float() / 255.0)[:, None].expand(-1, 3, -1, -1).contiguous()

    return ((images("train-images-idx3-ubyte.gz"), read_idx(paths["train-labels-idx1-ubyte.gz"]).long()),
            (images("t10k-images-idx3-ubyte.gz"), read_idx(paths["t10k-labels-idx1-ubyte.gz"]).long()))


def load_cifar10(cache_dir: str | Path | None = None):
    """CIFAR-10 as `((train_x, train_y), (test_x, test_y))`, images `(n, 3, 32, 32)` in [0, 1]."""
    path = download(CIFAR10["url"], CIFAR10["filename"], CIFAR10["checksum"], cache_dir=cache_dir)
    parts: dict[str, dict] = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if name.startswith("data_batch") or name == "test_batch":
                parts[name] = pickle.load(tar.extractfile(member), encoding="bytes")

    def stack(names):
        x = torch.cat([torch.as_tensor(parts[n][b"data"]) for n in names]).view(-1, 3, 32, 32).float() / 255.0
        y = torch.cat([torch.as_tensor(parts[n][b"labels"]) for n in names]).long()
        return x, y

    return stack([f"data_batch_{i}" for i in range(1, 6)]), stack(["test_batch"])
