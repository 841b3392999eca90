"""Downloads against a loopback HTTP server serving archives built here; sources are injected, nothing patched."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from kd.data.download import RECORD_FILE, Archive, DownloadSource, download_dataset, extract_archive
from kd.data.io import read_image
from kd.errors import KdError

RULES = (
    (r"pack/(?P<ds>Set5)/HR/(?P<stem>[^/]+)\.png", "{ds}/HR/{stem}.png"),
    (r"pack/(?P<ds>Set5)/LR_bicubic/X(?P<s>\d)/(?P<stem>[^/]+)x(?P=s)\.png", "{ds}/LR_bicubic/X{s}/{stem}.png"),
)


class _Server:
    """Serves `files` (name -> bytes) with HTTP Range support and records the Range headers it received."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ranges: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                data = server.files.get(self.path.lstrip("/"))
                if data is None:
                    self.send_error(404)
                    return
                wanted = self.headers.get("Range")
                server.ranges.append(wanted)
                match = re.fullmatch(r"bytes=(\d+)-", wanted or "")
                start = int(match.group(1)) if match else 0
                if match and start >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206 if match else 200)
                if match:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def _png_bytes(seed: int, h: int, w: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _tar(members: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    return buffer.getvalue()


GOOD_MEMBERS = {
    "pack/Set5/HR/baby.png": _png_bytes(1, 16, 16),
    "pack/Set5/HR/bird.png": _png_bytes(2, 12, 20),
    "pack/Set5/LR_bicubic/X2/babyx2.png": _png_bytes(3, 8, 8),
    "pack/Set5/bin/ignored.pt": b"not part of the layout",
    "pack/readme.txt": b"hello",
}


def _source(url: str, data: bytes | None = None, *, sha256: str | None = "auto", md5: str | None = None) -> dict:
    if sha256 == "auto":
        sha256 = hashlib.sha256(data).hexdigest()
    archive = Archive(url, url.rsplit("/", 1)[1], RULES, sha256=sha256, md5=md5)
    return {"benchmark": DownloadSource("benchmark", ("Set5",), (archive,))}


def _tree(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


def test_good_archive_installs_in_the_convention(server, tmp_path):
    data = _tar(GOOD_MEMBERS)
    server.files["good.tar"] = data
    root = tmp_path / "data"
    installed = download_dataset("set5", root, sources=_source(server.url("good.tar"), data),
                                 downloads=tmp_path / "dl", log=lambda m: None)
    assert installed == [root / "Set5"]
    assert _tree(root) == ["Set5", "Set5/HR", "Set5/HR/baby.png", "Set5/HR/bird.png", "Set5/LR_bicubic",
                           "Set5/LR_bicubic/X2", "Set5/LR_bicubic/X2/baby.png"]
    assert (root / "Set5/HR/bird.png").read_bytes() == GOOD_MEMBERS["pack/Set5/HR/bird.png"]
    assert read_image(root / "Set5/LR_bicubic/X2/baby.png").shape == (3, 8, 8)
    # a second call finds it installed and does not download again
    requests = len(server.ranges)
    download_dataset("Set5", root, sources=_source(server.url("good.tar"), data), downloads=tmp_path / "dl",
                     log=lambda m: None)
    assert len(server.ranges) == requests


def test_zip_archives_work_too(server, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in GOOD_MEMBERS.items():
            archive.writestr(name, data)
    data = buffer.getvalue()
    server.files["good.zip"] = data
    root = tmp_path / "data"
    download_dataset("Set5", root, sources=_source(server.url("good.zip"), data), downloads=tmp_path / "dl",
                     log=lambda m: None)
    assert (root / "Set5/HR/baby.png").read_bytes() == GOOD_MEMBERS["pack/Set5/HR/baby.png"]


@pytest.mark.parametrize(
    "members, links",
    [
        ({**GOOD_MEMBERS, "pack/../../evil.png": b"x"}, None),
        ({**GOOD_MEMBERS, "/tmp/evil.png": b"x"}, None),
        (GOOD_MEMBERS, {"pack/Set5/HR/link.png": (tarfile.SYMTYPE, "../../../../etc/passwd")}),
        (GOOD_MEMBERS, {"pack/Set5/HR/abs.png": (tarfile.SYMTYPE, "/etc/passwd")}),
        (GOOD_MEMBERS, {"pack/Set5/HR/hard.png": (tarfile.LNKTYPE, "../outside.png")}),
        (GOOD_MEMBERS, {"pack/dev": (tarfile.CHRTYPE, "")}),
    ],
    ids=["dotdot", "absolute", "symlink-out", "symlink-absolute", "hardlink-out", "device"],
)
def test_unsafe_archives_are_refused_and_leave_nothing(server, tmp_path, members, links):
    data = _tar(members, links)
    server.files["bad.tar"] = data
    root = tmp_path / "data"
    with pytest.raises(KdError, match="refusing the archive"):
        download_dataset("Set5", root, sources=_source(server.url("bad.tar"), data), downloads=tmp_path / "dl",
                         log=lambda m: None)
    assert _tree(root) == []
    assert not (tmp_path / "evil.png").exists() and not (tmp_path.parent / "evil.png").exists()


@pytest.mark.parametrize("file_type, content", [(0o120000, b"../../../../outside.png"), (0o020000, b"")],
                         ids=["symlink-out", "device"])
def test_unsafe_zip_members_are_refused(tmp_path, file_type, content):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in GOOD_MEMBERS.items():
            archive.writestr(name, data)
        info = zipfile.ZipInfo("pack/Set5/HR/odd.png")
        info.external_attr = (file_type | 0o777) << 16
        archive.writestr(info, content)
    (tmp_path / "a.zip").write_bytes(buffer.getvalue())
    with pytest.raises(KdError, match="refusing the archive"):
        extract_archive(tmp_path / "a.zip", RULES, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_links_inside_the_archive_are_allowed_but_not_followed(tmp_path):
    data = _tar(GOOD_MEMBERS, {"pack/Set5/HR/alias.png": (tarfile.SYMTYPE, "baby.png")})
    (tmp_path / "a.tar").write_bytes(data)
    written = extract_archive(tmp_path / "a.tar", RULES, tmp_path / "out")
    assert sorted(p.name for p in written) == ["baby.png", "baby.png", "bird.png"]
    assert not any(p.is_symlink() for p in (tmp_path / "out").rglob("*"))


def test_wrong_hash_is_refused_and_leaves_nothing(server, tmp_path):
    data = _tar(GOOD_MEMBERS)
    server.files["good.tar"] = data
    root = tmp_path / "data"
    with pytest.raises(KdError, match="SHA-256"):
        download_dataset("Set5", root, sources=_source(server.url("good.tar"), sha256="0" * 64),
                         downloads=tmp_path / "dl", log=lambda m: None)
    with pytest.raises(KdError, match="MD5"):
        download_dataset("Set5", root, sources=_source(server.url("good.tar"), sha256=None, md5="0" * 32),
                         downloads=tmp_path / "dl", log=lambda m: None)
    assert _tree(root) == []
    assert _tree(tmp_path / "dl") == []  # the refused download is not kept either


def test_partial_download_is_resumed(server, tmp_path):
    data = _tar(GOOD_MEMBERS)
    server.files["good.tar"] = data
    downloads = tmp_path / "dl"
    downloads.mkdir()
    half = len(data) // 2
    (downloads / "good.tar.part").write_bytes(data[:half])
    download_dataset("Set5", tmp_path / "data", sources=_source(server.url("good.tar"), data), downloads=downloads,
                     log=lambda m: None)
    assert server.ranges == [f"bytes={half}-"]
    assert (downloads / "good.tar").read_bytes() == data and not (downloads / "good.tar.part").exists()
    assert (tmp_path / "data/Set5/HR/baby.png").is_file()


def test_unpinned_archive_records_sha256_on_first_download(server, tmp_path):
    data = _tar(GOOD_MEMBERS)
    server.files["good.tar"] = data
    messages: list[str] = []
    md5 = hashlib.md5(data).hexdigest()
    sources = _source(server.url("good.tar"), sha256=None, md5=md5)
    download_dataset("Set5", tmp_path / "data", sources=sources, downloads=tmp_path / "dl", log=messages.append)
    records = json.loads((tmp_path / "dl" / RECORD_FILE).read_text())
    assert records == {server.url("good.tar"): hashlib.sha256(data).hexdigest()}
    assert any("WARNING" in m and "Recorded SHA-256" in m for m in messages)
    # the host now serves different bytes: the recorded hash refuses them
    (tmp_path / "dl" / "good.tar").unlink()
    server.files["good.tar"] = _tar({**GOOD_MEMBERS, "pack/extra.txt": b"changed"})
    sources = _source(server.url("good.tar"), sha256=None, md5=None)
    with pytest.raises(KdError, match="recorded on first download"):
        download_dataset("Set5", tmp_path / "other", sources=sources, downloads=tmp_path / "dl", log=lambda m: None,
                         force=True)
    assert not (tmp_path / "other").exists()


def test_archive_without_expected_layout_is_refused(server, tmp_path):
    data = _tar({"something/else.png": _png_bytes(0, 4, 4)})
    server.files["odd.tar"] = data
    with pytest.raises(KdError, match="unexpected layout"):
        download_dataset("Set5", tmp_path / "data", sources=_source(server.url("odd.tar"), data),
                         downloads=tmp_path / "dl", log=lambda m: None)
    assert _tree(tmp_path / "data") == []


def test_force_rewrites_the_archive_files_and_keeps_the_users(server, tmp_path):
    data = _tar(GOOD_MEMBERS)
    server.files["good.tar"] = data
    root = tmp_path / "data"
    (root / "Set5" / "HR").mkdir(parents=True)
    (root / "Set5" / "HR" / "old.png").write_bytes(b"old")
    (root / "Set5" / "HR" / "baby.png").write_bytes(b"stale copy")
    download_dataset("Set5", root, sources=_source(server.url("good.tar"), data), downloads=tmp_path / "dl",
                     log=lambda m: None, force=True)
    assert sorted(p.name for p in (root / "Set5" / "HR").iterdir()) == ["baby.png", "bird.png", "old.png"]
    assert (root / "Set5" / "HR" / "old.png").read_bytes() == b"old"  # not the archive's: never touched
    assert (root / "Set5" / "HR" / "baby.png").read_bytes() != b"stale copy"
    assert [p.name for p in root.iterdir()] == ["Set5"]  # no staging or backup folder left


def test_download_adds_only_missing_files(server, tmp_path):
    """Set14 missing, Set5 there with the user's own file: Set14 is installed, Set5 keeps every file it had."""
    data = _tar({**GOOD_MEMBERS, "pack/Set14/HR/comic.png": _png_bytes(4, 12, 12)})
    server.files["good.tar"] = data
    rules = ((r"pack/(?P<ds>Set5|Set14)/HR/(?P<stem>[^/]+)\.png", "{ds}/HR/{stem}.png"),)
    archive = Archive(server.url("good.tar"), "good.tar", rules, sha256=hashlib.sha256(data).hexdigest())
    sources = {"benchmark": DownloadSource("benchmark", ("Set5", "Set14"), (archive,))}
    root = tmp_path / "data"
    (root / "Set5" / "HR").mkdir(parents=True)
    (root / "Set5" / "HR" / "baby.png").write_bytes(b"mine")
    (root / "Set5" / "HR" / "my_own.png").write_bytes(b"notes")
    messages: list[str] = []
    download_dataset("Set5", root, sources=sources, downloads=tmp_path / "dl", log=messages.append)
    assert (root / "Set5" / "HR" / "baby.png").read_bytes() == b"mine"
    assert (root / "Set5" / "HR" / "my_own.png").read_bytes() == b"notes"
    assert (root / "Set5" / "HR" / "bird.png").is_file() and (root / "Set14" / "HR" / "comic.png").is_file()
    assert any("2 files added" in m and "kept 1 files" in m for m in messages)


def test_installed_dataset_loads_as_eval_pairs(server, tmp_path, monkeypatch):
    from kd.data.benchmark import load_eval_images

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    data = _tar(GOOD_MEMBERS)
    server.files["good.tar"] = data
    root = tmp_path / "data"
    download_dataset("Set5", root, sources=_source(server.url("good.tar"), data), downloads=tmp_path / "dl",
                     log=lambda m: None)
    images = load_eval_images("Set5", 2, root)
    assert [(im.name, im.lr_source) for im in images] == [("baby", "shipped"), ("bird", "generated")]
    assert torch.equal(images[0].lr, read_image(root / "Set5/LR_bicubic/X2/baby.png"))


def _dcscn_tar(bmp: bytes = b"BM tiny", png: bytes | None = None) -> bytes:
    """GitHub's archive layout of the DCSCN repository: `<repo>-<commit>/data/{yang91,bsd200}/...` beside code."""
    top = "dcscn-super-resolution-0123abcd"
    return _tar({f"{top}/data/yang91/t1.bmp": bmp, f"{top}/data/yang91/tt27.bmp": b"BM other",
                 f"{top}/data/bsd200/100075.png": png or _png_bytes(5, 8, 8), f"{top}/data/set5/baby.png": b"x",
                 f"{top}/README.md": b"readme"})


def _dcscn_source(url: str, pins: tuple[tuple[str, str], ...]) -> dict:
    from kd.data.download import SOURCES

    archive = SOURCES["dcscn"].archives[0]
    fake = Archive(url, "dcscn.tar.gz", archive.rules)  # the built-in rules, served from here
    return {"dcscn": DownloadSource("dcscn", ("T91", "BSD200"), (fake,), content_sha256=pins)}


def test_t91_and_bsd200_install_pinned_by_their_files(server, tmp_path):
    from kd.data.download import content_digest

    server.files["dcscn.tar.gz"] = _dcscn_tar()
    (tmp_path / "a.tar").write_bytes(_dcscn_tar())  # the pins of this archive's files, made as the built-in ones
    extract_archive(tmp_path / "a.tar", _dcscn_source("", ())["dcscn"].archives[0].rules, tmp_path / "made")
    pins = tuple((name, content_digest(tmp_path / "made" / name)) for name in ("T91", "BSD200"))
    root, downloads = tmp_path / "data", tmp_path / "dl"
    installed = download_dataset("291", root, sources=_dcscn_source(server.url("dcscn.tar.gz"), pins),
                                 downloads=downloads, log=lambda m: None)
    assert installed == [root / "T91", root / "BSD200"]
    assert _tree(root) == ["BSD200", "BSD200/HR", "BSD200/HR/100075.png", "T91", "T91/HR", "T91/HR/t1.bmp",
                           "T91/HR/tt27.bmp"]
    assert not (downloads / RECORD_FILE).exists()  # the files are pinned, not GitHub's generated archive bytes
    # other bytes under the same names: refused before anything is installed, and not kept for a retry
    server.files["dcscn.tar.gz"] = _dcscn_tar(bmp=b"BM changed")
    with pytest.raises(KdError, match="T91 files in .* are not the pinned ones"):
        download_dataset("T91", tmp_path / "other", sources=_dcscn_source(server.url("dcscn.tar.gz"), pins),
                         downloads=tmp_path / "dl2", log=lambda m: None)
    assert _tree(tmp_path / "other") == [] and _tree(tmp_path / "dl2") == []


def test_the_pinned_t91_and_bsd200_are_the_canonical_files(shared_data):
    """The built-in pins are the digests of the shared reference copies (byte-for-byte those of the DCSCN
    repository at the pinned commit), and the built-in rules map that repository's paths onto them."""
    import csv

    from kd.data.download import SOURCES, _target

    source = SOURCES["dcscn"]
    rules = [(re.compile(pattern), template) for pattern, template in source.archives[0].rules]
    for dataset, pinned in source.content_sha256:
        rows = list(csv.DictReader((shared_data / dataset / "manifest.csv").open()))
        lines = sorted(f"{row['file']}\t{row['sha256']}" for row in rows)
        assert hashlib.sha256("\n".join(lines).encode()).hexdigest() == pinned
        folder = {"T91": "yang91", "BSD200": "bsd200"}[dataset]
        for row in rows:
            member = f"dcscn-super-resolution-{'0' * 40}/data/{folder}/{row['file'].removeprefix('HR/')}"
            assert _target(member, rules) == f"{dataset}/{row['file']}"
