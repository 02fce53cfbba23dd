"""Finding a module inside a model by its dotted name, with close names suggested."""

from __future__ import annotations

import difflib

from torch import nn

from .errors import LayerError


def resolve_layer(net: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Return ``(dotted_name, module)`` for a name or a module inside ``net``.

    Raises:
        LayerError: the name is not in the model; the message lists the closest names.
    """
    if isinstance(layer, nn.Module):
        for name, module in net.named_modules():
            if module is layer:
                return name, module
        raise LayerError(f"module {type(layer).__name__} is not part of this model")
    modules = dict(net.named_modules())
    if layer in modules and layer != "":
        return layer, modules[layer]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(layer, names, n=5, cutoff=0.4)
    if not close:
        close = [n for n in names if n.startswith(layer.split(".")[0])][:5]
    hint = f" Closest names: {', '.join(close)}." if close else ""
    raise LayerError(
        f"no layer named {layer!r} in {type(net).__name__}.{hint} "
        "List all with `cnnlens layers MODEL` or cl.layers(model)."
    )
