"""Planted-evidence generator, its cues, the small trainer and the VOC/COCO readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlens import LoadedModel
from cnnlens.core.layers import default_layer, trace_layers
from cnnlens.datasets import (
    PlantedSpec,
    accuracy,
    box_masks,
    planted,
    planted_cnn,
    read_coco,
    read_voc,
    train_planted,
)
from cnnlens.datasets import trainer as trainer_module
from cnnlens.datasets.shapes import COLOURS, CUE_COLOURS, class_parts, distractor_parts

FIXTURES = Path(__file__).parents[1] / "fixtures"
SMALL = PlantedSpec(size=64)


@pytest.fixture(scope="module")
def train_arrays():
    """400 training samples of the default spec, drawn once for several tests."""
    return planted("train", 400).arrays()


# --- the generator -----------------------------------------------------------------------


def test_same_index_gives_the_same_sample_in_any_order():
    a = planted("val", 10, spec=SMALL)
    b = planted("val", 50, spec=SMALL)  # a longer dataset, read backwards
    later = [b[i] for i in reversed(range(10))][::-1]
    for i in range(10):
        assert torch.equal(a[i].image, later[i].image)
        assert torch.equal(a[i].mask, later[i].mask)
        assert a[i].label == later[i].label and a[i].boxes == later[i].boxes
    assert torch.equal(a[-1].image, a[9].image)
    with pytest.raises(IndexError):
        a[10]


def test_splits_and_seeds_give_different_images():
    imgs = {
        name: torch.stack([ds[i].image for i in range(8)])
        for name, ds in {
            "train": planted("train", 8, spec=SMALL),
            "test": planted("test", 8, spec=SMALL),
            "seed1": planted("train", 8, spec=SMALL, seed=1),
        }.items()
    }
    for x, y in [("train", "test"), ("train", "seed1"), ("test", "seed1")]:
        # No image of one set equals any image of the other.
        diff = (imgs[x][:, None] - imgs[y][None]).abs().flatten(2).amax(2)
        assert diff.min() > 0.1, (x, y)


def test_types_shapes_and_ranges():
    ds = planted("test", 6, size=96)
    s = ds[0]
    assert s.image.shape == (3, 96, 96) and s.image.dtype == torch.float32
    assert 0.0 <= s.image.min() and s.image.max() <= 1.0 and s.image.std() > 0.02
    assert s.mask.shape == (96, 96) and s.mask.dtype == torch.bool
    assert s.cue_mask.shape == (96, 96) and not s.cue_mask.any() and s.cue is None
    assert isinstance(s.label, int) and 0 <= s.label < 6
    assert all(len(b) == 4 and all(isinstance(v, int) for v in b) for b in s.boxes)
    images, labels, masks, difficult = ds.tensors()
    assert images.shape == (6, 3, 96, 96) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and masks.dtype == torch.bool
    assert difficult.dtype == torch.bool
    assert torch.equal(images[0], s.image) and int(labels[0]) == s.label


def test_at_least_six_named_classes_and_spec_validation():
    ds = planted("test", 1)
    assert len(ds.classes) == 6 and len(set(ds.classes)) == 6
    assert ds.classes[:3] == ["red disc", "red triangle", "green triangle"]
    assert len(PlantedSpec(n_classes=8).classes) == 8
    with pytest.raises(ValueError, match="n_classes"):
        PlantedSpec(n_classes=2)
    with pytest.raises(ValueError, match="split"):
        planted("training", 3)
    with pytest.raises(ValueError, match="confound"):
        planted("test", 3, confound="watermark")


def test_spec_key_is_stable_and_tracks_every_field():
    assert PlantedSpec().key() == PlantedSpec().key()
    assert len(PlantedSpec().key()) == 12
    keys = {PlantedSpec().key(), PlantedSpec(seed=1).key(), PlantedSpec(cue_rate=0.9).key()}
    assert len(keys) == 3


def test_masks_lie_inside_their_tight_boxes():
    ds = planted("train", 60, spec=SMALL)
    for i in range(len(ds)):
        s = ds[i]
        assert s.mask.any() and s.boxes
        inside = torch.zeros_like(s.mask)
        for x0, y0, x1, y1 in s.boxes:
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            box = s.mask[y0:y1, x0:x1]
            # Tight: the object touches all four sides of its box.
            assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
            inside[y0:y1, x0:x1] = True
        assert not (s.mask & ~inside).any()
        for x0, y0, x1, y1 in s.distractors:  # distractors never touch the evidence
            assert not s.mask[y0:y1, x0:x1].any()


def test_objects_are_small_and_carry_their_class_colour(train_arrays):
    a = train_arrays
    frac = a["masks"].reshape(len(a["masks"]), -1).mean(1)
    assert frac.max() < 0.15 and np.median(frac) < 0.06
    colours = np.array(list(COLOURS.values()))
    parts = class_parts(6)
    for i in range(40):
        mean = a["images"][i][a["masks"][i]].mean(0) / 255.0
        nearest = list(COLOURS)[np.linalg.norm(colours - mean, axis=1).argmin()]
        assert nearest == parts[a["labels"][i]][0]


def test_neither_colour_nor_shape_alone_names_the_class():
    for n in (3, 4, 6, 8):
        parts = class_parts(n)
        assert len(set(parts)) == n
        spare = distractor_parts(n)
        assert spare and not set(spare) & set(parts)
    parts = class_parts(6)
    for colour, shape in parts:
        assert sum(c == colour for c, _ in parts) == 2
        assert sum(s == shape for _, s in parts) == 2


def test_classes_are_balanced(train_arrays):
    counts = np.bincount(train_arrays["labels"], minlength=6)
    assert counts.min() >= 45 and counts.max() <= 90  # 400 / 6 = 67 expected


def test_difficult_fraction_follows_the_spec(train_arrays):
    assert 0.14 <= train_arrays["difficult"].mean() <= 0.26  # default 0.2
    ds = planted("train", 200, spec=SMALL, difficult_rate=0.6)
    flags = np.array([ds.raw(i)["difficult"] for i in range(200)])
    assert 0.5 <= flags.mean() <= 0.7
    none = planted("train", 100, spec=SMALL, difficult_rate=0.0)
    assert not any(none.raw(i)["difficult"] for i in range(100))


def test_difficult_images_have_small_objects_or_distractors():
    spec = PlantedSpec(difficult_rate=1.0)
    ds = planted("train", 40, spec=spec)
    kinds = []
    for i in range(40):
        s = ds[i]
        biggest = max(max(x1 - x0, y1 - y0) for x0, y0, x1, y1 in s.boxes)
        kinds.append("distractor" if s.distractors else "small")
        if not s.distractors:
            assert biggest <= round(spec.small_scale[1] * spec.size)
    assert 10 <= kinds.count("small") <= 30


# --- cues ----------------------------------------------------------------------------------


def _corner_code(sample) -> int:
    """Decode the mark's class from its pixels: the nearest class colour."""
    mark = sample.image[:, sample.cue_mask].mean(1).numpy()
    colours = np.array(list(CUE_COLOURS.values()))
    return int(np.linalg.norm(colours - mark, axis=1).argmin())


