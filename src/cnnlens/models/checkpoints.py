"""Reading weights files safely: what a file is, and whether it may be unpickled.

A file is first identified by its bytes, never by its name: a zip archive with
the ``data.pkl`` that ``torch.save`` writes, the older ``torch.save`` stream, a
TorchScript archive or a safetensors file. Anything else (random bytes, text,
an image renamed ``.pth``, a truncated download) is "not a PyTorch checkpoint"
and is never unpickled, trusted or not. Checkpoints load with
``torch.load(weights_only=True)``; when that refuses, the pickle is disassembled
(without running it) to tell Python objects, which need trust, from damage.
"""

from __future__ import annotations

import _compat_pickle
import io
import json
import pickletools
import re
import struct
import warnings
import zipfile
from itertools import islice
from pathlib import Path

import torch

from ..core.errors import CheckpointError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first thing the pre-zip torch.save writes
_TRUST = (
    "if you trust the file pass --trust-checkpoint (Python: trust_checkpoint=True), "
    "or better re-save it with torch.save(model.state_dict(), path)"
)
_SIGNATURES = (
    (b"\x89PNG", "it is a PNG image"),
    (b"\xff\xd8\xff", "it is a JPEG image"),
    (b"GIF8", "it is a GIF image"),
    (b"II*\x00", "it is a TIFF image"),
    (b"MM\x00*", "it is a TIFF image"),
    (b"\x93NUMPY", "it is a NumPy .npy array"),
    (b"\x89HDF", "it is an HDF5 file (Keras weights?)"),
    (b"\x1f\x8b", "it is gzip-compressed: decompress it first"),
    (b"version https://git-lfs", "it is a Git LFS pointer, not the file: run `git lfs pull`"),
)


class _NotCheckpoint(Exception):
    """The bytes are no format cnnlens reads; the message is the short reason."""


def read_checkpoint(path: Path, trust: bool):
    """The object stored in a weights file, read safely.

    safetensors files give their tensors. ``torch.save`` files load with
    ``weights_only=True``; only with ``trust`` are Python objects unpickled.

    Raises:
        CheckpointError: no such file; not a checkpoint at all (with the reason);
            a damaged one; or one holding Python objects without ``trust``.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        kind = _sniff(path)
    except _NotCheckpoint as e:
        safetensors = path.suffix.lower() == ".safetensors"
        what = "a safetensors file" if safetensors else "a PyTorch checkpoint"
        raise CheckpointError(
            f"{path} is not {what} ({e}); give a file written by torch.save or safetensors"
        ) from None
    if kind == "safetensors":
        return _read_safetensors(path)
    if kind == "torchscript" and not trust:
        raise CheckpointError(
            f"{path} is a TorchScript archive (torch.jit.save), loaded only when trusted: {_TRUST}"
        )
    if kind != "torchscript":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's note on pickle protocols
                return _torch_load(path, weights_only=True)
        except Exception as e:
            error = e
        damage, unsafe, protocol = _scan_pickle(path, kind)
        why = _weights_only_reason(error)
        if not damage and not unsafe and protocol <= 2:
            damage = why  # plain tensors torch still cannot read: the data is broken
        if damage:
            raise CheckpointError(
                f"{path} is a damaged PyTorch checkpoint ({damage}); download or save it again"
            )
        if not trust:
            if unsafe:
                shown = ", ".join(unsafe[:3]) + (", ..." if len(unsafe) > 3 else "")
                raise CheckpointError(
                    f"{path} holds pickled Python objects ({shown}), not just tensors; unpickling "
                    f"can run code, so cnnlens refuses it: {_TRUST}"
                )
            raise CheckpointError(
                f"{path}: torch.load(weights_only=True) cannot read pickle protocol {protocol} "
                f"and a full unpickle can run code: {_TRUST}"
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols, jit deprecation
            return _torch_load(path, weights_only=False)
    except Exception as e:
        raise CheckpointError(
            f"{path}: could not unpickle the checkpoint ({first_line(e)})"
        ) from None


def _torch_load(path: Path, weights_only: bool):
    # A file object, not the path: torch hands paths ending .safetensors to safetensors.
    with path.open("rb") as f:
        return torch.load(f, map_location="cpu", weights_only=weights_only)


def _sniff(path: Path) -> str:
    """``"zip"``, ``"legacy"``, ``"torchscript"`` or ``"safetensors"``, from the bytes."""
    with path.open("rb") as f:
        head = f.read(4096)
    if not head:
        raise _NotCheckpoint("the file is empty")
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            reason = "a truncated or damaged zip archive; an unfinished download?"
            raise _NotCheckpoint(reason) from None
        files = {n.split("/", 1)[-1] for n in names if n.count("/") <= 1}
        if "constants.pkl" in files and any("/code/" in n for n in names):
            return "torchscript"
        if "data.pkl" in files:
            return "zip"
        if names and all(n.endswith(".npy") for n in names):
            raise _NotCheckpoint("it is a NumPy .npz archive")
        raise _NotCheckpoint("a zip archive without the data.pkl that torch.save writes")
    named = path.suffix.lower() == ".safetensors"
    if len(head) > 8 and head[8:9] == b"{":
        if named or struct.unpack("<Q", head[:8])[0] < 100_000_000:
            return "safetensors"  # 8-byte header length (at most 100 MB), JSON
    if head[0] == 0x80 and 2 <= head[1] <= 5:
        if _first_pickle_is_magic(path):
            return "legacy"
        raise _NotCheckpoint("a plain Python pickle, not written by torch.save")
    for signature, reason in _SIGNATURES:
        if head.startswith(signature):
            raise _NotCheckpoint(reason)
    text = _as_text(head)
    if text is not None:
        if re.match(r"<(!doctype\s+)?html\b", text.lstrip()[:20], re.IGNORECASE):
            raise _NotCheckpoint("it is an HTML page; a failed download?")
        first = text.strip().splitlines()[0] if text.strip() else ""
        first = first if len(first) <= 40 else first[:37].rstrip() + "..."
        raise _NotCheckpoint(f"it is a text file starting {first!r}" if first else "it is blank")
    raise _NotCheckpoint("unknown bytes: neither a zip archive nor a pickle written by torch.save")


def _as_text(head: bytes) -> str | None:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        try:  # a multi-byte character cut at the end of the sample
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return None
    return text if all(c.isprintable() or c in "\t\n\r\f" for c in text) else None


def _first_pickle_is_magic(path: Path) -> bool:
    with path.open("rb") as f:
        try:
            return any(arg == _LEGACY_MAGIC for _, arg, _ in islice(pickletools.genops(f), 3))
        except Exception:
            return False


def _scan_pickle(path: Path, kind: str) -> tuple[str | None, list[str], int]:
    """``(damage, unsafe, protocol)``: why the pickle cannot be read (or None), the
    globals it names that ``weights_only`` refuses, in order, and its pickle protocol.
    Disassembles the pickle; runs none of it."""
    found: dict[str, None] = {}
    protocol = 0
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as z:
                entry = next(n for n in z.namelist() if n.split("/")[-1] == "data.pkl")
                protocol = _globals_in(pickletools.genops(io.BytesIO(z.read(entry))), found)
        else:  # magic number, protocol, system info, then the object
            with path.open("rb") as f:
                for _ in range(4):
                    protocol = max(protocol, _globals_in(pickletools.genops(f), found))
    except (zipfile.BadZipFile, OSError) as e:
        return f"its zip archive cannot be read: {first_line(e)}", [], protocol
    except Exception as e:
        return f"its pickle is cut short or corrupt: {first_line(e)}", [], protocol
    allowed = _allowed_globals()
    return None, [g for g in found if g not in allowed], protocol


def _weights_only_reason(error: BaseException) -> str:
    """The useful line of torch's several-paragraph weights_only message."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        rest = [line.strip() for line in text.split(marker, 1)[1].splitlines() if line.strip()]
        if rest:
            return first_line(Exception(rest[0]))
    return first_line(error)


