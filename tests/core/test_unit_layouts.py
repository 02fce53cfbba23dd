"""Units of channels-last and token layers read like the channels-first reference.

Activation maps, stage lists, feature-visualisation objectives, the specificity
matrix, the dataset index and excitation backprop at a layer all read "channel ``c``
at position ``(y, x)``". On the three layouts of one network (``layout_toys``) they
must give the reference's numbers; reading ``(N, h, w, C)`` as channels-first, or
the class token as a position, would not.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import cnnlens as cl
from cnnlens import featurevis as fv
from cnnlens.analysis import build_index
from cnnlens.core.spatial import layer_view
from cnnlens.featurevis.activations import activation_maps
from cnnlens.featurevis.presets import stages
from cnnlens.models.base import LoadedModel, Preprocess
from layout_toys import Blind, C, ChannelsLast, PlainTokens, Tokens, Twin, weights

KINDS = [ChannelsLast, Tokens]
IDS = ["nhwc", "tokens"]


def _x(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _loaded(net: nn.Module) -> LoadedModel:
    prep = Preprocess(crop=8, resize=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return LoadedModel(net=net.eval(), preprocess_spec=prep, class_names=["a", "b", "c"])


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_activation_maps_of_every_layout_equal_the_reference(kind):
    w, x = weights(), _x(1)
    ref = activation_maps(Twin(w), x, "proj")
    got = activation_maps(kind(w), x, "proj")
    assert got.maps.shape == (C, 4, 4) and ref.maps.std() > 0.1
    torch.testing.assert_close(got.maps, ref.maps, atol=1e-5, rtol=1e-4)
    assert torch.equal(got.order, ref.order)


def test_a_wrong_reading_would_have_differed():
    # the check above can fail: (1, 4, 4, 6) taken as channels-first is another array
    w, x = weights(), _x(1)
    raw = ChannelsLast(w).proj(ChannelsLast(w).embed(x).permute(0, 2, 3, 1))
    assert raw[0].shape == (4, 4, C) and not torch.allclose(
        raw[0, :4, :4, :4], activation_maps(Twin(w), x, "proj").maps[:4]
    )


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_channel_objectives_and_channel_means_read_units_like_the_reference(kind):
    w, x = weights(), _x(3)
    objs = ["proj:2", fv.neuron("proj", 4, x=1, y=3), fv.channel("act", 5)]
    ref = fv.evaluate(Twin(w), objs, torch.sigmoid(x))
    got = fv.evaluate(kind(w), objs, torch.sigmoid(x))
    assert ref.abs().min() > 1e-4
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    means = fv.channel_means(kind(w), torch.sigmoid(x), "proj")
    torch.testing.assert_close(means, fv.channel_means(Twin(w), torch.sigmoid(x), "proj"))
    assert means.shape == (3, C)


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_a_dream_of_a_channel_is_the_reference_dream(kind):
    w = weights()
    kw = {"steps": 3, "size": 8, "seed": 0, "transforms": [], "param": "pixel"}
    ref = fv.render(Twin(w), ["proj:1"], **kw)
    got = fv.render(kind(w), ["proj:1"], **kw)
    assert ref.shape == (1, 3, 8, 8)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-3)
    assert stages(Twin(w), 8) == stages(kind(w), 8) == ["act"]


def test_neuron_positions_beyond_the_token_grid_are_refused():
    with pytest.raises(ValueError, match="position"):
        fv.evaluate(Tokens(weights()), [fv.neuron("proj", 0, x=4, y=0)], torch.rand(1, 3, 8, 8))


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_the_dataset_index_stores_the_reference_features_and_positions(kind, tmp_path):
    w = weights()
    g = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(g.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    idx = {}
    for name, net in (("ref", Twin(w)), ("got", kind(w))):
        idx[name] = build_index(
            _loaded(net), tmp_path, tmp_path / name / "index", layers=["proj"], dtype="float32"
        )
    assert idx["got"].layer_shape("proj") == (C, 4, 4)
    np.testing.assert_allclose(idx["got"].features("proj"), idx["ref"].features("proj"), atol=1e-5)
    ref_max, ref_arg = idx["ref"].max_activations("proj")
    got_max, got_arg = idx["got"].max_activations("proj")
    np.testing.assert_allclose(got_max, ref_max, atol=1e-5)
    np.testing.assert_array_equal(got_arg, ref_arg)  # row-major position on the 4x4 grid
    assert idx["got"].field_size("proj") == idx["ref"].field_size("proj") == (2, 2)


@pytest.mark.parametrize("method", ["excitation_backprop", "contrastive_excitation_backprop"])
@pytest.mark.parametrize("kind", [ChannelsLast, PlainTokens], ids=IDS)
def test_excitation_backprop_at_a_layer_sums_channels_where_they_are(kind, method):
    # (a learned class token is a parameter outside any linear layer: EB refuses Tokens)
    w, x = weights(), _x()
    ref = cl.attribute(Twin(w, nn.ReLU), x, method, target=[0, 2], layer="proj")
    got = cl.attribute(kind(w, act=nn.ReLU), x, method, target=[0, 2], layer="proj")
    assert ref.maps.std() > 1e-4
    torch.testing.assert_close(got.maps, ref.maps, atol=1e-5, rtol=1e-4)
    with pytest.raises(cl.MethodError, match="parameters of its own"):
        cl.attribute(Tokens(w, act=nn.ReLU), x, method, target=0, layer="proj")


def test_a_layer_that_is_no_map_is_refused_with_its_shape():
    with pytest.raises(cl.MethodError, match=r"\(N, 4, 4, 6\) could be channels-first or"):
        layer_view(Blind(weights()), "act", (3, 8, 8))
    with pytest.raises(cl.MethodError, match="cannot be read as a spatial feature map"):
        activation_maps(Blind(weights()), _x(1), "act")
    view = layer_view(
        Tokens(weights()), "fc", (3, 8, 8)
    )  # a pooled vector: C units of one position
    assert view(torch.zeros(2, 3)).shape == (2, 3, 1, 1)
