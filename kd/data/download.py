"""`kdbench data download`: fetch, verify, safely extract and arrange public SR datasets.

Every archive is downloaded into `cache_dir()/downloads` through a `.part` file (resumed with an HTTP Range request),
verified before anything is extracted, checked member by member (absolute paths, `..`, links leaving the archive
and device files refuse the whole archive), extracted into a temporary folder inside the data root, arranged into
`<Name>/HR` + `<Name>/LR_bicubic/X<s>`, and moved into place only when complete.

Hashes: the dataset hosts publish none; the MD5 sums below are the ones public loaders (torchsr, catalyst, ...)
have verified these archives with for years. No SHA-256 could be established, so on the first download kdbench
records the archive's SHA-256 in `cache_dir()/downloads/recorded_sha256.json` (trust on first use), says so, and
checks later downloads against it. Tests inject their own `DownloadSource`s instead of patching these.

T91 and BSD200 have no official archive. They come from the repository of DCSCN (Yamanaka et al. 2017), which holds
the canonical Yang et al. T91 BMPs and the 200 BSDS300 training images uncropped, as GitHub's archive of one commit.
GitHub generates that archive on request, so its bytes (compression) may change while its files do not: the source
pins the extracted files instead (`DownloadSource.content_sha256`, the sha256 of every file, see `content_digest`),
checked before anything is installed, and records no archive hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from kd.data.io import IMAGE_SUFFIXES
from kd.data.registry import resolve_dataset
from kd.data.roots import cache_dir, resolve_data_root
from kd.errors import KdError
from kd.fileio import atomic_write_text, sha256_file

RECORD_FILE = "recorded_sha256.json"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    url: str
    filename: str
    rules: tuple[tuple[str, str], ...]  # (regex matching a member path, target path template using its groups)
    sha256: str | None = None
    md5: str | None = None


@dataclass(frozen=True)
class DownloadSource:
    name: str
    datasets: tuple[str, ...]  # dataset folders it installs under the data root
    archives: tuple[Archive, ...]
    note: str = ""
    # (dataset, `content_digest` of its files as installed): the files are pinned instead of the archives' bytes
    content_sha256: tuple[tuple[str, str], ...] = ()


def _div2k(split: str, hr_md5: str, lr_md5: Mapping[int, str]) -> DownloadSource:
    base = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
    name = f"DIV2K_{split}"
    hr_rule = ((rf"{name}_HR/(?P<stem>\d{{4}})\.png", f"{name}/HR/{{stem}}.png"),)
    lr_rule = (
        (rf"{name}_LR_bicubic/X(?P<s>\d)/(?P<stem>\d{{4}})x(?P=s)\.png", f"{name}/LR_bicubic/X{{s}}/{{stem}}.png"),
    )
    archives = [Archive(f"{base}{name}_HR.zip", f"{name}_HR.zip", hr_rule, md5=hr_md5)]
    archives += [
        Archive(f"{base}{name}_LR_bicubic_X{s}.zip", f"{name}_LR_bicubic_X{s}.zip", lr_rule, md5=md5)
        for s, md5 in lr_md5.items()
    ]
    return DownloadSource(f"div2k_{split}", (name,), tuple(archives), "ETH Zurich DIV2K (NTIRE 2017), HR + bicubic LR")


_BENCHMARK_SETS = "Set5|Set14|B100|Urban100"
# jiny2001/dcscn-super-resolution at this commit: data/yang91/*.bmp (T91) and data/bsd200/*.png (BSD200).
DCSCN_COMMIT = "d382bc30d41c94ac72f8cb148d61cc4864b3b380"

SOURCES: dict[str, DownloadSource] = {
    "div2k_train": _div2k(
        "train", "bdc2d9338d4e574fe81bf7d158758658",
        {
            2: "9a637d2ef4db0d0a81182be37fb00692",
            3: "ad80b9fe40c049a07a8a6c51bfab3b6d",
            4: "76c43ec4155851901ebbe8339846d93d",
        },
    ),
    "div2k_valid": _div2k(
        "valid", "9fcdda83005c5e5997799b69f955ff88",
        {
            2: "1512c9a3f7bde2a1a21a73044e46b9cb",
            3: "18b1d310f9f88c13618c287927b29898",
            4: "21962de700c8d368c6ff83314480eff0",
        },
    ),
    "benchmark": DownloadSource(
        "benchmark",
        ("Set5", "Set14", "B100", "Urban100"),
        (
            Archive(
                "https://cv.snu.ac.kr/research/EDSR/benchmark.tar",
                "benchmark.tar",
                (
                    (rf"benchmark/(?P<ds>{_BENCHMARK_SETS})/HR/(?P<stem>[^/]+)\.png", "{ds}/HR/{stem}.png"),
                    (
                        rf"benchmark/(?P<ds>{_BENCHMARK_SETS})/LR_bicubic/X(?P<s>\d)/(?P<stem>[^/]+)x(?P=s)\.png",
                        "{ds}/LR_bicubic/X{s}/{stem}.png",
                    ),
                ),
                md5="4ace41d33c2384b97e6b320cd0afd6ba",
            ),
        ),
        "the EDSR authors' benchmark.tar (SNU): Set5, Set14, B100, Urban100 with MATLAB bicubic LR x2/x3/x4",
    ),
    "flickr2k": DownloadSource(
        "flickr2k",
        ("Flickr2K",),
        (
            Archive(
                "https://cv.snu.ac.kr/research/EDSR/Flickr2K.tar",
                "Flickr2K.tar",
                (
                    (r"Flickr2K/Flickr2K_HR/(?P<stem>\d{6})\.png", "Flickr2K/HR/{stem}.png"),
                    (
                        r"Flickr2K/Flickr2K_LR_bicubic/X(?P<s>\d)/(?P<stem>\d{6})x(?P=s)\.png",
                        "Flickr2K/LR_bicubic/X{s}/{stem}.png",
                    ),
                ),
                md5="5d3f39443d5e9489bff8963f8f26cb03",
            ),
        ),
        "the EDSR authors' Flickr2K.tar (SNU), about 20 GB",
    ),
    "dcscn": DownloadSource(
        "dcscn",
        ("T91", "BSD200"),
        (
            Archive(
                f"https://github.com/jiny2001/dcscn-super-resolution/archive/{DCSCN_COMMIT}.tar.gz",
                f"dcscn-super-resolution-{DCSCN_COMMIT[:12]}.tar.gz",
                (
                    (r"[^/]+/data/yang91/(?P<stem>t{1,2}\d+)\.bmp", "T91/HR/{stem}.bmp"),
                    (r"[^/]+/data/bsd200/(?P<stem>\d+)\.png", "BSD200/HR/{stem}.png"),
                ),
            ),
        ),
        "T91 (91 BMPs) and BSD200 (the 200 BSDS300 training images) from the DCSCN repository on GitHub, about 100 MB",
        content_sha256=(
            ("T91", "ce76d5da4908276c91952e881b26f401203465aa30b6067c3ae11a143237034e"),
            ("BSD200", "56744d63de13916aa064c7a0b424085ece665df7eb80df94158f693fa4aae58d"),
        ),
    ),
}

MANUAL_INSTRUCTIONS = {
    "Manga109": "Manga109 is distributed on request only (http://www.manga109.org/en/download.html)",
}


def content_digest(folder: Path) -> str:
    """sha256 of the sorted lines `<path relative to folder>\t<sha256 of the file>` over every file in `folder`:
    what a dataset's files are, whatever archive carried them."""
    lines = sorted(f"{path.relative_to(folder).as_posix()}\t{sha256_file(path)}"
                   for path in folder.rglob("*") if path.is_file())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def download_dataset(
    name: str,
    data_root: Path | str | None = None,
    *,
    sources: Mapping[str, DownloadSource] | None = None,
    downloads: Path | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> list[Path]:
    """Download and install the source that provides dataset `name`; returns the dataset folders installed.

    All datasets of that source are installed (e.g. Set5 brings Set14, B100 and Urban100 from the same archive).
    Only missing files are added: a file already in place is kept (with `force`, a file of the archive is written
    again), and nothing else in the dataset folders is ever removed or replaced.
    `sources` replaces the built-in table (tests), `downloads` the archive folder (default `cache_dir()/downloads`).
    """
    log = log or (lambda message: print(message, file=sys.stderr))
    info = resolve_dataset(name)
    root = resolve_data_root(data_root)
    if info.embedded:
        raise KdError("the 'default' dataset is embedded in the installed scikit-image package: nothing to download")
    if info.download_source is None:
        folder = root / info.folder_names[0] / "HR"
        if info.parts:
            where = f"put {', '.join(info.parts)} under {root} (each as <Name>/HR/*)"
        else:
            where = f"put its HR images in {folder}/"
        raise KdError(f"{MANUAL_INSTRUCTIONS.get(info.name, f'{info.name} has no automatic download')}: {where}")
    table = SOURCES if sources is None else sources
    if info.download_source not in table:
        raise KdError(f"no download source '{info.download_source}' for dataset {info.name}")
    source = table[info.download_source]
    present = [ds for ds in source.datasets if (root / ds / "HR").is_dir()]
    if not force and len(present) == len(source.datasets):
        log(f"{', '.join(source.datasets)} already in {root} (use --force to download again)")
        return [root / ds for ds in source.datasets]

    folder = downloads or cache_dir() / "downloads"
    archives = [fetch_archive(archive, folder, log=log, progress=progress, record_first=not source.content_sha256)
                for archive in source.archives]
    created_root = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".kdbench-install-", dir=root))
    try:
        for archive, path in zip(source.archives, archives):
            log(f"extracting {path.name}")
            extract_archive(path, archive.rules, staging)
        for ds in source.datasets:
            hr = staging / ds / "HR"
            if not hr.is_dir() or not any(p.suffix.lower() in IMAGE_SUFFIXES for p in hr.iterdir()):
                raise KdError(f"the archives of source '{source.name}' hold no HR images for {ds}: unexpected layout")
        for ds, pinned in source.content_sha256:
            actual = content_digest(staging / ds)
            if actual != pinned:
                for path in archives:
                    path.unlink(missing_ok=True)  # the next attempt downloads it again
                raise KdError(f"the {ds} files in {', '.join(a.url for a in source.archives)} are not the pinned "
                              f"ones (content sha256 {actual[:12]}..., pinned {pinned[:12]}...); refusing them, "
                              "nothing was installed")
        added, kept = 0, 0
        for ds in source.datasets:
            new, old = _install_missing(staging / ds, root / ds, force)
            added, kept = added + new, kept + old
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created_root:
            _remove_if_empty(root)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    also = f"; kept {kept} files already there (--force writes the archive's files again)" if kept else ""
    log(f"installed {', '.join(source.datasets)} in {root}: {added} files added{also}")
    return [root / ds for ds in source.datasets]


