"""Full-size data download: small archives in the real formats, served from 127.0.0.1 by the test itself."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import os
import pickle
import socket
import stat
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from datamodules import archives
from datamodules import download as download_module
from datamodules.archives import ChecksumMismatchError, DownloadError, UnsafeArchiveError, download, safe_extract
from datamodules.converters import aclimdb_to_tsv, cifar10_to_imagefolder, load_cifar_pickle
from datamodules.download import main, prepare_full_dataset
from datamodules.errors import DataError

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# (split, folder, file name, text): a tab, CRLF and LF newlines, U+0085, <br /> and non-ASCII text.
REVIEWS = [
    ("train", "pos", "12_9.txt", "Great\tfilm.<br /><br />Loved it."),
    ("train", "pos", "3_10.txt", "Line one\nline two\r\nline three"),
    ("train", "neg", "7_2.txt", "Bad\u0085really bad. Caf\u00e9 scene only."),
    ("train", "neg", "0_1.txt", "Awful."),
    ("test", "pos", "5_8.txt", "Fine \u2014 \u201cquoted\u201d"),
    ("test", "neg", "1_4.txt", "Meh\r"),
]


# ---------------------------------------------------------------------------------------------- fixtures


#: Paths the test server was asked for; each use of the http_root fixture starts it empty.
requested: list[str] = []


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        requested.append(self.path)
        super().do_GET()


class _JoiningServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() then joins every request thread: nothing outlives the test


@pytest.fixture
def http_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1 for the duration of one test: ``(folder, base_url)``."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    served = tmp_path / "served"
    served.mkdir()
    requested.clear()
    server = _JoiningServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(served)))
    thread = threading.Thread(
        target=functools.partial(server.serve_forever, poll_interval=0.02), name="test-http-server", daemon=True
    )
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert not thread.is_alive()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_gz(files: dict[str, bytes]) -> bytes:
    """A .tar.gz holding regular files ``name -> content``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def tar_gz_with(members: list[tarfile.TarInfo], contents: dict[str, bytes] | None = None) -> bytes:
    """A .tar.gz of hand-made members (links, devices, odd names)."""
    contents = contents or {}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info in members:
            data = contents.get(info.name)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def aclimdb_archive() -> bytes:
    files = {f"aclImdb/{split}/{folder}/{name}": text.encode() for split, folder, name, text in REVIEWS}
    files.update(
        {
            "aclImdb/README": b"readme",
            "aclImdb/imdb.vocab": b"the\nand\n",
            "aclImdb/train/unsup/0_0.txt": b"unlabelled review",
            "aclImdb/train/labeledBow.feat": b"9 0:1\n",
            "aclImdb/train/urls_pos.txt": b"http://www.imdb.com/title/tt0000000/usercomments\n",
        }
    )
    return tar_gz(files)


def cifar_images(seed: int, count: int) -> tuple[np.ndarray, list[int]]:
    generator = np.random.default_rng(seed)
    data = generator.integers(0, 256, size=(count, 3072), dtype=np.uint8)
    labels = [int(x) for x in generator.integers(0, 10, size=count)]
    return data, labels


def cifar_batch_bytes(data: np.ndarray, labels: list[int], name: str) -> bytes:
    # Protocol 2 like the real batches, with the same keys.
    batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": [b"x.png"] * len(labels)}
    return pickle.dumps(batch, protocol=2)


def cifar_archive() -> tuple[bytes, dict[str, tuple[np.ndarray, list[int]]]]:
    batches = {f"data_batch_{i}": cifar_images(i, 6) for i in range(1, 6)}
    batches["test_batch"] = cifar_images(99, 8)
    files = {
        f"cifar-10-batches-py/{name}": cifar_batch_bytes(data, labels, name) for name, (data, labels) in batches.items()
    }
    meta = {b"num_cases_per_batch": 10000, b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072}
    files["cifar-10-batches-py/batches.meta"] = pickle.dumps(meta, protocol=2)
    files["cifar-10-batches-py/readme.html"] = b"<html></html>"
    return tar_gz(files), batches


