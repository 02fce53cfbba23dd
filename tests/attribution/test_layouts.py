"""Feature-map layouts: channels-last and token outputs read as (N, C, h, w), or refused.

Every layer-based CAM method runs on three versions of one tiny network, written
with channels-first convolutions (the reference), with ``nn.Linear`` on a
channels-last map, and with ``nn.Linear`` on a token sequence that starts with a
class token. The three compute the same function with the same weights, so the
maps at the corresponding layer must be equal; a layout read wrongly (height
taken as channels, the class token taken as a position) would not be.
"""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

import cnnlens as cl
from cnnlens.core import sites
from cnnlens.core.layers import default_layer
from cnnlens.core.layouts import Layout, fits, layout_of, token_grids
from cnnlens.core.sites import _formats
from layout_toys import Blind, C, ChannelsLast, Tokens, Twin, weights

METHODS = ["gradcam", "gradcampp", "layercam", "scorecam", "cam"]


def _x(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", [ChannelsLast, Tokens], ids=["nhwc", "tokens"])
def test_every_cam_method_reads_the_layout_like_the_nchw_reference(method, kind):
    w, x = weights(), _x()
    ref = cl.attribute(Twin(w), x, method, target=[[0, 2], [1, 0]], layer="proj")
    e = cl.attribute(kind(w), x, method, target=[[0, 2], [1, 0]], layer="proj")
    assert ref.maps.abs().amax() > 1e-3 and ref.maps[0, 0].std() > 1e-4  # real maps
    same(e.maps, ref.maps)
    want = {ChannelsLast: "NHWC (channels last)", Tokens: "tokens (1 prefix + 4x4 grid)"}[kind]
    assert e.extras["layer"] == "proj" and e.extras["layout"] == want
    assert ref.extras["layout"] == "NCHW"


def test_a_channels_last_layer_read_as_channels_first_would_differ():
    # The check above can fail: reading (N, 4, 4, 6) as NCHW gives another map.
    w, x = weights(), _x()
    ref = cl.attribute(Twin(w), x, "gradcam", target=0, layer="proj")
    wrong = cl.attribute(ChannelsLast(w), x, "gradcam", target=0, layer="proj", layout="nchw")
    assert (wrong.maps - ref.maps).abs().max() > 1e-2


def test_cam_follows_the_channels_last_and_token_trails_to_the_pooling():
    w, x = weights(), _x()
    nhwc = cl.attribute(ChannelsLast(w), x, "cam", target=1, layer="proj")
    tok = cl.attribute(Tokens(w), x, "cam", target=1, layer="proj")
    assert nhwc.extras["pooled"] == "proj -> gelu"
    assert tok.extras["pooled"] == "proj -> gelu -> __getitem__"
    with torch.no_grad():
        logits = Twin(w)(x)[:, 1]
    for e in (nhwc, tok):  # CAM's mean + bias is the logit
        same(e.maps[:, 0].mean((1, 2)) + w["fc_b"][1], logits)


def test_unknown_channel_position_is_refused_with_the_shape_and_the_fix():
    w, x = weights(), _x()
    with pytest.raises(cl.MethodError) as err:
        cl.attribute(Blind(w), x, "gradcam", target=0, layer="act")
    msg = str(err.value)
    assert "(N, 4, 4, 6) could be channels-first or channels-last" in msg
    assert "layout='nchw'|'nhwc'|'tokens'" in msg and "\n" not in msg
    e = cl.attribute(Blind(w), x, "gradcam", target=0, layer="act", layout="nhwc")
    same(e.maps, cl.attribute(Twin(w), x, "gradcam", target=0, layer="act").maps)


def test_reshape_callable_goes_for_activations_and_gradients():
    w, x = weights(), _x()
    ref = cl.attribute(Twin(w), x, "layercam", target=2, layer="proj")

    def to_nchw(t):
        return t.permute(0, 3, 1, 2)

    e = cl.attribute(ChannelsLast(w), x, "layercam", target=2, layer="proj", reshape=to_nchw)
    same(e.maps, ref.maps)
    assert e.extras["layout"] == "custom reshape"
    with pytest.raises(cl.MethodError, match=r"reshape= must return \(N, C, h, w\) for N=2"):
        cl.attribute(ChannelsLast(w), x, "gradcam", layer="proj", reshape=lambda t: t.flatten(2))


def test_tokens_without_a_known_prefix_are_refused_until_told():
    w, x = weights(), _x()
    net = Tokens(w, token_name="start")  # not a name the reader knows
    with pytest.raises(cl.MethodError, match=r"\(N, 17, 6\): 17 tokens \(0 special\) fill no"):
        cl.attribute(net, x, "gradcam", target=0, layer="proj")
    ref = cl.attribute(Twin(w), x, "gradcam", target=0, layer="proj").maps
    same(cl.attribute(net, x, "gradcam", target=0, layer="proj", prefix=1).maps, ref)
    same(cl.attribute(net, x, "gradcam", target=0, layer="proj", grid=[4, 4]).maps, ref)
    with pytest.raises(cl.MethodError, match="does not hold 2 prefix tokens"):
        cl.attribute(net, x, "gradcam", target=0, layer="proj", grid=(4, 4), prefix=2)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"layout": "nwhc"}, "layout must be one of nchw, nhwc, tokens"),
        ({"grid": (0, 4)}, "grid must be two positive integers"),
        ({"prefix": -1}, "prefix must be a non-negative integer"),
        ({"layout": "nhwc", "reshape": abs}, "reshape= takes a callable and excludes layout="),
        ({"layout": "nchw", "grid": (4, 4)}, "grid= and prefix= describe token layouts"),
    ],
)
def test_bad_overrides_are_refused_before_any_pass(bad, match):
    with pytest.raises(ValueError, match=match):
        cl.attribute(Twin(weights()), _x(), "gradcam", target=0, **bad)


