"""Shared timing helpers for the cnnlens benchmarks.

Protocol (the same for every script):

* Each contender is a zero-argument callable, optionally with an untimed
  ``setup`` / ``teardown`` (e.g. toggling ``requires_grad``) run around it.
* ``warmup`` untimed calls of every contender first (caches, allocator,
  oneDNN primitives for each batch shape), then ``repeats`` rounds.
* Within a round every contender runs once, in a fixed order (A B A B ...),
  so background load that comes and goes hits all contenders alike.
* Each call is timed with :func:`time.perf_counter`; we report the median
  (the headline number), the minimum and the spread of the repeats.
* ``torch.set_num_threads`` is left at PyTorch's default.

Run the scripts from the repository root; :func:`import_cnnlens` puts ``src``
on ``sys.path`` when cnnlens is not installed.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def import_cnnlens():
    """Import cnnlens, from ``src/`` when it is not installed."""
    try:
        import cnnlens  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT / "src"))
    import cnnlens

    return cnnlens


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def code_info() -> dict[str, Any]:
    """Which cnnlens was measured: git commit plus a hash of uncommitted changes under src/."""
    info: dict[str, Any] = {"git_head": None, "src_dirty": None, "src_diff_sha1": None}

    def git(*cmd: str) -> str:
        return subprocess.run(
            ["git", *cmd], cwd=REPO_ROOT, capture_output=True, text=True, timeout=20, check=True
        ).stdout

    try:
        info["git_head"] = git("rev-parse", "HEAD").strip() or None
    except Exception:
        pass
    try:
        diff = git("diff", "HEAD", "--", "src")
        untracked = git("ls-files", "--others", "--exclude-standard", "--", "src")
        info["src_dirty"] = bool(diff or untracked)
        if diff or untracked:
            h = hashlib.sha1(diff.encode())
            for rel in sorted(untracked.split()):
                h.update(rel.encode())
                h.update((REPO_ROOT / rel).read_bytes())
            info["src_diff_sha1"] = h.hexdigest()[:12]
    except Exception:
        pass
    return info


_TIMING_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "KMP_AFFINITY",
    "OMP_PROC_BIND",
    "THP_MEM_ALLOC_ENABLE",
    "LD_PRELOAD",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "ONEDNN_DEFAULT_FPMATH_MODE",
)


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, library versions and the current load."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.is_available(),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "libc": " ".join(platform.libc_ver()).strip() or None,
        "load_average_start": _load_average(),
        "code": code_info(),
        # settings that change CPU timings (threads, allocator, huge pages)
        "env": {k: os.environ[k] for k in _TIMING_ENV if k in os.environ},
    }
    for name in ("captum", "pytorch_grad_cam", "timm"):
        try:
            mod = __import__(name)
            info[name] = getattr(mod, "__version__", "unknown")
        except Exception:  # pragma: no cover - optional
            info[name] = None
    if info["pytorch_grad_cam"] == "unknown":
        try:
            from importlib.metadata import version

            info["pytorch_grad_cam"] = version("grad-cam")
        except Exception:
            pass
    return info


def print_machine(info: dict[str, Any]) -> None:
    print(
        f"machine: {info['cpu']} | {info['usable_cores']} usable / "
        f"{info['logical_cores']} logical cores"
        f" | torch {info['torch']} ({info['torch_threads']} threads) | python {info['python']}"
    )
    extra = ", ".join(
        f"{k} {info[k]}" for k in ("captum", "pytorch_grad_cam", "timm") if info.get(k)
    )
    print(f"libraries: {extra}")
    print(f"date: {info['date']} | load average at start: {info['load_average_start']}")
    code = info.get("code") or {}
    head = (code.get("git_head") or "no git")[:10]
    dirty = f" + uncommitted src changes {code['src_diff_sha1']}" if code.get("src_dirty") else ""
    print(f"code: cnnlens at {head}{dirty}")
    if info.get("env"):
        print("environment: " + ", ".join(f"{k}={v}" for k, v in info["env"].items()))


# --------------------------------------------------------------------------- timing


@dataclass
class Contender:
    """One thing to time. ``fn`` is timed; ``setup``/``teardown`` run untimed around it."""

    name: str
    fn: Callable[[], Any]
    setup: Callable[[], None] | None = None
    teardown: Callable[[], None] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def once(self) -> float:
        if self.setup is not None:
            self.setup()
        try:
            start = time.perf_counter()
            self.fn()
            return time.perf_counter() - start
        finally:
            if self.teardown is not None:
                self.teardown()


@dataclass
class Timing:
    name: str
    times: list[float]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def spread(self) -> float:
        """Relative spread of the repeats: (max - min) / median."""
        if len(self.times) < 2:
            return 0.0
        return (max(self.times) - min(self.times)) / self.median

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "median_s": self.median,
            "min_s": self.best,
            "spread": self.spread,
            "times_s": self.times,
            **({"meta": self.meta} if self.meta else {}),
        }


def run_interleaved(
    contenders: Sequence[Contender],
    *,
    warmup: int = 1,
    repeats: int = 5,
    verbose: bool = True,
) -> dict[str, Timing]:
    """Warm up every contender, then time ``repeats`` interleaved rounds (A B A B ...)."""
    for _ in range(warmup):
        for c in contenders:
            c.once()
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    for r in range(repeats):
        for c in contenders:
            times[c.name].append(c.once())
        if verbose:
            done = ", ".join(f"{c.name} {times[c.name][-1] * 1e3:.0f}" for c in contenders)
            print(f"  round {r + 1}/{repeats} (ms): {done}", flush=True)
    return {c.name: Timing(c.name, times[c.name], dict(c.meta)) for c in contenders}


def format_seconds(s: float) -> str:
    if s < 1.0:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def print_table(
    timings: dict[str, Timing] | Sequence[Timing],
    *,
    reference: str | None = None,
    title: str | None = None,
) -> None:
    """A small fixed-width table: median, min, spread and the ratio to ``reference``."""
    rows = list(timings.values()) if isinstance(timings, dict) else list(timings)
    ref = next((t for t in rows if t.name == reference), None)
    width = max(12, *(len(t.name) for t in rows))
    if title:
        print(f"\n{title}")
    head = f"{'contender':<{width}}  {'median':>10}  {'min':>10}  {'spread':>7}  {'n':>2}"
    if ref is not None:
        head += f"  {'x ' + reference:>{len(reference) + 8}}"
    print(head)
    print("-" * len(head))
    for t in rows:
        line = (
            f"{t.name:<{width}}  {format_seconds(t.median):>10}  {format_seconds(t.best):>10}"
            f"  {t.spread * 100:6.0f}%  {len(t.times):>2}"
        )
        if ref is not None:
            line += f"  {t.median / ref.median:>{len(reference) + 8}.3f}"
        print(line)


def ratio(timings: dict[str, Timing], num: str, den: str) -> float:
    """``median(num) / median(den)``."""
    return timings[num].median / timings[den].median


# --------------------------------------------------------------------------- CLI / output


def base_parser(description: str, *, warmup: int, repeats: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--warmup", type=int, default=warmup, help=f"untimed calls per contender (default {warmup})"
    )
    p.add_argument("--repeats", type=int, default=repeats, help=f"timed rounds (default {repeats})")
    p.add_argument("--image", default="chelsea", help="scikit-image sample (default chelsea)")
    p.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    return p


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    out = dict(payload)
    machine = dict(out.get("machine", {}))
    machine["load_average_end"] = _load_average()
    out["machine"] = machine
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Timing):
        return obj.as_dict()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def load_setup(image: str = "chelsea"):
    """The bundled model and one preprocessed sample image ``(1, 3, 224, 224)``."""
    cl = import_cnnlens()
    model = cl.load_model()
    imgs = cl.sample_images([image])
    x = model.preprocess(list(imgs.values()))
    return cl, model, x


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"
