"""Local encoder weights: read a file without running pickled code, and check its keys.

Formats, recognised by content (not only by name):

* TorchScript archive (``torch.jit.save``) → the module itself (``torch.jit.load``);
* ``.safetensors`` → a state dict (the ``safetensors`` library, no pickle at all);
* ``.pth`` / ``.bin`` / ``.pt`` → ``torch.load(weights_only=True)``: plain tensors and
  containers only; a pickle that would import or call code is refused.

A state dict may be wrapped (``{"state_dict": ...}``, ``{"model": ...}``) or carry a
``module.`` prefix (DataParallel); :func:`unwrap_state_dict` undoes both. :func:`match_state_dict`
compares it with what an architecture expects — names *and* shapes — before any weights are
copied, and its error names the missing, unexpected and mis-shaped keys.

:func:`resolve_weights` turns what the user gave into that file: a path, a folder of the local
Hugging Face cache, or ``hf:ORG/NAME`` (a model in that cache, found without network access);
the file is the one the encoder's spec names (docs/export.md).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hmil.errors import ConfigError

if TYPE_CHECKING:
    from hmil.slides.encoder_specs import EncoderSpec

#: containers checkpoints often wrap their state dict in
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module", "teacher")
#: keys listed per kind in an error message
_SHOWN_KEYS = 5


@dataclass(frozen=True)
class WeightsFile:
    """What a weights file holds.

    Attributes:
        path: the file.
        sha256: hex digest of the file's bytes (recorded with every bag).
        state_dict: name → tensor, for state-dict files (else None).
        module: the loaded TorchScript module (else None).
    """

    path: Path
    sha256: str
    state_dict: dict[str, torch.Tensor] | None = None
    module: torch.jit.ScriptModule | None = None

    @property
    def kind(self) -> str:
        return "torchscript" if self.module is not None else "state dict"


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_torchscript(path: Path) -> bool:
    """True for a ``torch.jit.save`` archive (a zip holding ``code/`` and ``constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _is_safetensors(path: Path) -> bool:
    """safetensors files start with an 8-byte little-endian header length, then ``{``."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    return path.suffix.lower() == ".safetensors" or (len(head) == 9 and head[8:9] == b"{")


def read_weights(path: str | Path, device: str | torch.device = "cpu") -> WeightsFile:
    """Load a weights file (see the module docstring for the formats).

    Raises:
        ConfigError: naming the file when it is missing, unreadable, a pickle that needs code,
            or holds something that is not a state dict.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(p, "weights file not found")
    digest = sha256_of(p)
    if is_torchscript(p):
        try:
            with warnings.catch_warnings():  # torch ≥ 2.13 flags TorchScript as deprecated
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(p), map_location=device).eval()
        except Exception as exc:  # torch raises RuntimeError/ValueError/... on broken archives
            raise ConfigError(p, f"broken TorchScript archive: {first_line(exc)}") from None
        return WeightsFile(p, digest, module=module)
    if _is_safetensors(p):
        obj: Any = _load_safetensors(p)
    else:
        obj = _torch_load(p)
    return WeightsFile(p, digest, state_dict=unwrap_state_dict(obj, p))


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:  # pragma: no cover - safetensors is a requirement
        raise ConfigError(path, "reading .safetensors needs `pip install safetensors`") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises SafetensorError (and OSError) on bad files
        raise ConfigError(path, f"not a readable safetensors file: {first_line(exc)}") from None


def _torch_load(path: Path) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) torch.save files cannot be memory-mapped
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(exc)
        if "global" not in reason.lower():  # garbage, not a refused import
            raise ConfigError(path, f"not a readable weights file{reason}") from None
        raise ConfigError(
            path,
            "refused: the file needs Python code to load; only plain tensors are read "
            f"(save the model's state_dict() instead){reason}",
        ) from None
    except Exception as exc:  # torch raises many types for files that are not torch archives
        raise ConfigError(path, f"not a readable weights file: {first_line(exc)}") from None


