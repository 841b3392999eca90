"""What determines a run's result besides its configuration: the teacher's weights, the images, the method's code.

The run id hashes these inputs together with the configuration, so retraining a teacher in place, pointing
`--data-root` at other images or changing a method's code gives a new run instead of "already finished" with the
old numbers. Data fingerprints hash a manifest of (file name, size, sha256 of the content); the per-file hashes are
cached under `<cache>/fingerprints/` (see `_HashCache`), so only changed files are re-read. A blind-SR run
(`data.degradation`) adds its protocol's fingerprint, which with the HR manifests fixes its degraded images.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

from torch import nn

from kd.config import RunConfig
from kd.data.files import DatasetFiles, dataset_files
from kd.data.io import IMAGE_SUFFIXES
from kd.data.roots import cache_dir
from kd.errors import KdError
from kd.fileio import atomic_write_text, sha256_file


# A file whose status changed this shortly before it was hashed may have changed again within the same timestamp tick
# (file systems stamp times coarsely): its cached hash is not trusted (as git treats "racily clean" entries).
RACY_SECONDS = 2.0


class _HashCache:
    """sha256 of files, remembered with their (size, mtime, ctime, inode); a damaged or read-only cache only costs
    re-hashing.

    mtime alone cannot be trusted: `cp -p`, `rsync -t` and `tar x` write new content under the old mtime. The
    ctime cannot be set by a user: any write (or rename onto the path) moves it, so an entry is used only while the
    file's ctime and inode are those it was hashed with, and only when it was hashed well after its last change."""

    def __init__(self) -> None:
        self.path = cache_dir() / "fingerprints" / "files.json"
        try:
            self.entries: dict[str, list[Any]] = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(self.entries, dict):
                self.entries = {}
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.resolve())
        status = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
        known = self.entries.get(key)
        if (isinstance(known, list) and len(known) == 6 and known[:4] == status
                and known[5] - stat.st_ctime_ns > RACY_SECONDS * 1e9):
            return str(known[4])
        hashed_at = time.time_ns()
        digest = sha256_file(path)
        self.entries[key] = [*status, digest, hashed_at]
        self.changed = True
        return digest

    def save(self) -> None:
        if self.changed:
            try:
                atomic_write_text(self.path, json.dumps(self.entries, sort_keys=True))
            except OSError:
                pass  # a cache, not a result