class Attention(nn.Module):
    """Two heads of self-attention; ``q_norm`` sees (N, heads, tokens, head dim)."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(C, 3 * C)
        self.q_norm = nn.Identity()

    def forward(self, t):
        n, length, _ = t.shape
        q, k, v = self.qkv(t).reshape(n, length, 3, 2, C // 2).permute(2, 0, 3, 1, 4)
        a = (self.q_norm(q) @ k.transpose(-2, -1)).softmax(-1)
        return (a @ v).transpose(1, 2).reshape(n, length, C)


class ClassTokenNet(Tokens):
    """A ViT in small: norm1 -> attention (residual) -> mlp (residual) -> norm -> class token."""

    def __init__(self, w: dict):
        super().__init__(w)
        self.norm1 = nn.LayerNorm(C)
        self.attn = Attention()
        self.mlp = nn.Linear(C, C)
        self.norm = nn.LayerNorm(C)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(len(x), -1, -1), t], dim=1)
        t = t + self.attn(self.norm1(t))
        t = t + self.mlp(t)
        return self.fc(self.norm(t)[:, 0])


def test_default_layer_is_the_last_one_whose_patches_reach_a_class_token_head():
    # After the attention only the class token reaches the head: mlp's patch outputs
    # have zero gradient, so the default is norm1 (the last block's input to attention),
    # never a module inside the attention, nor the final norm.
    net = ClassTokenNet(weights())
    assert default_layer(net, (8, 8)) == "norm1"
    e = cl.attribute(net, _x(), "gradcam", target=0)
    assert e.extras == {"layer": "norm1", "layout": "tokens (1 prefix + 4x4 grid)"}
    assert e.maps.amax() > 0
    assert cl.attribute(net, _x(), "gradcam", target=0, layer="mlp").maps.abs().amax() == 0


def test_attention_internals_and_pooled_vectors_are_refused_with_names_that_work():
    net = ClassTokenNet(weights())
    with pytest.raises(cl.MethodError) as err:
        cl.attribute(net, _x(), "gradcam", target=0, layer="attn.q_norm")
    msg = str(err.value)
    assert "(N, 2, 17, 3) comes from inside attention module 'attn'" in msg
    assert "Layers that read as maps: norm1, mlp" in msg
    with pytest.raises(cl.MethodError, match=r"\(N, 3\) is a pooled vector with no spatial"):
        cl.attribute(net, _x(), "scorecam", target=0, layer="fc")


class Windows(nn.Module):
    """Splits a 4x4 token grid into four 2x2 windows, batch-first: (4N, 4, C)."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Identity()

    def forward(self, t):
        n = len(t)
        win = t.reshape(n, 2, 2, 2, 2, C).permute(0, 1, 3, 2, 4, 5).reshape(4 * n, 4, C)
        return self.inner(win).reshape(n, 2, 2, 2, 2, C).permute(0, 1, 3, 2, 4, 5).reshape(n, 16, C)