def _allowed_globals() -> set[str]:
    try:
        from torch import _weights_only_unpickler as wo

        return set(wo._get_allowed_globals()) | set(wo._get_user_allowed_globals())
    except Exception:  # private API moved: name every global, allowed or not
        return set()


_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING"}
_STRINGS |= {"BINSTRING", "SHORT_BINSTRING"}


def _globals_in(ops, found: dict[str, None]) -> int:
    """Add to ``found`` the dotted names of the classes/functions one pickle refers
    to (GLOBAL and STACK_GLOBAL, Python 2 names mapped as pickle does); return
    the pickle's protocol."""
    memo: dict = {}
    pushed: list = []
    protocol = 0
    for op, arg, _ in ops:
        name = op.name
        if name == "PROTO":
            protocol = int(arg)
        elif name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            found[_modern(module, attr)] = None
        elif name == "STACK_GLOBAL":
            module, attr = pushed[-2:] if len(pushed) >= 2 else (None, None)
            found[_modern(module, attr) if module and attr else "an unknown global"] = None
        elif name in _STRINGS:
            pushed.append(str(arg))
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = pushed[-1] if pushed else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(arg))
        elif name not in ("FRAME", "STOP"):
            pushed.append(None)
    return protocol


def _modern(module: str, attr: str) -> str:
    """``module.attr`` with Python 2 names (``__builtin__.set``) as Python 3 reads them."""
    module, attr = _compat_pickle.NAME_MAPPING.get((module, attr), (module, attr))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{attr}"


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    size = path.stat().st_size
    with path.open("rb") as f:
        length = struct.unpack("<Q", f.read(8))[0]
        raw = f.read(length)
    if 8 + length > size:
        raise CheckpointError(
            f"{path} is a damaged safetensors file (its header says {length} bytes but the "
            f"file has {size}); download or save it again"
        )
    try:
        header = json.loads(raw)
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise CheckpointError(
            f"{path} is a damaged safetensors file (its header is not valid); "
            "download or save it again"
        ) from None
    need = 8 + length + max(ends, default=0)
    if need > size:
        raise CheckpointError(
            f"{path} is a damaged safetensors file (cut short: {size} of {need} bytes); "
            "download it again"
        )
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:
        raise CheckpointError(
            f"{path} is a damaged safetensors file ({first_line(e)}); download or save it again"
        ) from None


def first_line(e: BaseException) -> str:
    """An exception's first line, without colour codes, at most 100 characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line if len(line) <= 100 else line[:97] + "..."
