"""Tests of cnnlens.models.checkpoints: a file that is not a checkpoint is called
that (and never unpickled), a damaged one is called damaged, and only a real
checkpoint holding Python objects gets the --trust-checkpoint advice.

Every file is written to ``tmp_path``; nothing is downloaded.
"""

from __future__ import annotations

import gzip
import io
import pathlib
import pickle
import struct
import warnings
import zipfile

import numpy as np
import pytest
import safetensors.torch
import torch
import torchvision
from PIL import Image
from torch import nn

import cnnlens as cl
from cnnlens.models.checkpoints import read_checkpoint

NOT_CKPT = (
    "{path} is not a PyTorch checkpoint ({reason}); "
    "give a file written by torch.save or safetensors"
)
UNKNOWN = "unknown bytes: neither a zip archive nor a pickle written by torch.save"
CUT_ZIP = "a truncated or damaged zip archive; an unfinished download?"
PLAIN = "a plain Python pickle, not written by torch.save"
TRUST = (
    "if you trust the file pass --trust-checkpoint (Python: trust_checkpoint=True), "
    "or better re-save it with torch.save(model.state_dict(), path)"
)


class _TouchOnUnpickle:
    """Unpickling this object creates ``marker``: a stand-in for malicious code."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = torchvision.models.resnet18(weights=None, num_classes=4)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def _message(path, trust: bool = False) -> str:
    with pytest.raises(cl.CheckpointError) as info:
        read_checkpoint(path, trust)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------- not checkpoints


def _random_bytes(path):
    # Seeded, and the first byte fixed so no signature can match by chance.
    data = np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    path.write_bytes(b"\x07" + data)


def _png(path):
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path, format="PNG")


def _jpeg(path):
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path, format="JPEG")


def _truncated_zip(path):
    buf = io.BytesIO()
    torch.save(_state(), buf)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def _zip_without_data_pkl(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes/readme.txt", "hello")


def _npz(path):
    with path.open("wb") as f:
        np.savez(f, a=np.zeros(3))


def _npy(path):
    with path.open("wb") as f:
        np.save(f, np.zeros(3))


def _plain_pickle(path):
    path.write_bytes(pickle.dumps({"conv1.weight": torch.zeros(2)}, protocol=2))


def _gzip(path):
    buf = io.BytesIO()
    torch.save(_state(), buf)
    path.write_bytes(gzip.compress(buf.getvalue()))


NOT_CHECKPOINTS = {
    "random": (_random_bytes, UNKNOWN),
    "text": (
        lambda p: p.write_text("epoch 3: loss 0.25, accuracy 0.91 on the validation set\n"),
        "it is a text file starting 'epoch 3: loss 0.25, accuracy 0.91 on...'",
    ),
    "empty": (lambda p: p.write_bytes(b""), "the file is empty"),
    "truncated_zip": (_truncated_zip, CUT_ZIP),
    "png": (_png, "it is a PNG image"),
    "jpeg": (_jpeg, "it is a JPEG image"),
    "zip": (_zip_without_data_pkl, "a zip archive without the data.pkl that torch.save writes"),
    "npz": (_npz, "it is a NumPy .npz archive"),
    "npy": (_npy, "it is a NumPy .npy array"),
    "pickle": (_plain_pickle, PLAIN),
    "gzip": (_gzip, "it is gzip-compressed: decompress it first"),
    "html": (
        lambda p: p.write_text("<!DOCTYPE html>\n<html><body>404</body></html>"),
        "it is an HTML page; a failed download?",
    ),
    "lfs": (
        lambda p: p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\n"),
        "it is a Git LFS pointer, not the file: run `git lfs pull`",
    ),
}


@pytest.mark.parametrize("kind", sorted(NOT_CHECKPOINTS))
@pytest.mark.parametrize("trust", [False, True], ids=["untrusted", "trusted"])
def test_files_that_are_not_checkpoints_say_so(tmp_path, kind, trust):
    write, reason = NOT_CHECKPOINTS[kind]
    path = tmp_path / f"{kind}.pth"
    write(path)
    want = NOT_CKPT.format(path=path, reason=reason)
    assert _message(path, trust) == want
    # The same one line through load_model, as weights and as a model file.
    for call in (
        lambda: cl.load_model("resnet18", weights=path, trust_checkpoint=trust),
        lambda: cl.load_model(str(path), trust_checkpoint=trust),
    ):
        with pytest.raises(cl.CheckpointError) as info:
            call()
        assert str(info.value) == want
        assert "trust" not in str(info.value)


def test_plain_pickle_is_never_unpickled_even_when_trusted(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"payload": _TouchOnUnpickle(marker)}, protocol=2))
    msg = _message(path, trust=True)
    assert msg == NOT_CKPT.format(path=path, reason=PLAIN)
    assert not marker.exists()


def test_content_decides_not_the_suffix(tmp_path):
    state = _state(1)
    as_st = tmp_path / "really_safetensors.pth"
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, as_st)
    assert _same(read_checkpoint(as_st, False), state)
    as_torch = tmp_path / "really_torch.safetensors"
    torch.save(state, as_torch)
    assert _same(read_checkpoint(as_torch, False), state)


def test_legacy_torch_save_format_loads(tmp_path):
    state = _state(2)
    path = tmp_path / "legacy.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert _same(read_checkpoint(path, False), state)
    model = cl.load_model("resnet18", weights=path)
    assert model.net.fc.out_features == 4
    assert torch.equal(model.net.fc.bias, state["fc.bias"])


# --------------------------------------------------------------------------- python objects


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_pickled_whole_model_names_its_classes_and_advises_trust(tmp_path, zipped):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=3)
    path = tmp_path / "whole.pt"
    torch.save(net, path, _use_new_zipfile_serialization=zipped)
    want = (
        f"{path} holds pickled Python objects (torchvision.models.resnet.ResNet, "
        "torch.nn.modules.conv.Conv2d, torch.nn.modules.batchnorm.BatchNorm2d, ...), "
        f"not just tensors; unpickling can run code, so cnnlens refuses it: {TRUST}"
    )
    assert _message(path) == want
    loaded = read_checkpoint(path, True)
    assert isinstance(loaded, torchvision.models.ResNet)
    assert _same(loaded.state_dict(), net.state_dict())


def test_state_dict_with_one_python_object_names_only_that(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    torch.save({"fc.bias": torch.zeros(2), "payload": _TouchOnUnpickle(marker)}, path)
    msg = _message(path)
    # Path.touch pickles as getattr(Path, "touch") applied to a PosixPath: those three
    # globals, with Python 2's __builtin__ read as builtins; the tensor's own globals
    # (torch._utils._rebuild_tensor_v2, OrderedDict) are allowed and not listed.
    objects = msg.split(" holds pickled Python objects (", 1)[1].split("), not just", 1)[0]
    assert objects.split(", ")[0] == "builtins.getattr"
    assert "pathlib." in objects
    assert "torch" not in objects and "OrderedDict" not in objects
    assert not marker.exists()


def test_protocol_4_checkpoint_needs_trust_for_torch_not_for_safety(tmp_path):
    state = _state(3)
    path = tmp_path / "p4.pth"
    torch.save(state, path, pickle_protocol=4)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.load(path, weights_only=True)
        readable = True  # a newer torch reads protocol 4 safely
    except Exception:
        readable = False
    if readable:
        assert _same(read_checkpoint(path, False), state)
    else:
        want = (
            f"{path}: torch.load(weights_only=True) cannot read pickle protocol 4 and a "
            f"full unpickle can run code: {TRUST}"
        )
        assert _message(path) == want
    assert _same(read_checkpoint(path, True), state)


def test_torchscript_archive_needs_trust(tmp_path):
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated
        torch.jit.save(torch.jit.script(nn.Linear(3, 2)), path)
    want = f"{path} is a TorchScript archive (torch.jit.save), loaded only when trusted: {TRUST}"
    assert _message(path) == want
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cl.load_model(str(path), trust_checkpoint=True)
    assert model.net(torch.zeros(1, 3)).shape == (1, 2)


# --------------------------------------------------------------------------- damaged


def test_zip_with_cut_data_pkl_is_damaged(tmp_path):
    good = tmp_path / "good.pth"
    torch.save(_state(), good)
    bad = tmp_path / "bad.pth"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            zout.writestr(name, data[: len(data) // 2] if name.endswith("data.pkl") else data)
    msg = _message(bad)
    start = f"{bad} is a damaged PyTorch checkpoint (its pickle is cut short or corrupt: "
    assert msg.startswith(start)
    assert msg.endswith("); download or save it again")
    assert "trust" not in msg
    assert _message(bad, trust=True) == msg  # trust does not make a damaged file loadable


def test_cut_legacy_file_is_damaged(tmp_path):
    buf = io.BytesIO()
    torch.save(_state(), buf, _use_new_zipfile_serialization=False)
    path = tmp_path / "cut.pth"
    path.write_bytes(buf.getvalue()[:300])
    msg = _message(path)
    assert msg.startswith(f"{path} is a damaged PyTorch checkpoint (its pickle is cut short")
    assert msg.endswith("; download or save it again")


# --------------------------------------------------------------------------- safetensors


@pytest.fixture()
def safetensors_bytes() -> bytes:
    buf = safetensors.torch.save({"a": torch.arange(100, dtype=torch.float32)})
    assert len(buf) == 8 + struct.unpack("<Q", buf[:8])[0] + 400
    return buf


def test_cut_safetensors_is_damaged(tmp_path, safetensors_bytes):
    path = tmp_path / "cut.safetensors"
    path.write_bytes(safetensors_bytes[:-50])
    n = len(safetensors_bytes)
    want = (
        f"{path} is a damaged safetensors file (cut short: {n - 50} of {n} bytes); "
        "download it again"
    )
    assert _message(path) == want


def test_safetensors_with_impossible_header_length(tmp_path, safetensors_bytes):
    path = tmp_path / "long.safetensors"
    path.write_bytes(struct.pack("<Q", 10**9) + safetensors_bytes[8:])
    want = (
        f"{path} is a damaged safetensors file (its header says 1000000000 bytes but the "
        f"file has {len(safetensors_bytes)}); download or save it again"
    )
    assert _message(path) == want


def test_safetensors_with_broken_json_header(tmp_path, safetensors_bytes):
    path = tmp_path / "json.safetensors"
    path.write_bytes(safetensors_bytes[:9] + b"!" + safetensors_bytes[10:])
    want = (
        f"{path} is a damaged safetensors file (its header is not valid); download or save it again"
    )
    assert _message(path) == want


def test_garbage_named_safetensors_is_not_a_safetensors_file(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x00\x01 not a safetensors header")
    want = (
        f"{path} is not a safetensors file (unknown bytes: neither a zip archive nor a "
        "pickle written by torch.save); give a file written by torch.save or safetensors"
    )
    assert _message(path) == want