def test_outputs_that_fold_images_together_are_refused():
    net = ChannelsLast(weights())
    net.win = Windows()
    net.forward = lambda x: net.fc(net.win(net.embed(x).flatten(2).transpose(1, 2)).mean(1))
    with pytest.raises(cl.MethodError, match=r"\(N, 4, 6\) folds images together"):
        cl.attribute(net, _x(), "gradcam", target=0, layer="win.inner")
    assert cl.attribute(net, _x(), "gradcam", target=0, layer="win").extras["layout"] == (
        "tokens (0 prefix + 4x4 grid)"
    )


# ----------------------------------------------------------------------- the pieces


def test_layout_round_trips_by_hand():
    t = torch.arange(2 * 7 * 2.0).view(2, 7, 2)  # (N, 1 + 2x3, D=2)
    lay = Layout("tokens", (2, 3), 1)
    m = lay.to_spatial(t)
    assert m.shape == (2, 2, 2, 3)
    # token 1 + (row 1, col 2) = token 6 of image 0 holds values 12, 13
    assert m[0, :, 1, 2].tolist() == [12.0, 13.0] and m[0, 1, 0, 0].item() == 3.0
    assert torch.equal(lay.from_spatial(m, like=t), t)
    back = lay.from_spatial(m)
    assert torch.equal(back[:, 1:], t[:, 1:]) and back[:, 0].abs().sum() == 0
    nhwc = torch.arange(24.0).view(1, 2, 3, 4)
    assert Layout("nhwc").to_spatial(nhwc)[0, 3, 1, 2].item() == nhwc[0, 1, 2, 3].item()
    assert torch.equal(Layout("nhwc").from_spatial(Layout("nhwc").to_spatial(nhwc)), nhwc)
    with pytest.raises(cl.MethodError, match=r"\(N, 8, 2\) does not hold 1 prefix tokens"):
        lay.to_spatial(torch.zeros(1, 8, 2))


def test_grid_arithmetic():
    assert token_grids(196, (224, 224), (16, 16)) == [(14, 14)]
    assert token_grids(16, (224, 224), None) == [(4, 4)]  # LeViT's last stage
    assert token_grids(195, (224, 224), (16, 16)) == []
    assert token_grids(14 * 20, (224, 320), (16, 16)) == [(14, 20)]
    assert fits(7, 7, (224, 224)) and fits(8, 8, (299, 299))  # Inception's valid convs
    assert fits(7, 10, (224, 320)) and not fits(10, 7, (224, 320))
    assert not fits(7, 768, (224, 224))  # Swin's (N, 7, 7, 768) read channels-first
    assert not fits(4, 196, (224, 224))  # MobileViT's (N, C, pixels, patches)


def test_module_types_say_where_channels_are():
    from torchvision.ops.misc import Permute

    assert _formats(Permute([0, 2, 3, 1])) == ("nhwc", "nchw")
    assert _formats(Permute([0, 3, 1, 2])) == ("nchw", "nhwc")
    assert _formats(nn.Conv2d(3, 3, 1)) == ("nchw", "nchw")
    assert _formats(nn.LayerNorm(6)) == ("nhwc", "nhwc")
    assert _formats(nn.GELU()) == (None, None)

    class LayerNorm2d(nn.LayerNorm):  # timm's name for a channels-first layer norm
        pass

    assert _formats(LayerNorm2d(6)) == ("nchw", "nchw")
    hf = nn.Identity()
    hf.data_format = "channels_first"  # Hugging Face ConvNext's layer norm
    assert _formats(hf) == ("nchw", "nchw")


def test_layout_of_traces_once_per_model_and_size_and_forgets_freed_models():
    net = ChannelsLast(weights())
    calls = []
    handle = net.embed.register_forward_pre_hook(lambda m, a: calls.append(1))
    assert layout_of(net, "proj", (3, 8, 8)) == Layout("nhwc")
    assert layout_of(net, "act", (3, 8, 8)) == Layout("nhwc")  # GELU after the Linear
    assert layout_of(net, "embed", (3, 8, 8)) == Layout("nchw")
    assert len(calls) == 1
    layout_of(net, "proj", (3, 16, 16))
    assert len(calls) == 2
    handle.remove()
    del net
    gc.collect()
    assert not any(isinstance(k, ChannelsLast) for k in list(sites._SITES.keys()))