def fetch_archive(
    archive: Archive,
    folder: Path,
    *,
    log: Callable[[str], None] | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
    record_first: bool = True,
) -> Path:
    """Download `archive` into `folder` (resuming a `.part` file) and verify it; returns the verified file.
    `record_first`: an archive without a published hash has its SHA-256 recorded on first download and checked
    later; off where the source pins the extracted files instead (`DownloadSource.content_sha256`)."""
    log = log or (lambda message: print(message, file=sys.stderr))
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / archive.filename
    if final.is_file():
        try:
            _verify(archive, final, folder, log, record_first)
            return final
        except KdError as exc:
            log(f"{final} failed verification ({exc}); downloading it again")
            final.unlink(missing_ok=True)
    part = final.with_name(final.name + ".part")
    _download(archive.url, part, progress)
    try:
        _verify(archive, part, folder, log, record_first)
    except KdError:
        part.unlink(missing_ok=True)  # a wrong file is not worth resuming
        raise
    os.replace(part, final)
    return final


def _download(url: str, part: Path, progress: Callable[[str, int, int | None], None] | None) -> None:
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "kdbench"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            return  # nothing left to fetch: the .part file is already complete (verification decides)
        raise KdError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise KdError(f"download of {url} failed: {exc}; check the network and retry (the download resumes)") from exc
    with response:
        resumed = offset and response.status == 206 and _content_range_start(response) == offset
        if not resumed:
            offset = 0  # the server ignored the Range request: start again
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        done = offset
        try:
            with open(part, "ab" if resumed else "wb") as handle:
                for block in iter(lambda: response.read(CHUNK), b""):
                    handle.write(block)
                    done += len(block)
                    if progress:
                        progress(part.name.removesuffix(".part"), done, total)
        except OSError as exc:
            raise KdError(
                f"download of {url} interrupted after {done} bytes: {exc}; run the command again to resume"
            ) from exc
    if total is not None and done != total:
        raise KdError(f"download of {url} incomplete ({done} of {total} bytes); run the command again to resume")


