"""Atomic file writes: a result file is either complete or absent, never half written."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _sibling_temp(path: Path) -> tuple[int, Path]:
    """Create a new hidden file next to ``path``; return its descriptor and path.

    The file gets the usual permissions (0o666 minus the umask), unlike
    :mod:`tempfile`, which makes files readable by the owner only.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file next to {path}")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(handle)`` on a temporary sibling of ``path``, then rename it over ``path``.

    Args:
        path: destination file; its folder must exist.
        write: fills the binary handle.

    Returns:
        The destination path.
    """
    path = Path(path)
    fd, tmp = _sibling_temp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(data))


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Args:
        path: destination file; its folder must exist.
        text: the content.
    """
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented, strict JSON to ``path`` atomically.

    Args:
        path: destination file; its folder must exist.
        payload: a JSON-safe object (see :func:`cnnlens.report.serialize.json_safe`).
    """
    text = json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False)
    write_text_atomic(path, text + "\n")
