"""Data loaders of the experiments, on local files only: no test touches the network."""

import gzip
import io
import shutil
import struct
import sys
import urllib.request
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from experiments import data  # noqa: E402


def shared_tinyshakespeare() -> Path | None:
    """The shared copy of tinyshakespeare, where this checkout has one (never part of the repo)."""
    for base in (ROOT / "shared", ROOT.parent / "shared", Path("/work/shared")):
        path = base / "data" / "tinyshakespeare.txt"
        if path.is_file():
            return path
    return None


def test_local_text_file_is_read_as_bytes_and_split(tmp_path):
    text = "hello, wörld\n" * 100
    path = tmp_path / "tiny.txt"
    path.write_text(text, encoding="utf-8")
    d = data.load_text(str(path), val_fraction=0.1)
    raw = text.encode("utf-8")
    assert d.vocab_size == 256
    assert len(d.train) + len(d.val) == len(raw)
    assert len(d.val) == int(len(raw) * 0.1)
    assert bytes(d.train.tolist()) + bytes(d.val.tolist()) == raw
    assert data.TextData.decode(data.TextData.encode("wörld")) == "wörld"


def test_unknown_data_name_is_a_clear_error():
    with pytest.raises(ValueError, match="data: expected"):
        data.load_text("no/such/file.txt")


def test_stdlib_corpus_is_deterministic_capped_python():
    a = data.stdlib_text(max_bytes=300_000)
    b = data.stdlib_text(max_bytes=300_000)
    assert a == b and len(a) == 300_000
    assert b"def " in a and b"import " in a
    d = data.load_text("stdlib", max_bytes=300_000)
    assert len(d.train) == 270_000 and len(d.val) == 30_000


def test_cached_file_with_right_checksum_needs_no_network(tmp_path, monkeypatch):
    source = shared_tinyshakespeare()
    if source is None:
        pytest.skip("shared/data/tinyshakespeare.txt is not present")
    shutil.copy(source, tmp_path / "tinyshakespeare.txt")

    def no_network(*args, **kwargs):
        raise AssertionError("the cached file should have been used")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    d = data.load_text("tinyshakespeare", cache_dir=tmp_path)
    assert len(d.train) + len(d.val) == 1_115_394
    assert data.TextData.decode(d.train[:9]) == "First Cit"


def test_checksum_mismatch_raises_a_clear_error(tmp_path):
    (tmp_path / "tinyshakespeare.txt").write_text("not shakespeare at all")
    with pytest.raises(data.ChecksumError, match="checksum mismatch .*tinyshakespeare.txt.*delete it"):
        data.load_text("tinyshakespeare", cache_dir=tmp_path)


def test_download_writes_the_cache_and_verifies(tmp_path, monkeypatch):
    payload = b"some bytes to download\n" * 50
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout: io.BytesIO(payload))
    digest = data.hashlib.sha256(payload).hexdigest()
    path = data.download("https://example.invalid/f.txt", "sub/f.txt", f"sha256:{digest}", cache_dir=tmp_path)
    assert path == tmp_path / "sub" / "f.txt" and path.read_bytes() == payload
    assert not list(tmp_path.rglob("*.part"))
    # A corrupted download is rejected, not silently used.
    (tmp_path / "bad.txt").unlink(missing_ok=True)
    with pytest.raises(data.ChecksumError):
        data.download("https://example.invalid/f.txt", "bad.txt", "sha256:" + "0" * 64, cache_dir=tmp_path)
    # Other published digests (md5, sha1) are accepted when written with their algorithm.
    md5 = data.hashlib.md5(payload).hexdigest()
    assert data.verify(path, f"md5:{md5}") == path


def test_idx_parser_reads_mnist_format(tmp_path):
    images = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8)
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">IIII", 0x0803, 3, 4, 5) + bytes(images.flatten().tolist()))
    assert torch.equal(data.read_idx(path), images)