def _content_range_start(response) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _hashes(path: Path) -> tuple[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            sha256.update(block)
            md5.update(block)
    return sha256.hexdigest(), md5.hexdigest()


def _verify(archive: Archive, path: Path, folder: Path, log: Callable[[str], None], record_first: bool) -> None:
    sha256, md5 = _hashes(path)
    if archive.sha256 and sha256 != archive.sha256.lower():
        raise KdError(f"{archive.filename}: SHA-256 {sha256} does not match the pinned {archive.sha256}; refusing it")
    if archive.md5 and md5 != archive.md5.lower():
        raise KdError(f"{archive.filename}: MD5 {md5} does not match the published {archive.md5}; refusing it")
    if archive.sha256 or not record_first:
        return
    records_path = folder / RECORD_FILE
    records = _read_records(records_path)
    recorded = records.get(archive.url)
    if recorded is not None:
        if sha256 != recorded:
            raise KdError(
                f"{archive.filename}: SHA-256 {sha256} differs from the one recorded on first download ({recorded}, "
                f"in {records_path}); refusing it. Delete that entry only if you trust the new file"
            )
        return
    records[archive.url] = sha256
    atomic_write_text(records_path, json.dumps(records, indent=2, sort_keys=True))
    log(
        f"WARNING: no SHA-256 is published for {archive.filename}"
        + (" (its published MD5 matched)" if archive.md5 else "")
        + f". Recorded SHA-256 {sha256} in {records_path}; later downloads must match it."
    )


def _read_records(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise KdError(f"cannot read the recorded hashes in {path}: {exc}; fix or delete the file") from exc
    if not isinstance(data, dict):
        raise KdError(f"{path} is not a JSON object of url -> sha256; fix or delete the file")
    return {str(k): str(v) for k, v in data.items()}




# ---------------------------------------------------------------------------------------------- safe extraction


@dataclass(frozen=True)
class _Member:
    name: str  # normalised relative posix path
    kind: str  # "file", "dir", "symlink", "hardlink" or "special"
    link_target: str | None
    open: Callable[[], IO[bytes]] | None


def extract_archive(path: Path, rules: tuple[tuple[str, str], ...], destination: Path) -> list[Path]:
    """Check every member of a zip or tar archive, then write the regular files that match `rules` under
    `destination` at their rule's target path. Any unsafe member refuses the whole archive before anything is written.
    """
    compiled = [(re.compile(pattern), template) for pattern, template in rules]
    with _archive_members(path) as members:
        for member in members:
            _check_member(path, member)
        written = []
        for member in members:
            if member.kind != "file":
                continue
            target = _target(member.name, compiled)
            if target is None:
                continue
            out = destination / target
            out.parent.mkdir(parents=True, exist_ok=True)
            with member.open() as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
            written.append(out)
    return written


@contextlib.contextmanager
def _archive_members(path: Path) -> Iterator[list[_Member]]:
    try:
        handle = zipfile.ZipFile(path) if zipfile.is_zipfile(path) else tarfile.open(path, "r:*")
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        raise KdError(f"{path} is not a readable zip or tar archive: {exc}") from exc
    with handle:
        try:
            members = list(_zip_members(handle) if isinstance(handle, zipfile.ZipFile) else _tar_members(handle))
        except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
            raise KdError(f"{path} is a damaged archive: {exc}") from exc
        yield members


def _zip_members(archive: zipfile.ZipFile) -> Iterator[_Member]:
    for info in archive.infolist():
        file_type = stat.S_IFMT(info.external_attr >> 16)  # Unix type bits; 0 when the archiver left them out
        if info.is_dir():
            kind, target = "dir", None
        elif file_type == stat.S_IFLNK:
            kind, target = "symlink", archive.read(info).decode("utf-8", "replace")
        elif file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
            kind, target = "special", None
        else:
            kind, target = "file", None
        yield _Member(info.filename, kind, target, (lambda info=info: archive.open(info)))


def _tar_members(archive: tarfile.TarFile) -> Iterator[_Member]:
    for info in archive.getmembers():
        if info.isdir():
            kind, target = "dir", None
        elif info.issym():
            kind, target = "symlink", info.linkname
        elif info.islnk():
            kind, target = "hardlink", info.linkname  # a path from the archive root
        elif info.isfile():
            kind, target = "file", None
        else:
            kind, target = "special", None
        yield _Member(info.name, kind, target, (lambda info=info: archive.extractfile(info)))


def _normalise(name: str) -> str | None:
    """The member path relative to the archive root, or None if it is absolute or climbs out of it."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or "\\" in name:
        return None
    normal = posixpath.normpath(name)
    if normal == ".." or normal.startswith("../") or normal.startswith("/"):
        return None
    return normal.removeprefix("./")


def _check_member(path: Path, member: _Member) -> None:
    if _normalise(member.name) is None:
        raise KdError(f"{path}: refusing the archive, member '{member.name}' would be written outside the target")
    if member.kind == "special":
        raise KdError(f"{path}: refusing the archive, member '{member.name}' is a device, FIFO or other special file")
    if member.kind in ("symlink", "hardlink"):
        target = member.link_target or ""
        if member.kind == "hardlink":
            resolved = _normalise(target)
        elif target.startswith("/"):
            resolved = None
        else:
            resolved = _normalise(posixpath.join(posixpath.dirname(_normalise(member.name) or ""), target))
        if resolved is None:
            raise KdError(f"{path}: refusing the archive, link '{member.name}' points outside it ('{target}')")


def _target(name: str, rules: list[tuple[re.Pattern[str], str]]) -> str | None:
    normal = _normalise(name)
    for pattern, template in rules:
        match = pattern.fullmatch(normal or "")
        if match:
            target = template.format(**match.groupdict())
            if _normalise(target) != target:
                raise KdError(f"download rule maps '{name}' to unsafe path '{target}'")
            return target
    return None


def _install_missing(built: Path, target: Path, force: bool) -> tuple[int, int]:
    """Move each file of `built` to the same place under `target` unless one is there already (or `force`);
    returns (added, kept). Files under `target` that the archive does not hold are never touched."""
    added = kept = 0
    for path in sorted(p for p in built.rglob("*") if p.is_file()):
        destination = target / path.relative_to(built)
        if destination.exists() and not force:
            kept += 1
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, destination)
        added += 1
    return added, kept


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