def _dataset_manifest(files: DatasetFiles, scale: int, hashes: _HashCache) -> list[str]:
    paths = list(files.hr)
    if files.directory is not None:
        lr = files.directory / "LR_bicubic" / f"X{scale}"
        if lr.is_dir():
            paths += sorted(p for p in lr.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    base = files.directory or (paths[0].parent if paths else Path("."))
    return [f"{p.relative_to(base) if p.is_relative_to(base) else p.name}\t{p.stat().st_size}\t{hashes.sha256(p)}"
            for p in paths]


def _wanted_datasets(config: RunConfig) -> list[tuple[str, str]]:
    """(purpose, name) of every dataset a run reads: its training data, test sets and validation set."""
    wanted = [("train", config.data.train)]
    return wanted + [("eval", name) for name in dict.fromkeys([*config.eval.datasets, config.eval.val_dataset])
                     if name]


def check_datasets(config: RunConfig) -> None:
    """Every dataset the run reads is there; the first missing one raises `KdError` saying how to get it. Nothing
    is hashed: a missing dataset fails before a teacher is trained or a folder is written."""
    for purpose, name in _wanted_datasets(config):
        dataset_files(name, config.data.root, purpose)


def data_fingerprint(config: RunConfig, strict: bool = True) -> dict[str, dict[str, Any]]:
    """Per dataset and purpose: image count and the sha256 of its manifest. A dataset that is not there raises
    `KdError` (saying how to get it) when `strict`, else its manifest is None (data that comes from elsewhere)."""
    hashes = _HashCache()
    result: dict[str, dict[str, Any]] = {}
    try:
        for purpose, name in _wanted_datasets(config):
            try:
                parts = dataset_files(name, config.data.root, purpose)
            except KdError:
                if strict:
                    raise
                result[f"{purpose}:{name}"] = {"images": 0, "manifest_sha256": None}
                continue
            for files in parts:
                lines = _dataset_manifest(files, config.scale, hashes)
                digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
                result[f"{purpose}:{files.name}"] = {"images": len(files.hr), "manifest_sha256": digest}
    finally:
        hashes.save()
    return result


def class_label(obj: object) -> str:
    """An object's class name, made safe for a run id."""
    return re.sub(r"[^\w.]+", "_", type(obj).__name__)


def network_label(module: nn.Module) -> str:
    """`<Class>@<8 hex>`: a network given as an object, named by its class and the sha256 of its weights."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return f"{class_label(module)}@{digest.hexdigest()[:8]}"


def teacher_identity(config: RunConfig, given: nn.Module | None = None,
                     strict: bool = True) -> dict[str, Any] | None:
    """The teacher's source and the sha256 of its weights file (None while a zoo teacher or an assistant is not
    trained yet). A teacher `given` as an object (`kd.distill`) is identified by its `network_label`; a teacher
    assistant by its run (`kd.engine.assistants`)."""
    from kd.engine.assistants import assistant_config, assistant_identity
    from kd.engine.teachers import zoo_dir, zoo_key
    from kd.methods import get_method

    if not get_method(config.method.name).needs_teacher:
        return None
    if given is not None:
        return {"source": "object", "label": network_label(given)}
    stage = assistant_config(config)
    if stage is not None:
        return assistant_identity(stage, strict)
    if config.teacher.ckpt:
        from kd.models.sources import network_source

        path = Path(config.teacher.ckpt)
        code = network_source(config.teacher.arch)
        return {"source": "checkpoint", "sha256": sha256_file(path) if path.is_file() else None,
                **({"network": code} if code else {})}
    weights = zoo_dir(config) / "teacher.pt"
    return {"source": "zoo", "key": zoo_key(config), "sha256": sha256_file(weights) if weights.is_file() else None}


def student_identity(config: RunConfig, given: nn.Module | None = None) -> dict[str, Any] | None:
    """What the student is beyond its configuration, or None for the student `kdbench run` builds from the run seed
    out of a network and preset as recorded (`kd.models.sources`, `kd.models.preset_identity`): a network `given`
    as an object under a registry name (`kd.distill`; an unregistered one is named by its label in `student.arch`
    already), the network's code and the hash of its preset's fields where they are not as recorded, and the sha256
    of the `student.init` weights (None while missing)."""
    from kd.models.preset_identity import unpinned_fields
    from kd.models.sources import network_source

    start: dict[str, Any] = {}
    label = network_label(given) if given is not None else None
    if label is not None and label != config.student.arch:
        start.update(source="object", label=label)
    if given is None:
        fields, code = unpinned_fields(config.student.arch, config.student.preset), network_source(config.student.arch)
        if fields:
            start["fields_sha256"] = fields
        if code:
            start["network"] = code
    if config.student.init:
        path = Path(config.student.init)
        start["init_sha256"] = sha256_file(path) if path.is_file() else None
    return start or None


def run_inputs(config: RunConfig, strict: bool = True, *, student: nn.Module | None = None,
               teacher: nn.Module | None = None) -> dict[str, Any]:
    """Everything outside the configuration that the run's result depends on (hashed into the run id); `strict`:
    a missing dataset is an error (see `data_fingerprint`); `student`, `teacher`: networks given as objects.

    The method's code enters only where its version does not vouch for it (`kd.methods.sources`): a built-in
    method as recorded in the manifest keeps the ids its runs always had. A student entry is added only where
    the student is not the one `kdbench run` builds, so the ids of such runs stay as they were."""
    from kd.methods import get_method
    from kd.methods.sources import source_identity

    method = get_method(config.method.name)
    inputs = {
        "method_version": getattr(method, "version", 1),
        "teacher": teacher_identity(config, teacher, strict),
        "data": data_fingerprint(config, strict),
    }
    start = student_identity(config, student)
    if start is not None:
        inputs["student"] = start
    source = source_identity(method)
    if source is not None:
        inputs["method_source"] = source
    if config.data.degradation != "bicubic":
        inputs["degradation"] = degradation_identity(config.data.degradation)
    return inputs


def degradation_identity(name: str) -> dict[str, str]:
    """A blind-SR protocol's fingerprint: its training draws, test kernels and generator version. With the HR files'
    manifests (`data_fingerprint`) it fixes every degraded image, the cached test LR images included."""
    from kd.data.degradations import protocol

    return {"name": name, "protocol_sha256": protocol(name).fingerprint()[:16]}