def test_shapes_are_deterministic_and_labelled():
    a, b = data.make_shapes(64, seed=3), data.make_shapes(64, seed=3)
    c = data.make_shapes(64, seed=4)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert a.images.shape == (64, 3, 32, 32) and 0 <= a.images.min() and a.images.max() <= 1
    assert a.labels.min() >= 0 and a.labels.max() < data.NUM_SHAPE_CLASSES
    tokens = data.caption_tokens(a)  # (n, 7)
    assert tokens.shape == (64, 7) and (tokens[:, 0] == data.BOS).all() and (tokens[:, -1] == data.EOS).all()
    assert all(data.caption_text(tokens[i]) == a.caption(i) for i in range(64))
    # The shape drawn is where the caption says: the coloured pixels' centre is in the named quadrant.
    clean = data.make_shapes(32, seed=5, noise=0.0)
    for i in range(32):
        colour = torch.tensor(list(data.COLOURS.values())[clean.colour[i]]).view(3, 1, 1)
        ys, xs = torch.nonzero(((clean.images[i] - colour).abs().sum(0) < 1e-4), as_tuple=True)
        assert (ys.float().mean() >= 16) == bool(clean.vertical[i])
        assert (xs.float().mean() >= 16) == bool(clean.horizontal[i])


def test_windows_and_streams():
    d = torch.arange(1000, dtype=torch.uint8)
    w = data.sample_windows(d, 4, 10, torch.Generator().manual_seed(0))
    assert w.shape == (4, 10) and w.dtype == torch.long
    assert ((w[:, 1:] - w[:, :-1]) % 256 == 1).all()  # consecutive bytes
    s = data.contiguous_streams(torch.arange(100), 3)
    assert s.shape == (3, 33) and torch.equal(s.flatten(), torch.arange(99))


def test_mnist_loader_reads_cached_files(tmp_path, monkeypatch):
    """The MNIST loader on small fake files placed in the cache (their digests replace the real ones)."""
    sizes = {"train": 6, "t10k": 4}
    checksums = {}
    (tmp_path / "mnist").mkdir()
    for split, n in sizes.items():
        images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8)
        labels = torch.arange(n, dtype=torch.uint8) % 10
        for kind, header, payload in (("images-idx3", struct.pack(">IIII", 0x0803, n, 28, 28), images),
                                      ("labels-idx1", struct.pack(">II", 0x0801, n), labels)):
            name = f"{split}-{kind}-ubyte.gz"
            with gzip.open(tmp_path / "mnist" / name, "wb") as f:
                f.write(header + bytes(payload.flatten().tolist()))
            checksums[name] = data.file_digest(tmp_path / "mnist" / name)
    monkeypatch.setattr(data, "MNIST_FILES", checksums)
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: (_ for _ in ()).throw(AssertionError("network")))
    (train_x, train_y), (test_x, test_y) = data.load_mnist(tmp_path)
    assert train_x.shape == (6, 3, 28, 28) and test_x.shape == (4, 3, 28, 28)
    assert 0 <= train_x.min() and train_x.max() <= 1 and torch.equal(train_x[:, 0], train_x[:, 2])
    assert train_y.tolist() == [0, 1, 2, 3, 4, 5] and test_y.dtype == torch.long


def test_cifar10_loader_reads_cached_archive(tmp_path, monkeypatch):
    """The CIFAR-10 loader on a small fake archive in the real layout (pickled batches in a tar.gz)."""
    import pickle
    import tarfile

    import numpy as np

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        batch = {b"data": np.full((2, 3072), i, dtype=np.uint8), b"labels": [i % 10, (i + 1) % 10]}
        (folder / name).write_bytes(pickle.dumps(batch))
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    monkeypatch.setattr(data, "CIFAR10", {**data.CIFAR10, "checksum": "sha256:" + data.file_digest(archive)})
    (train_x, train_y), (test_x, test_y) = data.load_cifar10(tmp_path)
    assert train_x.shape == (10, 3, 32, 32) and test_x.shape == (2, 3, 32, 32)
    assert train_y.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
    assert torch.allclose(test_x, torch.full_like(test_x, 5 / 255))