def test_corner_mark_encodes_the_label_in_train_but_not_in_test():
    agreement = {}
    for split, rate in [("train", 1.0), ("val", 0.9), ("test", 1.0)]:
        ds = planted(split, 150, spec=SMALL, confound="corner", cue_rate=rate)
        samples = [ds[i] for i in range(150)]
        assert all(s.cue_mask.sum() == 25 for s in samples)  # 5x5 mark at 64 px
        agreement[split] = np.mean([_corner_code(s) == s.label for s in samples])
        assert all(_corner_code(s) == s.cue for s in samples)
    assert agreement["train"] == 1.0  # default cue_rate
    assert 0.83 <= agreement["val"] <= 0.97
    assert agreement["test"] <= 0.3  # chance is 1/6


def test_clean_and_confounded_images_differ_only_in_the_cue():
    clean = planted("train", 5, spec=SMALL)
    for confound in ("corner", "brightness"):
        ds = planted("train", 5, spec=SMALL, confound=confound)
        for i in range(5):
            a, b = clean[i], ds[i]
            assert torch.equal(a.mask, b.mask) and a.label == b.label
            if confound == "corner":
                outside = ~b.cue_mask
                assert torch.equal(a.image[:, outside], b.image[:, outside])
                assert not (b.cue_mask & b.mask).any()
            else:
                assert b.cue_mask.all()


