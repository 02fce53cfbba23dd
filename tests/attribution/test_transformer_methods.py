"""Attention rollout and Chefer et al.'s gradient-weighted relevance, against hand
computations on 2-block toy transformers (timm and torchvision), on real ViT/DeiT
architectures with random weights, and the model left as it came (fused-attention
flags, hooks, training flags), also when the forward pass raises."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer
from torch import nn

import cnnlens as cl
from cnnlens.attribution.attention import AttentionRecord, TokenLayout, checked, recorded_attention
from helpers import Trap, assert_unchanged, snapshot, tiny_cnn

TOY = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=5)


def _randomise(net: nn.Module, seed: int = 0, std: float = 0.5) -> nn.Module:
    """Every parameter drawn from N(0, std²): peaked attention and a non-zero head."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return net.eval()


def timm_toy(kind: str = "cls") -> nn.Module:
    if kind == "distilled":
        return _randomise(VisionTransformerDistilled(**TOY))
    if kind == "avg":
        return _randomise(VisionTransformer(**TOY, class_token=False, global_pool="avg"))
    return _randomise(VisionTransformer(**TOY))


def tv_toy() -> nn.Module:
    net = torchvision.models.VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        num_classes=5,
    )
    return _randomise(net)


class HFLogits(nn.Module):
    """A transformers classifier as ``(N, 3, H, W) -> logits`` (as cnnlens' HF loader does)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).logits


def hf_toy(kind: str = "vit") -> nn.Module:
    transformers = pytest.importorskip("transformers")
    small = dict(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=5,
    )
    if kind == "vit":
        model = transformers.ViTForImageClassification(transformers.ViTConfig(**small))
    elif kind == "deit":
        model = transformers.DeiTForImageClassification(transformers.DeiTConfig(**small))
    else:
        config = transformers.DeiTConfig(**small)
        model = transformers.DeiTForImageClassificationWithTeacher(config)
    return _randomise(HFLogits(model))


def _x(n: int = 2, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- by hand


def _attend(h, w, b, heads):
    """Self-attention written out: returns A (N, heads, T, T) and the head outputs."""
    n, t, e = h.shape
    q, k, v = (h @ w.T + b).split(e, dim=-1)
    q, k, v = (z.reshape(n, t, heads, e // heads).transpose(1, 2) for z in (q, k, v))
    a = torch.softmax(q @ k.transpose(-1, -2) / (e // heads) ** 0.5, dim=-1)
    return a, (a @ v).transpose(1, 2).reshape(n, t, e)


def _ln(t, norm):
    return F.layer_norm(t, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def timm_by_hand(net, x):
    """Logits, attention matrices, readout rows and prefix of a timm toy, computed directly."""
    n = x.shape[0]
    pe = net.patch_embed.proj
    t = F.conv2d(x, pe.weight, pe.bias, stride=8).flatten(2).transpose(1, 2)
    special = [tok for tok in (net.cls_token, getattr(net, "dist_token", None)) if tok is not None]
    t = torch.cat([s.expand(n, -1, -1) for s in special] + [t], dim=1) + net.pos_embed
    attns = []
    for blk in net.blocks:
        a, o = _attend(_ln(t, blk.norm1), blk.attn.qkv.weight, blk.attn.qkv.bias, 2)
        attns.append(a)
        t = t + o @ blk.attn.proj.weight.T + blk.attn.proj.bias
        t = t + blk.mlp(_ln(t, blk.norm2))
    if len(special) == 2:
        t = _ln(t, net.norm)
        logits = (net.head(t[:, 0]) + net.head_dist(t[:, 1])) / 2
        return logits, attns, [0, 1], 2
    if not special:
        logits = net.head(_ln(t.mean(dim=1), net.fc_norm))
        return logits, attns, list(range(16)), 0
    return net.head(_ln(t, net.norm)[:, 0]), attns, [0], 1


def tv_by_hand(net, x):
    n = x.shape[0]
    t = F.conv2d(x, net.conv_proj.weight, net.conv_proj.bias, stride=8).flatten(2).transpose(1, 2)
    t = torch.cat([net.class_token.expand(n, -1, -1), t], dim=1) + net.encoder.pos_embedding
    attns = []
    for blk in net.encoder.layers:
        mha = blk.self_attention
        a, o = _attend(_ln(t, blk.ln_1), mha.in_proj_weight, mha.in_proj_bias, 2)
        attns.append(a)
        t = t + o @ mha.out_proj.weight.T + mha.out_proj.bias
        t = t + blk.mlp(_ln(t, blk.ln_2))
    return net.heads(_ln(t, net.encoder.ln)[:, 0]), attns, [0], 1


def hf_by_hand(net, x):
    m = net.model
    base = m.vit if hasattr(m, "vit") else m.deit
    emb, n = base.embeddings, x.shape[0]
    pe = emb.patch_embeddings.projection
    t = F.conv2d(x, pe.weight, pe.bias, stride=8).flatten(2).transpose(1, 2)
    special = [emb.cls_token] + ([emb.distillation_token] if hasattr(m, "deit") else [])
    t = torch.cat([s.expand(n, -1, -1) for s in special] + [t], 1) + emb.position_embeddings
    attns = []
    for layer in base.layers:
        at = layer.attention
        w = torch.cat([at.q_proj.weight, at.k_proj.weight, at.v_proj.weight])
        b = torch.cat([at.q_proj.bias, at.k_proj.bias, at.v_proj.bias])
        a, o = _attend(_ln(t, layer.layernorm_before), w, b, 2)
        attns.append(a)
        t = t + o @ at.o_proj.weight.T + at.o_proj.bias
        t = t + layer.mlp(_ln(t, layer.layernorm_after))
    t = _ln(t, base.layernorm)
    if hasattr(m, "distillation_classifier"):
        logits = (m.cls_classifier(t[:, 0]) + m.distillation_classifier(t[:, 1])) / 2
        return logits, attns, [0, 1], 2
    return m.classifier(t[:, 0]), attns, [0], len(special)


def _fuse(a, how):
    return {"mean": a.mean(0), "max": a.max(0), "min": a.min(0)}[how]


def rollout_by_hand(attns, rows, prefix, image, how="mean", discard=0.0):
    """numpy float64: R = Â_2 Â_1 with Â = rownorm(0.5 fuse(A) + 0.5 I); readout over patches."""
    r = np.eye(attns[0].shape[-1])
    for a in attns:
        f = _fuse(a[image].detach().double().numpy(), how)
        k = int(discard * f.size)
        if k:
            flat = f.flatten()
            flat[np.argsort(flat)[:k]] = 0.0
            f = flat.reshape(f.shape)
        f = 0.5 * f + 0.5 * np.eye(len(f))
        r = (f / f.sum(axis=1, keepdims=True)) @ r
    return r[rows].mean(axis=0)[prefix:].reshape(4, 4)


def relevance_by_hand(attns, grads, rows, prefix, image):
    """numpy float64: R = I; R <- R + mean_h(max(G * A, 0)) R per block."""
    r = np.eye(attns[0].shape[-1])
    for a, g in zip(attns, grads):
        ga = g[image].detach().double().numpy() * a[image].detach().double().numpy()
        r = r + np.maximum(ga, 0).mean(axis=0) @ r
    return r[rows].mean(axis=0)[prefix:].reshape(4, 4)


def _up(grid):
    """The documented upsampling: bilinear, half-pixel centres, to 32 x 32."""
    g = torch.as_tensor(grid, dtype=torch.float64)[None, None]
    return F.interpolate(g, size=(32, 32), mode="bilinear", align_corners=False)[0, 0]


TOYS = {
    "timm": (timm_toy, timm_by_hand),
    "timm_avg_pool": (lambda: timm_toy("avg"), timm_by_hand),
    "timm_distilled": (lambda: timm_toy("distilled"), timm_by_hand),
    "torchvision": (tv_toy, tv_by_hand),
    "hf_vit": (hf_toy, hf_by_hand),
    "hf_deit": (lambda: hf_toy("deit"), hf_by_hand),
    "hf_deit_teacher": (lambda: hf_toy("deit_teacher"), hf_by_hand),
}


@pytest.mark.parametrize("toy", list(TOYS))
def test_by_hand_forward_is_the_model(toy):
    build, by_hand = TOYS[toy]
    net, x = build(), _x()
    with torch.no_grad():
        torch.testing.assert_close(by_hand(net, x)[0], net(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("toy", list(TOYS))
def test_rollout_equals_hand_computation(toy):
    build, by_hand = TOYS[toy]
    net, x = build(), _x()
    _, attns, rows, prefix = by_hand(net, x)
    e = cl.attribute(net, x, "attention_rollout", target=[[1, 3], [0, 4]])
    assert e.maps.shape == (2, 2, 32, 32) and e.targets.tolist() == [[1, 3], [0, 4]]
    for i in range(2):
        expected = _up(rollout_by_hand(attns, rows, prefix, i))
        for j in range(2):  # class-agnostic: the same map for every target
            torch.testing.assert_close(e.maps[i, j].double(), expected, atol=1e-6, rtol=1e-5)
    blocks = {
        "torchvision": "encoder.layers.encoder_layer_{}.self_attention",
        "hf_vit": "model.vit.layers.{}.attention",
    }.get(toy, "model.deit.layers.{}.attention" if toy.startswith("hf") else "blocks.{}.attn")
    assert e.extras["layers"] == [blocks.format(0), blocks.format(1)]


@pytest.mark.parametrize(("how", "discard"), [("max", 0.0), ("min", 0.0), ("mean", 0.6)])
def test_rollout_head_fusion_and_discard_equal_hand_computation(how, discard):
    net, x = timm_toy(), _x()
    _, attns, rows, prefix = timm_by_hand(net, x)
    e = cl.attribute(net, x, "attention_rollout", target=2, head_fusion=how, discard_ratio=discard)
    for i in range(2):
        expected = _up(rollout_by_hand(attns, rows, prefix, i, how, discard))
        torch.testing.assert_close(e.maps[i, 0].double(), expected, atol=1e-6, rtol=1e-5)
    plain = cl.attribute(net, x, "attention_rollout", target=2)
    assert not torch.allclose(plain.maps, e.maps), "the option must change the map"


@pytest.mark.parametrize("toy", list(TOYS))
def test_relevance_equals_hand_computation(toy):
    build, by_hand = TOYS[toy]
    net, x = build(), _x()
    targets = [[1, 3], [0, 4]]
    logits, attns, rows, prefix = by_hand(net, x)
    e = cl.attribute(net, x, "transformer_relevance", target=targets)
    assert e.maps.shape == (2, 2, 32, 32) and not e.signed
    for j in range(2):
        score = logits[[0, 1], [targets[0][j], targets[1][j]]].sum()
        grads = torch.autograd.grad(score, attns, retain_graph=True)
        for i in range(2):
            expected = _up(relevance_by_hand(attns, grads, rows, prefix, i))
            torch.testing.assert_close(e.maps[i, j].double(), expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(e.maps[:, 0], e.maps[:, 1]), "class-specific maps"


def test_relevance_of_the_probability_uses_its_gradient():
    net, x = timm_toy(), _x()
    logits, attns, rows, prefix = timm_by_hand(net, x)
    e = cl.attribute(net, x, "transformer_relevance", target=3, score="prob")
    grads = torch.autograd.grad(logits.softmax(dim=1)[:, 3].sum(), attns)
    for i in range(2):
        expected = _up(relevance_by_hand(attns, grads, rows, prefix, i))
        torch.testing.assert_close(e.maps[i, 0].double(), expected, atol=1e-6, rtol=1e-4)


# ----------------------------------------------------------------------------- the model afterwards


def _fused_flags(net):
    """timm's fused-attention flags and transformers' attention implementations."""
    flags = [m.fused_attn for m in net.modules() if hasattr(m, "fused_attn")]
    configs = [m.config for m in net.modules() if hasattr(m, "config")]
    return flags + [(c._attn_implementation, sorted(vars(c).items())) for c in configs]


def _attributes(net):
    return [sorted(vars(m)) for m in net.modules()]


def _odd_state(net):
    net.train()
    next(m for m in net.modules() if isinstance(m, nn.Linear)).eval()
    next(net.parameters()).requires_grad_(False)
    flags = [m for m in net.modules() if hasattr(m, "fused_attn")]
    if flags:
        flags[0].fused_attn = False  # a mix of fused and explicit modules must survive
    return net


def _trap_in_last_block(net) -> Trap:
    trap = Trap()
    if hasattr(net, "blocks"):
        net.blocks[-1].ls2 = trap
    elif hasattr(net, "encoder"):
        net.encoder.layers[-1].dropout = trap
    else:
        net.model.vit.layers[-1].dropout = trap
    return trap


@pytest.mark.parametrize("toy", ["timm", "torchvision", "hf_vit"])
@pytest.mark.parametrize("method", ["attention_rollout", "transformer_relevance"])
@pytest.mark.parametrize("where", ["off", "forward", "backward"])
def test_model_is_left_as_it_came(toy, method, where):
    net = _odd_state(TOYS[toy][0]())
    trap = _trap_in_last_block(net)
    before, fused, attrs = snapshot(net), _fused_flags(net), _attributes(net)
    trap.mode = where
    raises = where == "forward" or (where == "backward" and method == "transformer_relevance")
    if raises:
        with pytest.raises(RuntimeError, match="injected"):
            cl.attribute(net, _x(), method, target=1)
    else:
        e = cl.attribute(net, _x(), method, target=1)
        assert torch.isfinite(e.maps).all()
    assert_unchanged(before, net)
    assert _fused_flags(net) == fused
    assert _attributes(net) == attrs


def test_bad_target_is_refused_and_model_restored():
    net = timm_toy()
    before, fused = snapshot(net), _fused_flags(net)
    for method in ("attention_rollout", "transformer_relevance"):
        with pytest.raises(cl.TargetError):
            cl.attribute(net, _x(), method, target=7)
    assert_unchanged(before, net)
    assert _fused_flags(net) == fused


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("method", ["attention_rollout", "transformer_relevance"])
def test_a_cnn_is_refused_with_the_reason_and_alternatives(method):
    net = tiny_cnn()
    before = snapshot(net)
    with pytest.raises(cl.MethodError) as info:
        cl.attribute(net, _x(size=48), method, target=1)
    msg = str(info.value)
    assert "has no global self-attention" in msg and "use gradcam, occlusion or rise" in msg
    assert "\n" not in msg
    assert_unchanged(before, net)


def test_windowed_attention_is_refused_with_its_shape():
    record = AttentionRecord([("layers.0.attn", torch.rand(8, 2, 16, 16))], {"layers.0.attn": 1})
    layout = TokenLayout(prefix=1, grid=(4, 4), readout=(0,), source="timm")
    with pytest.raises(cl.MethodError, match=r"\(8, 2, 16, 16\), not \(N=2, heads, 17, 17\)"):
        checked(record, layout, n=2)


def test_attention_whose_weights_were_not_seen_is_refused():
    record = AttentionRecord([("a", torch.rand(2, 2, 17, 17))], {"a": 1, "b": 1})
    layout = TokenLayout(prefix=1, grid=(4, 4), readout=(0,), source="timm")
    with pytest.raises(cl.MethodError, match="'b' ran 1 time"):
        checked(record, layout, n=2)


class MaskedAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        mask = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)
        return self.mha(x, x, x, attn_mask=mask)[0]


def test_masked_multihead_attention_is_refused_not_misread():
    net = MaskedAttention().eval()
    before = snapshot(net)
    with pytest.raises(cl.MethodError, match="mask"), recorded_attention(net):
        net(torch.randn(1, 5, 8))
    assert_unchanged(before, net)


@pytest.mark.parametrize(
    ("params", "match"),
    [({"head_fusion": "median"}, "head_fusion"), ({"discard_ratio": 1.0}, "discard_ratio")],
)
def test_bad_rollout_options_are_refused(params, match):
    with pytest.raises(ValueError, match=match):
        cl.attribute(timm_toy(), _x(), "attention_rollout", target=1, **params)


def test_registry_describes_both_methods():
    infos = {m.name: m for m in cl.list_methods()}
    families = {infos[m].family for m in ("attention_rollout", "transformer_relevance")}
    assert families == {"transformer"}
    assert "class-agnostic" in infos["attention_rollout"].summary
    assert infos["attention_rollout"].defaults == {"head_fusion": "mean", "discard_ratio": 0.0}
    assert infos["transformer_relevance"].defaults == {"score": "logit"}


# ----------------------------------------------------------------------------- real architectures


def _random_head(net: nn.Module, seed: int = 0) -> nn.Module:
    """timm and torchvision zero-initialise ViT heads; give every head random weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in net.named_modules():
            if isinstance(m, nn.Linear) and name.split(".")[-1] in ("head", "head_dist"):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.5)
    return net