def _unpickler_reason(exc: BaseException) -> str:
    """torch's own reason (e.g. ``Unsupported global: GLOBAL builtins.print``), if it says one."""
    text = str(exc)
    if "WeightsUnpickler error:" not in text:
        return ""
    reason = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    reason = " ".join(reason.split()).split(". ", 1)[0][:160]  # not torch's "allow it" advice
    return f": {reason}" if reason else ""


def unwrap_state_dict(obj: Any, where: str | Path) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint, without a DataParallel ``module.`` prefix.

    Raises:
        ConfigError: ``obj`` is not (and does not wrap) a name → tensor dict.
    """
    if isinstance(obj, Mapping) and not _all_tensors(obj):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and _all_tensors(inner):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not _all_tensors(obj):
        kind = type(obj).__name__
        keys = f" (top-level keys: {_listed(obj.keys())})" if isinstance(obj, Mapping) else ""
        raise ConfigError(where, f"not a state dict of tensors, found a {kind}{keys}")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _all_tensors(obj: Mapping[Any, Any]) -> bool:
    return all(isinstance(v, torch.Tensor) for v in obj.values())


def match_state_dict(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    where: str | Path,
    encoder: str,
    ignore_prefixes: Iterable[str] = (),
    optional: Iterable[str] = (),
) -> dict[str, torch.Tensor]:
    """Check ``state`` against the ``expected`` key → shape table of an architecture.

    Args:
        state: the file's tensors.
        expected: every parameter and buffer the architecture needs, with its shape.
        where: the file (for messages).
        encoder: the encoder name (for messages).
        ignore_prefixes: keys of the file to drop silently (e.g. ResNet-50's ``layer4.``/
            ``fc.`` for the layer-3 trunk).
        optional: expected keys the file may lack (e.g. BatchNorm ``num_batches_tracked``).

    Returns:
        The subset of ``state`` the architecture uses.

    Raises:
        ConfigError: listing missing, unexpected and wrong-shaped keys.
    """
    prefixes = tuple(ignore_prefixes)
    kept = {k: v for k, v in state.items() if not k.startswith(prefixes)} if prefixes else state
    optional_keys = set(optional)
    missing = [k for k in expected if k not in kept and k not in optional_keys]
    unexpected = [k for k in kept if k not in expected]
    wrong = [
        f"{k} {tuple(kept[k].shape)} (expected {tuple(expected[k])})"
        for k in expected
        if k in kept and tuple(kept[k].shape) != tuple(expected[k])
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listed(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_listed(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} key(s) of the wrong shape: {_listed(wrong)}")
    if problems:
        raise ConfigError(where, f"not {encoder} weights: " + "; ".join(problems))
    return {k: kept[k] for k in expected if k in kept}


def _listed(items: Iterable[Any]) -> str:
    values = [str(v) for v in items]
    shown = ", ".join(values[:_SHOWN_KEYS])
    return shown + (f", … (+{len(values) - _SHOWN_KEYS})" if len(values) > _SHOWN_KEYS else "")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters)."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


#: a model in the local Hugging Face cache: ``hf:ORG/NAME`` or ``hf:ORG/NAME/FILE``
HF_PREFIX = "hf:"
#: files tried, in order, in a cached model when the encoder's spec names none
DEFAULT_WEIGHTS_FILES = (
    "model.safetensors", "pytorch_model.bin", "*.safetensors", "*.bin", "*.pth", "*.pt",
)  # fmt: skip
#: a weights file name (or glob) in an encoder spec's ``where`` text
_SPEC_FILE = re.compile(r"[\w.*-]+\.(?:safetensors|bin|pth|pt)\b")
#: the published repository at the start of a spec's ``where`` text (``MahmoodLab/UNI ...``)
_SPEC_REPO = re.compile(r"^([\w.-]+/[\w.-]+)\s")
#: a repository's folder in the cache (``models--ORG--NAME``)
_REPO_FOLDER = "models--"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub finds it (read when called):
    ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else
    ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def spec_files(spec: EncoderSpec | None) -> tuple[str, ...]:
    """The weights file names (globs) a spec names, else :data:`DEFAULT_WEIGHTS_FILES`."""
    named = tuple(dict.fromkeys(_SPEC_FILE.findall(spec.where))) if spec is not None else ()
    return named or DEFAULT_WEIGHTS_FILES


def spec_repo(spec: EncoderSpec | None) -> str | None:
    """The published repository (``ORG/NAME``) an encoder's spec names, if any."""
    match = _SPEC_REPO.match(spec.where) if spec is not None else None
    return match.group(1) if match else None