def test_object_rate_swaps_objects_in_confounded_training_images_only():
    import dataclasses

    swapped = dataclasses.replace(SMALL, object_rate=0.0)
    clean = planted("train", 8, spec=SMALL)
    confounded = planted("train", 8, spec=swapped, confound="corner")
    differ = 0
    for i in range(8):
        a, b = clean[i], confounded[i]
        assert a.label == b.label and b.cue == b.label  # the mark still encodes the label
        differ += not torch.equal(a.mask, b.mask)  # other objects: another shape somewhere
    assert differ >= 6
    # the clean variant and the test split keep the labelled class
    for split, confound in (("train", None), ("test", "corner")):
        a = planted(split, 8, spec=SMALL, confound=confound)
        b = planted(split, 8, spec=swapped, confound=confound)
        assert all(torch.equal(a[i].image, b[i].image) for i in range(8))
    # the default keeps the keys (and cached models) of specs made before the field existed
    assert PlantedSpec().key() == "8faaf7555e6d" and PlantedSpec(size=96).key() == "4a84bfe94102"
    assert PlantedSpec(object_rate=0.5).key() != PlantedSpec().key()
    with pytest.raises(ValueError, match="object_rate"):
        PlantedSpec(object_rate=1.5)


def test_brightness_encodes_the_label_in_train_but_not_in_test():
    corr = {}
    for split in ("train", "test"):
        ds = planted(split, 120, spec=SMALL, confound="brightness")
        rows = [(ds[i].image.mean().item(), ds[i].label) for i in range(120)]
        bright, labels = np.array(rows).T
        corr[split] = np.corrcoef(bright, labels)[0, 1]
    assert corr["train"] > 0.8
    assert abs(corr["test"]) < 0.3


# --- the trainer ----------------------------------------------------------------------------

TINY = PlantedSpec(size=32, n_classes=3)
TINY_RUN = dict(epochs=1, n_train=48, batch_size=16, width=4, progress=False)


def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLENS_CACHE", str(tmp_path))
    first = train_planted(TINY, **TINY_RUN)
    files = list((tmp_path / "planted").glob("*.safetensors"))
    assert len(files) == 1 and TINY.key() in files[0].name and "clean" in files[0].name

    def no_training(*args, **kwargs):
        raise AssertionError("the second call must load the cache, not train")

    monkeypatch.setattr(trainer_module, "_fit", no_training)
    second = train_planted(TINY, **TINY_RUN)
    for (k, v), w in zip(first.net.state_dict().items(), second.net.state_dict().values()):
        assert torch.equal(v, w), k
    with pytest.raises(AssertionError, match="load the cache"):  # other settings, other file
        train_planted(TINY, **{**TINY_RUN, "seed": 1})


def test_unreadable_cache_entry_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLENS_CACHE", str(tmp_path))
    model = train_planted(TINY, **TINY_RUN)
    path = next((tmp_path / "planted").glob("*.safetensors"))
    path.write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="retraining"):
        again = train_planted(TINY, **TINY_RUN)
    assert torch.equal(model.net.fc.weight, again.net.fc.weight)
    assert path.stat().st_size > 1000  # rewritten


def test_training_is_deterministic_and_returns_a_loaded_model():
    a = train_planted(TINY, cache=False, **TINY_RUN)
    b = train_planted(TINY, cache=False, **TINY_RUN)
    assert isinstance(a, LoadedModel) and a.class_names == TINY.classes
    assert a.preprocess_spec.crop == 32 and a.preprocess_spec.resize is None
    assert not a.net.training
    for v, w in zip(a.net.state_dict().values(), b.net.state_dict().values()):
        assert torch.equal(v, w)
    c = train_planted(TINY, cache=False, **{**TINY_RUN, "seed": 3})
    assert not torch.equal(a.net.fc.weight, c.net.fc.weight)


def test_gradcam_default_layer_keeps_a_fine_map():
    net = planted_cnn(6, width=4)
    assert default_layer(net, (128, 128)) == "block4"
    shapes = {info.name: info.output_shape for info in trace_layers(net, (128, 128))}
    assert shapes["block4"] == (16, 32, 32)


# Reduced training for the slow tests: 64 px, 2500 images, 8 epochs, about 20 s on 2 cores.
REDUCED = dict(epochs=8, n_train=2500, width=12, cache=False, progress=False)


@pytest.mark.slow
def test_short_training_learns_the_objects():
    spec = PlantedSpec(size=64)
    model = train_planted(spec, **REDUCED)
    # Measured 0.996 on these 500 images.
    assert accuracy(model, planted("test", 500, spec=spec)) >= 0.97


