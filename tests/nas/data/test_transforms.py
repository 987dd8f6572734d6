"""nas.data.transforms: random-resized-crop boxes stay in their ranges, translations are exact
shifts of the padded image, flips only where allowed, the tensor and Pillow paths agree, the
evaluation box is the centre crop, normalisation broadcasts grey to three channels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from nas.data import PRESETS, Augmentation
from nas.data.transforms import Normaliser, centre_crop_batch, crop_batch, crop_image, eval_box, item_rng, train_box


def test_random_resized_boxes_stay_within_scale_ratio_and_image():
    aug = PRESETS["folder"]
    rng = np.random.default_rng(0)
    areas, ratios, flips = [], [], []
    for _ in range(2000):
        (top, left, h, w), flip = train_box(rng, 60, 80, aug)
        assert top >= 0 and left >= 0 and top + h <= 60 and left + w <= 80
        areas.append(h * w / (60 * 80))
        ratios.append(w / h)
        flips.append(flip)
    assert min(areas) > 0.07 and max(areas) <= 1.0 and np.median(areas) > 0.3
    assert min(ratios) > 3 / 4 * 0.9 and max(ratios) < 4 / 3 * 1.1
    assert 0.45 < np.mean(flips) < 0.55


def test_a_box_too_wide_for_the_image_falls_back_to_the_clamped_whole_image():
    aug = Augmentation(scale=(1.0, 1.0), ratio=(2.0, 2.0), flip=False)
    (top, left, h, w), _ = train_box(np.random.default_rng(0), 20, 20, aug)
    assert (top, left, h, w) == (5, 0, 10, 20)  # ratio 2, as wide as the image, centred


@pytest.mark.parametrize("preset", ["small", "digits"])
def test_translation_presets_are_exact_shifts_of_the_padded_image(preset):
    aug = PRESETS[preset]
    side = 24
    pad = round(aug.pad * side)
    x = torch.randint(0, 256, (64, 3, side, side), dtype=torch.uint8)
    drawn = [train_box(item_rng(7, i), side, side, aug) for i in range(64)]
    out = crop_batch(x, [b for b, _ in drawn], [f for _, f in drawn], side, aug.pad_mode)
    mode = "replicate" if aug.pad_mode == "border" else "constant"
    padded = torch.nn.functional.pad(x.float(), (pad, pad, pad, pad), mode=mode).to(torch.uint8)
    shifts = set()
    for image, result, ((top, left, h, w), flip) in zip(padded, out, drawn):
        assert (h, w) == (side, side) and -pad <= top <= pad and -pad <= left <= pad
        crop = image[:, top + pad : top + pad + side, left + pad : left + pad + side]
        assert torch.equal(crop.flip(2) if flip else crop, result)
        shifts.add((top, left, flip))
    assert len(shifts) > 10
    assert any(f for _, _, f in shifts) == aug.flip


def test_the_crop_of_an_image_does_not_depend_on_its_batch():
    aug = PRESETS["folder"]
    x = torch.randint(0, 256, (8, 3, 30, 30), dtype=torch.uint8)
    drawn = [train_box(item_rng(3, i), 30, 30, aug) for i in range(8)]
    together = crop_batch(x, [b for b, _ in drawn], [f for _, f in drawn], 16)
    alone = crop_batch(x[5:6], [drawn[5][0]], [drawn[5][1]], 16)
    assert torch.equal(together[5], alone[0])
    assert train_box(item_rng(3, 5), 30, 30, aug) == drawn[5]
    assert train_box(item_rng(4, 5), 30, 30, aug) != drawn[5]


def test_tensor_and_pillow_crops_agree():
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (6, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # 48x64 blocks
    smooth = np.array(Image.fromarray(smooth).filter(ImageFilter.GaussianBlur(3)))
    box = (6, 10, 30, 40)
    for flip in (False, True):
        pil = crop_image(Image.fromarray(smooth), box, flip, 32)
        tensor = crop_batch(torch.from_numpy(smooth).permute(2, 0, 1)[None].contiguous(), [box], [flip], 32)[0]
        difference = np.abs(pil.astype(int) - tensor.permute(1, 2, 0).numpy().astype(int))
        assert pil.shape == (32, 32, 3) and difference.mean() < 2 and difference.max() < 20


def test_jpeg_is_decoded_at_a_reduced_scale_and_still_matches(tmp_path):
    pixels = np.zeros((400, 400, 3), np.uint8)
    pixels[:, 200:] = (200, 40, 40)
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=95)
    with Image.open(tmp_path / "a.jpg") as image:
        out = crop_image(image, (0, 0, 400, 400), False, 16)
        assert image.size[0] < 400, "draft mode decoded a reduced scale"
    assert out.shape == (16, 16, 3) and out[:, :7].max() < 30 and abs(int(out[:, 10:, 0].mean()) - 200) < 10


def test_eval_box_is_the_centre_square():
    assert eval_box(100, 200, PRESETS["folder"]) == (6, 56, 88, 88)
    assert eval_box(32, 32, PRESETS["small"]) == (0, 0, 32, 32)
    x = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8)
    assert torch.equal(centre_crop_batch(x, (2, 2, 4, 4), 4), x[:, :, 2:6, 2:6])
    assert centre_crop_batch(x, (0, 0, 8, 8), 8) is x and crop_batch(x, [(0, 0, 8, 8)], [False], 8) is x
    assert centre_crop_batch(x, (0, 0, 8, 8), 4).shape == (1, 1, 4, 4)


def test_normaliser_broadcasts_grey_and_keeps_the_memory_format():
    norm = Normaliser((0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    grey = torch.full((2, 1, 3, 3), 255, dtype=torch.uint8)
    out = norm(grey, torch.channels_last)
    assert out.shape == (2, 3, 3, 3) and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([1.0, 3.0, 1.0]))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_normaliser_is_the_formula_bit_for_bit_and_leaves_its_input(channels, memory_format):
    norm = Normaliser((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    x = torch.randint(0, 256, (4, channels, 9, 9), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    expected = (x.float() * norm.scale - norm.shift).contiguous(memory_format=memory_format)
    out = norm(x, memory_format)
    assert torch.equal(out, expected) and out.is_contiguous(memory_format=memory_format)
    assert torch.equal(x, before)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"scale": (0.5, 0.1)}, "scale must be (low, high) with 0 < low <= high <= 1"),
        ({"scale": (0.5, 2.0)}, "scale must be (low, high)"),
        ({"ratio": (0, 1)}, "ratio must be (low, high) with 0 < low <= high"),
        ({"pad": 0.9}, "pad must be in [0, 0.5]"),
        ({"pad_mode": "mirror"}, "pad_mode must be one of"),
        ({"eval_crop": 0}, "eval_crop must be in (0, 1]"),
    ],
)
def test_bad_augmentation_is_one_line(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        Augmentation(**kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_presets_round_trip_to_plain_data():
    for aug in PRESETS.values():
        data = aug.to_dict()
        assert Augmentation(**data) == aug and all(not isinstance(v, tuple) for v in data.values())
    assert math.isclose(PRESETS["digits"].pad * 24, 2)