def expected_cifar_images(
    batches: dict[str, tuple[np.ndarray, list[int]]], split: str, class_name: str
) -> list[np.ndarray]:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    index = CIFAR10_NAMES.index(class_name)
    return [image for name in names for image, label in zip(*batches[name], strict=True) if label == index]


def listing(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


# ---------------------------------------------------------------------------------------------- download


def test_download_verifies_and_skips_when_present(http_root, tmp_path):
    served, base = http_root
    payload = os.urandom(3 * (1 << 20) + 7)  # several read chunks
    (served / "file.bin").write_bytes(payload)
    destination = tmp_path / "dl" / "file.bin"

    assert download(f"{base}/file.bin", destination, sha256(payload), progress=False) == destination
    assert destination.read_bytes() == payload
    assert listing(destination.parent) == {"file.bin"}

    # Present with the right digest: no request is made (this URL would 404).
    download(f"{base}/missing.bin", destination, sha256(payload), progress=False)
    md5 = hashlib.md5(payload, usedforsecurity=False).hexdigest()
    download(f"{base}/missing.bin", destination, md5.upper(), algorithm="md5", progress=True)


def test_download_replaces_a_stale_file(http_root, tmp_path):
    served, base = http_root
    (served / "file.bin").write_bytes(b"new")
    destination = tmp_path / "file.bin"
    destination.write_bytes(b"old, truncated or tampered")
    download(f"{base}/file.bin", destination, sha256(b"new"), progress=False)
    assert destination.read_bytes() == b"new"


def test_tampered_download_fails_and_leaves_nothing(http_root, tmp_path):
    served, base = http_root
    good = aclimdb_archive()
    tampered = bytearray(good)
    tampered[len(tampered) // 2] ^= 0xFF
    (served / "aclImdb_v1.tar.gz").write_bytes(bytes(tampered))
    destination_dir = tmp_path / "dl"
    destination_dir.mkdir()
    url = f"{base}/aclImdb_v1.tar.gz"

    with pytest.raises(ChecksumMismatchError) as caught:
        download(url, destination_dir / "aclImdb_v1.tar.gz", sha256(good), progress=False)
    message = str(caught.value)
    assert url in message and sha256(good) in message and sha256(bytes(tampered)) in message
    assert listing(destination_dir) == set()


@pytest.mark.parametrize("path", ["/missing.tar.gz", None])
def test_network_errors_are_download_errors(http_root, tmp_path, path):
    _, base = http_root
    with contextlib.ExitStack() as stack:
        if path is None:
            # A port bound here but never listened on refuses connections, and stays ours for the whole download
            # (a port bound and released could be taken by another process before the download connects).
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            url, expected = f"http://127.0.0.1:{sock.getsockname()[1]}/x.tar.gz", "could not download"
        else:
            url, expected = base + path, "HTTP 404"
        with pytest.raises(DownloadError, match=expected):
            download(url, tmp_path / "dl" / "x.tar.gz", "0" * 64, progress=False)
    assert listing(tmp_path / "dl") == set()


# ---------------------------------------------------------------------------------------------- conversion


def test_imdb_download_and_conversion(http_root, tmp_path):
    served, base = http_root
    archive = aclimdb_archive()
    (served / "aclImdb_v1.tar.gz").write_bytes(archive)
    data_dir = tmp_path / "full"

    out = prepare_full_dataset(
        "imdb", data_dir, url=f"{base}/aclImdb_v1.tar.gz", digest=sha256(archive), progress=False
    )

    assert out == data_dir / "imdb"
    # The archive and the extracted tree are gone; the lock file stays (filelock never deletes it on POSIX).
    assert listing(data_dir) - {".imdb.lock"} == {"imdb", "imdb/train.tsv", "imdb/test.tsv"}
    train = (out / "train.tsv").read_bytes().decode("utf-8").split("\n")
    assert train == [
        "label\trating\tid\ttext",
        "0\t1\t0\tAwful.",
        "0\t2\t7\tBad\u0085really bad. Caf\u00e9 scene only.",
        "1\t10\t3\tLine one line two  line three",
        "1\t9\t12\tGreat film.<br /><br />Loved it.",
        "",
    ]
    test = (out / "test.tsv").read_bytes().decode("utf-8").split("\n")
    assert test == ["label\trating\tid\ttext", "0\t4\t1\tMeh ", "1\t8\t5\tFine \u2014 \u201cquoted\u201d", ""]

    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((out / "train.tsv").stat().st_mode) == 0o666 & ~umask  # not tempfile's private 0o600

    # Already converted: reused without the network (this URL would 404).
    assert prepare_full_dataset("imdb", data_dir, url=f"{base}/gone", progress=False) == out


def test_aclimdb_bad_file_name_names_the_file(tmp_path):
    review = tmp_path / "aclImdb" / "train" / "pos" / "notes.txt"
    review.parent.mkdir(parents=True)
    review.write_text("x")
    (tmp_path / "aclImdb" / "train" / "neg").mkdir()
    with pytest.raises(DataError, match=r"notes\.txt: review file name is not"):
        aclimdb_to_tsv(tmp_path, tmp_path / "out")


def test_cifar2_download_and_conversion(http_root, tmp_path):
    served, base = http_root
    archive, batches = cifar_archive()
    (served / "cifar-10-python.tar.gz").write_bytes(archive)
    md5 = hashlib.md5(archive, usedforsecurity=False).hexdigest()
    data_dir = tmp_path / "full"

    out = prepare_full_dataset(
        "cifar2",
        data_dir,
        url=f"{base}/cifar-10-python.tar.gz",
        digest=md5,
        algorithm="md5",
        keep_archive=True,
        progress=False,
    )

    assert out == data_dir / "cifar2"
    assert (data_dir / "cifar-10-python.tar.gz").read_bytes() == archive
    assert {p.name for p in data_dir.iterdir()} - {".cifar2.lock"} == {"cifar2", "cifar-10-python.tar.gz"}
    total = 0
    for split in ("train", "test"):
        assert sorted(p.name for p in (out / split).iterdir()) == ["airplane", "automobile"]
        for class_name in ("airplane", "automobile"):
            expected = expected_cifar_images(batches, split, class_name)
            files = sorted((out / split / class_name).iterdir(), key=lambda p: int(p.stem))
            assert [p.name for p in files] == [f"{n}.png" for n in range(len(expected))]
            for path, image in zip(files, expected, strict=True):
                with Image.open(path) as png:
                    assert png.format == "PNG" and png.mode == "RGB"
                    assert np.array_equal(np.asarray(png).transpose(2, 0, 1), image.reshape(3, 32, 32))
            total += len(expected)
    assert total > 0
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask  # not tempfile's private 0o700


def test_concurrent_preparations_download_once(http_root, tmp_path):
    served, base = http_root
    archive, _ = cifar_archive()
    (served / "c.tar.gz").write_bytes(archive)
    md5 = hashlib.md5(archive, usedforsecurity=False).hexdigest()
    results: list[Path | BaseException] = []

    def prepare() -> None:
        try:
            results.append(
                prepare_full_dataset(
                    "cifar2", tmp_path / "full", url=f"{base}/c.tar.gz", digest=md5, algorithm="md5", progress=False
                )
            )
        except BaseException as err:
            results.append(err)

    workers = [threading.Thread(target=prepare) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert results == [tmp_path / "full" / "cifar2"] * 3
    assert requested == ["/c.tar.gz"]


def test_cifar10_all_classes(tmp_path):
    archive, batches = cifar_archive()
    (tmp_path / "a.tar.gz").write_bytes(archive)
    extracted = safe_extract(tmp_path / "a.tar.gz", tmp_path / "extracted")
    out = cifar10_to_imagefolder(extracted, tmp_path / "cifar10", classes=None)
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(CIFAR10_NAMES)
    assert sum(1 for _ in out.rglob("*.png")) == sum(len(labels) for _, labels in batches.values())
    with pytest.raises(ValueError, match=r"unknown CIFAR-10 class\(es\) \['plane'\]"):
        cifar10_to_imagefolder(extracted, tmp_path / "other", classes=("plane",))
    assert not (tmp_path / "other").exists()


# ---------------------------------------------------------------------------------------------- unsafe archives


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _folder(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    return info


#: case -> (members given the "outside" folder, the member the error must name, why it must give)
UNSAFE_ARCHIVES = {
    "dot-dot": (lambda out: [_file("data/ok.txt"), _file("../escape.txt")], "../escape.txt", "'..'"),
    "dot-dot-inside": (lambda out: [_file("data/../../escape.txt")], "data/../../escape.txt", "'..'"),
    "absolute": (lambda out: [_file(f"{out}/absolute.txt")], "{out}/absolute.txt", "absolute path"),
    "symlink-absolute": (lambda out: [_link("data/link", out)], "data/link", "symlink to absolute"),
    "symlink-relative": (lambda out: [_link("data/link", "../../outside")], "data/link", "leads outside"),
    "hardlink": (
        lambda out: [_link("data/hard", "../outside/secret.txt", tarfile.LNKTYPE)],
        "data/hard",
        "hard link to '../outside/secret.txt': it leads outside",
    ),
    "through-symlink": (
        lambda out: [_link("data/here", "."), _link("data/up", "here/../../x")],
        "data/up",
        "passes through the archive's symlink 'data/here'",
    ),
    "beneath-symlink": (
        lambda out: [_link("data/dir", "sub"), _file("data/dir/file.txt")],
        "data/dir/file.txt",
        "written through the archive's symlink 'data/dir'",
    ),
    "device": (lambda out: [_device("data/null")], "data/null", "device files"),
    "link-as-root": (lambda out: [_link(".", "data")], ".", "replace the target folder itself"),
    "link-over-folder": (
        lambda out: [_folder("data/sub"), _link("data/sub", ".")],
        "data/sub",
        "shares its name with another member",
    ),
    "hardlink-to-nothing": (
        lambda out: [_link("data/hard", "data/later.txt", tarfile.LNKTYPE), _file("data/later.txt")],
        "data/hard",
        "not an earlier file of the archive",
    ),
}


@pytest.fixture(params=["data filter", "no data filter"])
def tar_filter(request, monkeypatch):
    """Extraction as on this Python, and as on one without tarfile's data filter (before 3.10.12 / 3.11.4)."""
    if request.param == "no data filter":
        monkeypatch.setattr(archives, "HAS_DATA_FILTER", False)
    return request.param


@pytest.mark.parametrize("case", sorted(UNSAFE_ARCHIVES))
def test_unsafe_archives_are_refused(tmp_path, case, tar_filter):
    outside = tmp_path / "outside"
    outside.mkdir()
    make_members, member_name, why = UNSAFE_ARCHIVES[case]
    members = make_members(str(outside))
    contents = {info.name: b"payload" for info in members if info.isreg()}
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(tar_gz_with(members, contents))
    work = tmp_path / "work"
    work.mkdir()

    with pytest.raises(UnsafeArchiveError) as caught:
        safe_extract(archive, work / "target")

    assert f"member '{member_name.format(out=outside)}'" in str(caught.value)
    assert why in str(caught.value)
    assert listing(work) == set()  # no target, no staging folder
    assert listing(outside) == set()
    assert not (tmp_path / "escape.txt").exists()


def test_internal_links_and_dot_names_extract(tmp_path, tar_filter):
    members = [
        _file("./data/readme.txt"),
        _link("data/alias", "readme.txt"),
        _link("data/hard", "data/readme.txt", tarfile.LNKTYPE),
    ]
    archive = tmp_path / "ok.tar.gz"
    archive.write_bytes(tar_gz_with(members, {"./data/readme.txt": b"hello"}))
    target = safe_extract(archive, tmp_path / "target")
    assert (target / "data" / "alias").read_bytes() == b"hello"
    assert (target / "data" / "hard").read_bytes() == b"hello"
    with pytest.raises(FileExistsError, match="already exists"):
        safe_extract(archive, target)


def test_corrupt_archive_is_a_download_error(tmp_path):
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(aclimdb_archive()[:200])
    with pytest.raises(DownloadError, match=r"broken\.tar\.gz: not a readable tar archive"):
        safe_extract(archive, tmp_path / "target")
    assert listing(tmp_path) == {"broken.tar.gz"}


# ---------------------------------------------------------------------------------------------- pickles


class _CreatesFile:
    """Unpickling this calls ``factory(path, *args)``: what a malicious batch file would do."""

    def __init__(self, factory: object, *args: object) -> None:
        self.factory, self.args = factory, args

    def __reduce__(self) -> tuple:
        return self.factory, self.args


def _attacks(marker: Path) -> dict[str, object]:
    import builtins
    import pathlib

    return {
        "os.system": _CreatesFile(os.system, f"touch {marker}"),
        "builtins.open": _CreatesFile(builtins.open, str(marker), "w"),
        "pathlib.Path": {b"data": _CreatesFile(pathlib.Path, str(marker))},
        "eval": _CreatesFile(builtins.eval, f"open({str(marker)!r}, 'w')"),
    }


@pytest.mark.parametrize("attack", ["os.system", "builtins.open", "pathlib.Path", "eval"])
def test_crafted_pickle_runs_no_code(tmp_path, attack):
    marker = tmp_path / "pwned"
    batch = tmp_path / "data_batch_1"
    batch.write_bytes(pickle.dumps(_attacks(marker)[attack], protocol=2))

    with pytest.raises(DataError, match=r"data_batch_1: unsafe pickle, not loaded: refusing to load"):
        load_cifar_pickle(batch)
    assert not marker.exists()


def test_the_crafted_pickle_would_create_the_file(tmp_path):
    # Shows the attack above is real: plain pickle.loads runs it.
    marker = tmp_path / "pwned"
    opened = pickle.loads(pickle.dumps(_attacks(marker)["builtins.open"]))
    opened.close()
    assert marker.exists()


def test_restricted_unpickler_loads_python2_style_batches(tmp_path):
    # Python 2 wrote str, not bytes: SHORT_BINSTRING opcodes, loaded as bytes. Emulate that writer.
    class Python2Pickler(pickle._Pickler):
        dispatch = pickle._Pickler.dispatch.copy()

        def save_py2_str(self, obj: bytes | str) -> None:
            raw = obj if isinstance(obj, bytes) else obj.encode("latin1")
            header = pickle.SHORT_BINSTRING + bytes([len(raw)]) if len(raw) < 256 else pickle.BINSTRING
            if len(raw) >= 256:
                header += len(raw).to_bytes(4, "little")
            self.write(header + raw)
            self.memoize(obj)

        dispatch[bytes] = dispatch[str] = save_py2_str

    data, labels = cifar_images(0, 3)
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump({b"data": data, b"labels": labels})
    assert b"_codecs" not in buffer.getvalue()
    (tmp_path / "batch").write_bytes(buffer.getvalue())
    batch = load_cifar_pickle(tmp_path / "batch")
    assert np.array_equal(batch["data"], data) and batch["labels"] == labels


def test_truncated_batch_is_a_data_error(tmp_path):
    data, labels = cifar_images(0, 2)
    (tmp_path / "batch").write_bytes(cifar_batch_bytes(data, labels, "b")[:100])
    with pytest.raises(DataError, match=r"batch: not a CIFAR-10 python batch"):
        load_cifar_pickle(tmp_path / "batch")


# ---------------------------------------------------------------------------------------------- command line


def test_cli_success(http_root, tmp_path, capsys):
    served, base = http_root
    archive = aclimdb_archive()
    (served / "a.tar.gz").write_bytes(archive)
    code = main(["imdb", "--data-dir", str(tmp_path / "d"), "--url", f"{base}/a.tar.gz", "--sha256", sha256(archive)])
    out = capsys.readouterr().out
    assert code == 0
    assert f"--task imdb --data-dir {tmp_path / 'd' / 'imdb'}" in out


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("tampered", "checksum mismatch for http://127.0.0.1:"),
        ("unsafe", "refusing to extract member '../escape.txt'"),
        ("missing", "could not download http://127.0.0.1:"),
        ("corrupt", "aclImdb_v1.tar.gz: not a readable tar archive ("),
    ],
)
def test_cli_errors_are_one_line(http_root, tmp_path, capsys, case, message):
    served, base = http_root
    unsafe = tar_gz({"../escape.txt": b"x"})
    (served / "unsafe.tar.gz").write_bytes(unsafe)
    (served / "tampered.tar.gz").write_bytes(b"not the archive")
    (served / "corrupt.tar.gz").write_bytes(b"not a tar file")
    digests = {"tampered": sha256(b"the archive"), "unsafe": sha256(unsafe), "corrupt": sha256(b"not a tar file")}
    digest = digests.get(case, "0" * 64)

    code = main(
        [
            "imdb",
            "--data-dir",
            str(tmp_path / "d"),
            "--url",
            f"{base}/{case}.tar.gz",
            "--sha256",
            digest,
            "--no-progress-bar",
        ]
    )  # without the progress bar, which also writes to stderr

    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("python -m datamodules.download: error: ")
    assert message in captured.err
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "d" / "imdb").exists()


# ---------------------------------------------------------------------------------------------- extraction, fuzzed

path_part = st.sampled_from(["a", "b", ".", "..", "", "l"])
member_path = st.lists(path_part, min_size=1, max_size=4).map("/".join)
member_kind = st.sampled_from(["file", "dir", "symlink", "hardlink", "fifo"])


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None)
@given(specs=st.lists(st.tuples(member_kind, member_path, member_path, st.booleans()), min_size=1, max_size=6))
@example(specs=[("file", "a", "", False), ("file", "a/b", "", False)])  # a file where a folder must go
@example(specs=[("hardlink", "a", "a", False)])  # a hard link to itself
@example(specs=[("symlink", ".", "", False)])  # a link replacing the target folder (tarfile recursed forever)
@example(specs=[("symlink", "a/a", "..", False)])  # a link to the target folder itself is fine
def test_extraction_never_writes_outside_the_target(specs):
    """Random trees of files, folders and links: either refused, or everything lands (and resolves) inside."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        target_parent = root.joinpath(*["d"] * 12)  # deep enough that ".." chains stay inside the scratch folder
        target_parent.mkdir(parents=True)
        members = []
        for kind, name, link, absolute in specs:
            info = tarfile.TarInfo(name)
            info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}.get(
                kind, tarfile.LNKTYPE if kind == "hardlink" else tarfile.FIFOTYPE
            )
            info.linkname = f"{root}/outside/{link}" if absolute else link
            members.append(info)
        contents = {info.name: b"x" for info in members if info.isreg()}
        archive = root / "archive.tar.gz"
        archive.write_bytes(tar_gz_with(members, contents))
        before = listing(root)
        target = target_parent / "target"

        with contextlib.suppress(DownloadError):  # refused, or failed without keeping anything
            safe_extract(archive, target)

        assert listing(root) - before <= {str(p.relative_to(root)) for p in [target, *target.rglob("*")]}
        real_target = os.path.realpath(target)
        for path in target.rglob("*"):
            assert os.path.commonpath([os.path.realpath(path), real_target]) == real_target


@pytest.mark.filterwarnings("ignore:.*hold no example of class:UserWarning")  # one batch of six reviews: one class
def test_fit_download_fetches_converts_and_trains(http_root, tmp_path, monkeypatch, capsys):
    from lightning_app import fit as fit_cli

    served, base_url = http_root
    archive = aclimdb_archive()
    (served / "aclImdb_v1.tar.gz").write_bytes(archive)
    spec = download_module.FULL_DATASETS["imdb"]
    mirror = dataclasses.replace(spec, url=f"{base_url}/aclImdb_v1.tar.gz", digest=sha256(archive))
    monkeypatch.setitem(download_module.FULL_DATASETS, "imdb", mirror)
    data_dir = tmp_path / "full"
    argv = ["--task", "imdb", "--download", "--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "cache"),
            "--fast-dev-run", "--no-progress-bar"]  # fmt: skip
    assert fit_cli.run_cli(fit_cli.main, argv) == 0
    assert requested == ["/aclImdb_v1.tar.gz"]
    assert (data_dir / "imdb" / "train.tsv").is_file()
    assert fit_cli.run_cli(fit_cli.main, argv) == 0
    assert requested == ["/aclImdb_v1.tar.gz"], "converted data is reused without the network"


def test_fit_download_of_a_task_that_ships_its_data_is_a_usage_error(capsys):
    from lightning_app import fit as fit_cli

    assert fit_cli.run_cli(fit_cli.main, ["--task", "titanic", "--download"]) == 2
    assert "--download: task 'titanic' ships all its data" in capsys.readouterr().err
