"""Model names: which library an architecture name means, and the `cnnlens models` listing.

A plain name both torchvision and timm have (``resnet50``, ``convnext_tiny``,
``efficientnet_b0``) means torchvision's; ``timm/NAME`` means timm's and
``torchvision/NAME`` torchvision's. A name with a timm pretrained tag
(``resnet50.a1_in1k``) means timm's architecture with that tag's weights and
preprocessing. ``hf:PATH`` (or a folder holding a ``config.json``) is a Hugging
Face ``transformers`` model saved there (:mod:`cnnlens.models.hf`).
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..core.errors import ModelError

BUNDLED = "efficientnet_lite0"
SOURCES = ("torchvision", "timm")
HF_PREFIX = "hf:"


def hf_target(name: str) -> str | None:
    """The local path a Hugging Face model name means, or None for other names:
    ``"hf:PATH"`` gives ``PATH``; a folder holding a ``config.json`` gives itself."""
    text = str(name)
    if text[: len(HF_PREFIX)].lower() == HF_PREFIX:
        return text[len(HF_PREFIX) :]
    path = Path(text).expanduser()
    return text if path.is_dir() and (path / "config.json").is_file() else None


@lru_cache(maxsize=1)
def torchvision_names() -> frozenset[str]:
    import torchvision

    return frozenset(torchvision.models.list_models(module=torchvision.models))


@lru_cache(maxsize=1)
def timm_names() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


@lru_cache(maxsize=1)
def timm_tagged() -> tuple[str, ...]:
    """Every timm ``arch.tag`` with pretrained weights, sorted."""
    import timm

    return tuple(sorted(timm.list_pretrained()))


def shared_names() -> frozenset[str]:
    """Architecture names both libraries have (a plain one loads torchvision's)."""
    return torchvision_names() & timm_names()


@dataclass(frozen=True)
class ModelName:
    """An architecture name resolved to its library.

    Attributes:
        source: ``"torchvision"`` or ``"timm"``.
        arch: the architecture, without a tag.
        tag: a timm pretrained tag (``"a1_in1k"``), or None.
    """

    source: str
    arch: str
    tag: str | None = None

    @property
    def library_name(self) -> str:
        """The name the library itself takes (timm: ``arch.tag``)."""
        return f"{self.arch}.{self.tag}" if self.tag else self.arch

    @property
    def canonical(self) -> str:
        """The shortest name ``resolve`` maps back to this model (``timm/`` only when needed)."""
        if self.source == "timm" and not self.tag and self.arch in torchvision_names():
            return f"timm/{self.arch}"
        return self.library_name

    @property
    def label(self) -> str:
        """For messages: ``"timm's resnet50"``."""
        return f"{self.source}'s {self.library_name}"


def resolve(name: str) -> ModelName:
    """Which library's architecture ``name`` means.

    Raises:
        ModelError: an unknown name (with close names), a torchvision name with a
            timm tag, or a tag timm does not have (with the tags it has).
    """
    prefix, sep, rest = name.partition("/")
    source = prefix.lower() if sep and prefix.lower() in SOURCES else None
    bare = rest if source else name
    arch, dot, tag = bare.partition(".")
    tag = tag if dot else None
    tv, tm = torchvision_names(), timm_names()
    if source == "torchvision":
        if tag is None and bare in tv:
            return ModelName("torchvision", bare)
        if tag is not None and arch in tv:
            raise ModelError(
                f"{name!r}: pretrained tags like {tag!r} are timm's; use timm/{bare} "
                f"(or torchvision/{arch} with --weights)"
            )
        also = f" timm has it: use timm/{bare}." if arch in tm else ""
        raise ModelError(f"torchvision has no model {bare!r}.{_hint(bare, tv)}{also}")
    if source == "timm" and arch not in tm:
        also = f" torchvision has it: use torchvision/{bare}." if bare in tv else ""
        raise ModelError(f"timm has no model {arch!r}.{_hint(arch, tm)}{also}")
    if source is None and tag is None and bare in tv:
        return ModelName("torchvision", bare)
    if source == "timm" or arch in tm:
        if tag is not None:
            _check_tag(arch, tag)
        return ModelName("timm", arch, tag)
    pool = tv | tm | set(timm_tagged()) if tag is not None else tv | tm
    raise ModelError(
        f"unknown model {name!r}.{_hint(name, pool)} Use {BUNDLED!r} (bundled), a torchvision "
        "or timm architecture name (`cnnlens models`), a checkpoint path, or hf:DIR (a "
        "Hugging Face model folder)."
    )


def _check_tag(arch: str, tag: str) -> None:
    tags = [t.split(".", 1)[1] for t in timm_tagged() if t.split(".", 1)[0] == arch]
    if tag in tags:
        return
    if not tags:
        raise ModelError(f"timm has no pretrained weights for {arch}; use {arch} with --weights")
    shown = ", ".join(tags[:6]) + (", ..." if len(tags) > 6 else "")
    raise ModelError(
        f"timm has no pretrained tag {tag!r} for {arch}; it has {shown} "
        f"(`cnnlens models '{arch}.*'`)"
    )


def _hint(name: str, pool) -> str:
    close = difflib.get_close_matches(name, sorted(pool), n=5, cutoff=0.6)
    return f" Did you mean {', '.join(close)}?" if close else ""


# --------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class ModelListing:
    """What `cnnlens models PATTERN` shows.

    Attributes:
        groups: ``(title, names)`` in order: bundled, torchvision, timm, timm
            pretrained tags. Every name is written the way it loads that model
            (timm's copies of shared names as ``timm/NAME``).
        notes: sentences about shared names and tags, to print after the groups.
    """

    groups: list[tuple[str, list[str]]]
    notes: list[str]


def describe_sources(pattern: str = "*") -> ModelListing:
    """The model names matching the shell-style ``pattern``, grouped by source.

    A name matches if either the bare name or the name as listed does, so
    ``'resnet50*'`` also lists ``timm/resnet50`` and the ``resnet50.*`` tags, and
    ``'timm/*'`` lists every timm name and tag.
    """

    def pick(names, shown=lambda n: n):
        return [shown(n) for n in sorted(names) if _matches(n, pattern, shown(n), f"timm/{n}")]

    shared = shared_names()
    groups = [
        ("bundled", [n for n in [BUNDLED] if _matches(n, pattern)]),
        ("torchvision", [n for n in sorted(torchvision_names()) if _matches(n, pattern)]),
        ("timm", pick(timm_names(), lambda n: f"timm/{n}" if n in shared else n)),
        ("timm pretrained tags", pick(timm_tagged())),
    ]
    hit = [n for n in sorted(shared) if _matches(n, pattern, f"timm/{n}")]
    notes = []
    if len(hit) == 1:
        notes.append(
            f"{hit[0]} is in both torchvision and timm: the plain name loads torchvision's; "
            f"write timm/{hit[0]} for timm's (torchvision/{hit[0]} also works)."
        )
    elif hit:
        examples = ", ".join(hit[:3]) + (", ..." if len(hit) > 3 else "")
        notes.append(
            f"{len(hit)} of these names are in both torchvision and timm ({examples}): "
            "a plain name loads torchvision's; write timm/NAME for timm's "
            "(torchvision/NAME also works)."
        )
    if groups[3][1]:
        notes.append(
            f"A timm name with a pretrained tag ({groups[3][1][0]}) loads timm's architecture "
            "with that tag's preprocessing and class count; --weights default downloads its "
            "weights, --weights none leaves them random."
        )
    return ModelListing(groups=groups, notes=notes)


def _matches(name: str, pattern: str, *aliases: str) -> bool:
    return any(fnmatch.fnmatchcase(n, pattern) for n in (name, *aliases))