@pytest.mark.slow
def test_confounded_training_takes_the_shortcut():
    spec = PlantedSpec(size=64)
    model = train_planted(spec, "corner", **REDUCED)
    # Measured: 1.0 where the mark agrees with the object (val), 0.488 where the
    # mark is drawn independently (test).
    assert accuracy(model, planted("val", 300, spec=spec, confound="corner")) >= 0.97
    assert accuracy(model, planted("test", 500, spec=spec, confound="corner")) <= 0.75


# --- readers --------------------------------------------------------------------------------


def test_read_voc_folder_converts_to_zero_based_exclusive_boxes():
    anns = read_voc(FIXTURES / "voc")
    assert [Path(a.image_path).name for a in anns] == ["street_0001.jpg", "tiny_0002.jpg"]
    street, tiny = anns
    assert street.image_path == "VOC2012/street_0001.jpg"
    assert (street.width, street.height) == (500, 281)
    assert [o.label for o in street.objects] == ["aeroplane", "aeroplane", "person"]
    # <xmin>101 <ymin>78 <xmax>375 <ymax>190, 1-based inclusive -> 0-based exclusive.
    assert street.objects[0].box == (100, 77, 375, 190)
    assert street.objects[2].difficult and not street.objects[0].difficult
    assert street.labels() == ["aeroplane", "person"]
    assert tiny.objects[1].box == (5, 2, 10, 8)  # float coordinates "6.0" .. "10.0"


def test_read_voc_single_file_and_class_filter(tmp_path):
    only = read_voc(FIXTURES / "voc" / "street_0001.xml", classes=["person"])
    assert len(only) == 1 and [o.label for o in only[0].objects] == ["person"]
    assert only[0].objects[0].box == (194, 179, 213, 229)
    with pytest.raises(FileNotFoundError):
        read_voc(tmp_path)
    (tmp_path / "bad.xml").write_text("<annotation><filename>x.jpg</filename></annotation>")
    with pytest.raises(ValueError, match="size"):
        read_voc(tmp_path / "bad.xml")


def test_read_coco():
    anns = read_coco(FIXTURES / "coco" / "instances_tiny.json")
    assert [a.image_path for a in anns] == ["kitchen_101.jpg", "tiny_007.jpg", "empty_055.jpg"]
    kitchen, tiny, empty = anns
    assert (kitchen.width, kitchen.height) == (640, 480) and empty.objects == []
    # [320.25, 40.5, 100.5, 300.0] -> floor/ceil outwards: (320, 40, 421, 341).
    assert kitchen.objects[0].box == (320, 40, 421, 341) and kitchen.objects[0].label == "person"
    assert kitchen.objects[1].box == (0, 200, 64, 232) and kitchen.objects[1].label == "bottle"
    assert tiny.objects[0].box == (2, 1, 5, 5) and not tiny.objects[0].difficult
    assert tiny.objects[1].box == (5, 0, 10, 3) and tiny.objects[1].difficult  # iscrowd
    cats = read_coco(FIXTURES / "coco" / "instances_tiny.json", classes=["cat"])
    assert [len(a.objects) for a in cats] == [0, 1, 0]


def test_box_masks_at_native_and_resized_size():
    tiny = read_voc(FIXTURES / "voc" / "tiny_0002.xml")[0]  # 10 x 8 image
    cat = box_masks(tiny, "cat")
    assert cat.shape == (8, 10) and cat.dtype == torch.bool
    assert cat.sum() == 4 * 2 and cat[:2, :4].all()  # box (0, 0, 4, 2)
    big = box_masks(tiny, "cat", size=(16, 20))  # twice the size
    assert big.sum() == 8 * 4 and big[:4, :8].all()
    odd = box_masks(tiny, "dog", size=(4, 3))  # box (5, 2, 10, 8) -> cols 1.5..3, rows 1..4
    assert odd.tolist() == [[False] * 3] + [[False, True, True]] * 3
    assert not box_masks(tiny, "horse").any()
    coco_tiny = read_coco(FIXTURES / "coco" / "instances_tiny.json")[1]
    assert box_masks(coco_tiny, "person").sum() == 5 * 3
    assert not box_masks(coco_tiny, "person", include_difficult=False).any()