def _check_real(net: nn.Module, special: int):
    before, fused, attrs = snapshot(net), _fused_flags(net), _attributes(net)
    x = _x(1, 224)
    for method in ("attention_rollout", "transformer_relevance"):
        e = cl.attribute(net, x, method, target=[[1, 2]])
        m = e.maps
        assert m.shape == (1, 2, 224, 224) and torch.isfinite(m).all()
        for j in range(2):
            assert float(m[0, j].max() - m[0, j].min()) > 1e-3 * float(m[0, j].abs().max())
        assert e.extras["tokens"] == f"{special} special + 14x14 patch tokens"
        if method == "transformer_relevance":
            assert not torch.allclose(m[0, 0], m[0, 1])
        assert_unchanged(before, net)
        assert _fused_flags(net) == fused and _attributes(net) == attrs


@pytest.mark.parametrize(
    ("name", "special"),
    [
        ("vit_tiny_patch16_224", 1),
        ("deit_tiny_patch16_224", 1),
        ("deit_tiny_distilled_patch16_224", 2),
    ],
)
def test_timm_vit_and_deit(name, special):
    torch.manual_seed(0)
    net = _random_head(timm.create_model(name, pretrained=False, num_classes=10)).eval()
    assert all(_fused_flags(net)), "the fused path is what users run"
    _check_real(net, special)


@pytest.mark.slow
def test_torchvision_vit_b_16():
    torch.manual_seed(0)
    _check_real(_random_head(torchvision.models.vit_b_16(weights=None)).eval(), 1)
