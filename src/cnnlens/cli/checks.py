"""Arguments checked before any work starts, so a typo costs a second, not a run.

Each check either returns the parsed value or calls :func:`cnnlens.cli.common.fail`
(``error: ...`` on stderr, exit status 2). Nothing here imports torch at module
level.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .common import fail

if TYPE_CHECKING:
    from ..models.base import LoadedModel


def parse_params(items: Sequence[str] | None, methods: Sequence[str] | None = None) -> dict:
    """``["rise.masks=1000", "occlusion.window=16"]`` -> ``{"rise": {"masks": 1000}, ...}``.

    Values are read as JSON when they parse (numbers, true/false, null, lists), else
    as text. Each method must exist (aliases resolve to the registered name) and,
    when ``methods`` is given, be one of them; each key must be one of the method's
    parameters; a number-valued parameter must get a number.
    """
    from ..core.errors import CnnlensError
    from ..methods import get_method

    chosen = None if methods is None else {get_method(m).name for m in methods}
    params: dict[str, dict] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        method, dot, name = key.strip().partition(".")
        name = name.strip()
        if not sep or not dot or not method or not name:
            fail(f"--param takes method.name=value, e.g. rise.masks=1000; got {item!r}")
        try:
            info = get_method(method.strip())
        except CnnlensError as e:
            fail(f"--param {item!r}: {e}")
        if chosen is not None and info.name not in chosen:
            fail(f"--param {item!r}: {info.name} is not among the methods to run")
        if name not in info.defaults:
            close = difflib.get_close_matches(name, list(info.defaults), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            known = ", ".join(info.defaults) or "none"
            fail(f"--param {item!r}: {info.name} has no parameter {name!r}{hint}; it takes {known}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw.strip()
        default = info.defaults[name]
        number = isinstance(default, (int, float)) and not isinstance(default, bool)
        if number and (isinstance(value, (str, bool)) or value is None):
            fail(f"--param {item!r}: {info.name}.{name} takes a number (default {default!r})")
        params.setdefault(info.name, {})[name] = value
    return params


def check_target(spec, loaded: LoadedModel) -> None:
    """Fail unless every class index of a parsed ``--target`` is one of the model's outputs."""
    if not isinstance(spec, list):
        return  # "topK" or None: always applicable
    n = len(loaded.class_names)
    bad = [c for row in spec for c in row if not 0 <= c < n]
    if bad:
        fail(
            f"--target {bad[0]} is not a class of {loaded.name}: it has {n} classes, "
            f"0 to {n - 1} (`cnnlens explain --target top5` takes the top five instead)"
        )


def check_layer(loaded: LoadedModel, layer: str | None) -> None:
    """Fail unless ``layer`` names a module of the model (the message lists close names)."""
    if not layer:
        return
    from ..core.errors import LayerError
    from ..core.names import resolve_layer

    try:
        resolve_layer(loaded.net, layer)
    except LayerError as e:
        fail(f"--layer: {e}")


def pick_model(positional: str | None, option: str | None, default: str) -> str:
    """The model of a command that takes it as an argument or as ``--model``."""
    if positional and option and positional != option:
        fail(f"two models given: {positional!r} and --model {option!r}; give one")
    return option or positional or default