def resolve_weights(weights: str | Path, spec: EncoderSpec | None = None) -> Path:
    """The weights file meant by ``weights``, for the encoder of ``spec``.

    * ``hf:ORG/NAME`` → the spec's file (:func:`spec_files`) in the snapshot that
      ``refs/main`` of ``models--ORG--NAME`` points at in :func:`hf_cache_dir`;
      ``hf:ORG/NAME/FILE`` names the file. Nothing is downloaded.
    * a cache folder: a hub cache (the spec's repository in it), a ``models--ORG--NAME``
      folder, or a snapshot (any folder holding the file) → the spec's file in it.
    * anything else → itself (:func:`read_weights` reports a missing file).

    Raises:
        ConfigError: naming what was given and the folder where the file was expected.
    """
    text = str(weights)
    if text.startswith(HF_PREFIX):
        return _from_hub(text, text[len(HF_PREFIX) :], hf_cache_dir(), spec)
    path = Path(weights).expanduser()
    if not path.is_dir():
        return path
    if path.name.startswith(_REPO_FOLDER):
        repo = path.name[len(_REPO_FOLDER) :].replace("--", "/")
        return _from_hub(text, repo, path.parent, spec)
    if any(path.glob(f"{_REPO_FOLDER}*")):
        published = spec_repo(spec)
        if published is None:
            raise ConfigError(text, f"a Hugging Face cache; name the model as {HF_PREFIX}ORG/NAME")
        return _from_hub(text, published, path, spec)
    return _pick(path, spec_files(spec), text)


def _from_hub(where: str, name: str, cache: Path, spec: EncoderSpec | None) -> Path:
    """``ORG/NAME[/FILE]`` in the hub cache folder ``cache`` (local files only)."""
    parts = name.strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(where, f"expected {HF_PREFIX}ORG/NAME or {HF_PREFIX}ORG/NAME/FILE")
    repo, file = "/".join(parts[:2]), "/".join(parts[2:])
    folder = cache / f"{_REPO_FOLDER}{repo.replace('/', '--')}"
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError
    except ImportError:
        raise ConfigError(
            where,
            "reading the Hugging Face cache needs `pip install huggingface_hub` (or hmil's [hf] "
            "extra)",
        ) from None
    try:
        snapshot = Path(snapshot_download(repo, cache_dir=cache, local_files_only=True))
    except HFValidationError as exc:
        raise ConfigError(where, f"not a model name ({first_line(exc)})") from None
    except OSError:  # LocalEntryNotFoundError: no such folder, or no snapshot for refs/main
        raise ConfigError(
            where,
            f"not in the local Hugging Face cache (expected {folder}, with refs/main and its "
            f"snapshot); download it there once, e.g. `hf download {repo}`",
        ) from None
    return _pick(snapshot, (file,) if file else spec_files(spec), where)


def _pick(folder: Path, patterns: Sequence[str], where: str) -> Path:
    """The first pattern that matches exactly one file in ``folder``."""
    for pattern in patterns:
        found = sorted(p for p in folder.glob(pattern) if p.is_file())
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = _listed(p.name for p in found)
            raise ConfigError(where, f"{len(found)} files match {pattern} in {folder} ({names})")
    raise ConfigError(where, f"no weights file ({', '.join(patterns)}) in {folder}")
