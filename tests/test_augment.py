"""edgecomp's batched augmentation against torchvision, image for image.

The oracle is `torchvision.transforms.v2.functional` applied to one uint8 image at a time with the
parameters torchvision's `RandAugment` gives that op (`_apply_image_or_video_transform`), written out
here from torchvision 0.29's source so that a wrong mapping in edgecomp cannot hide behind itself.
"""

import math

import pytest
import torch
import torchvision.transforms.v2 as T2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from edgecomp.compression.augment import (
    BINS,
    NAMES,
    OPS,
    Augmenter,
    OpParams,
    apply_round,
    magnitude_table,
    op_magnitudes,
    ops_for,
)
from edgecomp.core.data import nchw_strides, read_fashion_mnist
from edgecomp.core.errors import RecipeError
from edgecomp.core.recipe import AugmentSection, validate

TV_NAMES = {  # edgecomp name -> torchvision's RandAugment op name
    "identity": "Identity", "shear_x": "ShearX", "shear_y": "ShearY", "translate_x": "TranslateX",
    "translate_y": "TranslateY", "rotate": "Rotate", "brightness": "Brightness", "color": "Color",
    "contrast": "Contrast", "sharpness": "Sharpness", "posterize": "Posterize", "solarize": "Solarize",
    "autocontrast": "AutoContrast", "equalize": "Equalize",
}
NEAREST = InterpolationMode.NEAREST
MAGNITUDES = [0, 1, 9, 17, 30]


def oracle(name: str, image: torch.Tensor, magnitude: float) -> torch.Tensor:
    """torchvision's RandAugment step for one uint8 image (C, H, W) at a signed magnitude."""
    shear = math.degrees(math.atan(magnitude))
    affine = dict(angle=0.0, scale=1.0, interpolation=NEAREST, fill=None)
    return {
        "identity": lambda: image,
        "shear_x": lambda: TF.affine(image, translate=[0, 0], shear=[shear, 0.0], center=[0, 0], **affine),
        "shear_y": lambda: TF.affine(image, translate=[0, 0], shear=[0.0, shear], center=[0, 0], **affine),
        "translate_x": lambda: TF.affine(image, translate=[int(magnitude), 0], shear=[0.0, 0.0], **affine),
        "translate_y": lambda: TF.affine(image, translate=[0, int(magnitude)], shear=[0.0, 0.0], **affine),
        "rotate": lambda: TF.rotate(image, angle=magnitude, interpolation=NEAREST, fill=None),
        "brightness": lambda: TF.adjust_brightness(image, 1.0 + magnitude),
        "color": lambda: TF.adjust_saturation(image, 1.0 + magnitude),
        "contrast": lambda: TF.adjust_contrast(image, 1.0 + magnitude),
        "sharpness": lambda: TF.adjust_sharpness(image, 1.0 + magnitude),
        "posterize": lambda: TF.posterize(image, bits=int(magnitude)),
        "solarize": lambda: TF.solarize(image, threshold=255 * magnitude),
        "autocontrast": lambda: TF.autocontrast(image),
        "equalize": lambda: TF.equalize(image),
    }[name]()


@pytest.fixture(scope="module")
def fashion_batch(fashion_root):
    images, _ = read_fashion_mnist(fashion_root, train=False)
    return images[:256]


def test_batch(fashion_batch, channels: int) -> torch.Tensor:
    """8 uint8 images; 3 channels from three different pictures so colour ops have colour to work on;
    the last image is flat white (autocontrast's and equalize's degenerate case, solarize's edge)."""
    if channels == 1:
        batch = fashion_batch[:8].clone()
    else:
        batch = torch.cat([fashion_batch[:8], fashion_batch[8:16], fashion_batch[16:24]], dim=1)
    batch[-1] = 255
    return batch


test_batch.__test__ = False  # a helper, not a test


def augmenter(**kw) -> Augmenter:
    base = {"policy": "randaugment", "erasing": False, "flip": False, "crop_padding": 0}
    return Augmenter(AugmentSection(**{**base, **kw}))


# -------------------------------------------------------------- the op table


@pytest.mark.parametrize("height,width", [(28, 28), (32, 48)])
def test_op_table_is_torchvision_randaugment(height, width):
    space = T2.RandAugment._AUGMENTATION_SPACE
    assert [TV_NAMES[n] for n in NAMES] == list(space)
    table = magnitude_table(height, width)
    for index, (name, signed, _) in enumerate(OPS):
        values, tv_signed = space[TV_NAMES[name]]
        assert signed == tv_signed, name
        expected = values(BINS, height, width)
        if expected is None:
            assert torch.equal(table[index], torch.zeros(BINS, dtype=torch.float64)), name
        else:  # bit for bit: edgecomp hands the kernels exactly the float torchvision would
            assert table[index].tolist() == [float(v) for v in expected], name


def test_whole_magnitude_gives_torchvision_bin_fractional_interpolates():
    ops = torch.arange(len(OPS))
    table = magnitude_table(28, 28)
    for level in range(BINS):
        got = op_magnitudes(ops, torch.full((len(OPS),), float(level)), 28, 28)
        assert torch.equal(got, table[:, level])
    half = op_magnitudes(ops, torch.full((len(OPS),), 9.5), 28, 28)
    rotate, posterize = NAMES.index("rotate"), NAMES.index("posterize")
    assert half[rotate] == pytest.approx(9.5)  # degrees: linear between bins 9 and 10
    assert half[posterize] == round(float(table[posterize, 9] + table[posterize, 10]) / 2)  # whole bits


# -------------------------------------------------------------- every op against torchvision


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_batched_op_equals_torchvision_per_image(fashion_batch, name, channels):
    """Each op on a batch (half the images with a negative sign where the op is signed) equals
    torchvision's functional kernel on each uint8 image, exactly, at M = 0, 1, 9, 17, 30."""
    images = test_batch(fashion_batch, channels)
    index = NAMES.index(name)
    ops = torch.full((len(images),), index)
    tv_transform = T2.RandAugment()._apply_image_or_video_transform
    for level in MAGNITUDES:
        magnitude = op_magnitudes(ops, torch.full((len(images),), float(level)), 28, 28)
        if OPS[index][1]:
            magnitude[::2] *= -1
        out = apply_round(images, OpParams(ops, magnitude))
        assert out.dtype == torch.uint8
        for i, image in enumerate(images):
            expected = oracle(name, image, float(magnitude[i]))
            assert torch.equal(out[i], expected), (name, level, i)
            # and torchvision's own RandAugment step, as a check on the oracle above
            by_randaugment = tv_transform(image, TV_NAMES[name], float(magnitude[i]), interpolation=NEAREST,
                                          fill=T2.RandAugment()._fill)
            assert torch.equal(expected, by_randaugment), (name, level, i)


@pytest.mark.parametrize("name", [n for n, _, table in OPS if table is not None and n != "color"])
def test_ops_with_a_magnitude_change_images_at_30(fashion_batch, name):
    """Guards the oracle test against comparing no-ops: at M=30 each op moves pixels."""
    images = test_batch(fashion_batch, 1)[:7]
    ops = torch.full((7,), NAMES.index(name))
    out = apply_round(images, OpParams(ops, op_magnitudes(ops, torch.full((7,), 30.0), 28, 28)))
    assert not torch.equal(out, images)


@pytest.mark.parametrize("channels", [1, 3])
def test_augmenter_replays_torchvision_round_by_round(fashion_batch, channels):
    """The whole policy (2 rounds, each image its own ops and signs) equals torchvision's kernels applied
    image by image with the drawn parameters, then converted to float as edgecomp does."""
    images = test_batch(fashion_batch, channels)
    aug = augmenter(num_ops=2)
    for level in (0.0, 9.0, 30.0):
        params = aug.make_params(images.shape, level, torch.Generator().manual_seed(int(level)))
        out = aug.apply(images, params)
        assert out.dtype == torch.float32
        for i, image in enumerate(images):
            for round_params in params.rounds:
                image = oracle(NAMES[int(round_params.op[i])], image, float(round_params.magnitude[i]))
            assert torch.equal(out[i], image.float()), (level, i)


# -------------------------------------------------------------- drawing: table, sign, channels


def test_draws_match_randaugment_sampling():
    """Ops uniform over the table, the sign negative with probability 1/2, |magnitude| the bin value."""
    aug = augmenter(num_ops=1)
    params = aug.make_params((14000, 3, 28, 28), 12.0, torch.Generator().manual_seed(0)).rounds[0]
    counts = torch.bincount(params.op, minlength=len(OPS)).float() / 14000
    assert torch.allclose(counts, torch.full_like(counts, 1 / 14), atol=0.012), counts
    table = magnitude_table(28, 28)
    assert torch.equal(params.magnitude.abs(), table[params.op, 12])
    signed = torch.tensor([s for _, s, _ in OPS])[params.op] & (table[params.op, 12] > 0)
    assert float((params.magnitude[signed] < 0).float().mean()) == pytest.approx(0.5, abs=0.02)


def test_colour_op_not_drawn_for_one_channel():
    color = NAMES.index("color")
    assert color not in ops_for(1) and color in ops_for(3)
    assert len(ops_for(1)) == len(OPS) - 1
    aug = augmenter(num_ops=2)
    one = aug.make_params((5000, 1, 28, 28), 9.0, torch.Generator().manual_seed(0)).rounds
    three = aug.make_params((5000, 3, 28, 28), 9.0, torch.Generator().manual_seed(0)).rounds
    assert all(not (r.op == color).any() for r in one)
    for r in one:  # the other 13 share the draws evenly
        counts = torch.bincount(r.op, minlength=len(OPS)).float()[ops_for(1)] / 5000
        assert torch.allclose(counts, torch.full_like(counts, 1 / 13), atol=0.02)
    assert all((r.op == color).any() for r in three)


def test_other_channel_counts_are_refused():
    with pytest.raises(ValueError, match="1- or 3-channel"):
        augmenter().make_params((4, 4, 28, 28), 9.0, torch.Generator().manual_seed(0))
    assert augmenter(policy="none").make_params((4, 4, 28, 28), 9.0, torch.Generator()).rounds == []


def test_trivialaugment_draws_whole_levels_up_to_m():
    aug = augmenter(policy="trivialaugment")
    rounds = aug.make_params((4000, 1, 28, 28), 12.7, torch.Generator().manual_seed(0)).rounds
    assert len(rounds) == 1
    rotate = rounds[0].op == NAMES.index("rotate")  # rotate's bins are whole degrees 0..30
    degrees = rounds[0].magnitude[rotate].abs()
    assert set(degrees.tolist()) == set(range(13))


def test_magnitude_zero(fashion_batch):
    """At M=0 every op is the identity except the magnitude-free autocontrast and equalize and solarize,
    whose threshold is 255: like torchvision's (>=), it still inverts pure white pixels."""
    images = test_batch(fashion_batch, 1)
    for name in NAMES:
        ops = torch.full((len(images),), NAMES.index(name))
        out = apply_round(images, OpParams(ops, op_magnitudes(ops, torch.zeros(len(images)), 28, 28)))
        if name == "solarize":
            assert torch.equal(out, torch.where(images == 255, 0, images))
        elif name not in ("autocontrast", "equalize"):
            assert torch.equal(out, images), name


# -------------------------------------------------------------- erasing: its own switch


def erased(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 1] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 2])


def test_erasing_off_by_default_and_m_alone_is_randaugment():
    cfg = AugmentSection()
    assert cfg.erasing is False
    params = Augmenter(cfg).make_params((64, 1, 28, 28), 30.0, torch.Generator().manual_seed(0))
    assert params.erase_boxes is None


def test_erasing_does_not_depend_on_magnitude():
    aug = augmenter(erasing=True)
    boxes = [aug.make_params((4000, 1, 28, 28), m, torch.Generator().manual_seed(0)).erase_boxes
             for m in (0.0, 9.0, 30.0)]
    assert torch.equal(boxes[0], boxes[1]) and torch.equal(boxes[0], boxes[2])
    assert float(erased(boxes[0]).float().mean()) == pytest.approx(0.5, abs=0.025)
    never = augmenter(erasing=True, erasing_p=0.0).make_params((500, 1, 28, 28), 30.0, torch.Generator())
    assert not erased(never.erase_boxes).any()


def test_erasing_boxes_follow_torchvision_random_erasing():
    """Box area and aspect have torchvision RandomErasing's distribution (defaults: scale 0.02..0.33,
    ratio 0.3..3.3 log-uniform, 10 tries for a box smaller than the image)."""
    torch.manual_seed(0)
    tv = T2.RandomErasing(p=1.0)
    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    tv_boxes = [tv.make_params([image]) for _ in range(3000)]
    tv_area = torch.tensor([p["h"] * p["w"] / 784 for p in tv_boxes])
    tv_aspect = torch.tensor([math.log(p["h"] / p["w"]) for p in tv_boxes])
    boxes = augmenter(erasing=True, erasing_p=1.0).make_params((3000, 1, 28, 28), 0.0,
                                                               torch.Generator().manual_seed(0)).erase_boxes
    h, w = boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]
    assert bool(((h < 28) & (w < 28) & (boxes[:, 0] >= 0) & (boxes[:, 1] <= 28)).all())
    area, aspect = (h * w).float() / 784, (h.float() / w.float()).log()
    assert float(area.mean()) == pytest.approx(float(tv_area.mean()), abs=0.01)
    assert float(area.std()) == pytest.approx(float(tv_area.std()), abs=0.01)
    assert float(aspect.mean()) == pytest.approx(float(tv_aspect.mean()), abs=0.06)
    assert float(aspect.std()) == pytest.approx(float(tv_aspect.std()), abs=0.06)


def test_erasing_policy_removed_with_a_pointer_to_its_replacement():
    with pytest.raises(RecipeError, match="augment.policy: 'erasing' was removed.*policy: none with erasing: true"):
        validate({"augment": {"policy": "erasing"}})
    with pytest.raises(RecipeError, match="augment.erasing_scale"):
        validate({"augment": {"erasing_scale": [0.4, 0.1]}})


# -------------------------------------------------------------- the pipeline around the policy


def test_policy_none_is_identity(fashion_batch):
    out = augmenter(policy="none")(fashion_batch, 30.0, torch.Generator().manual_seed(0))
    assert torch.equal(out, fashion_batch.float())


def test_same_generator_same_result_and_images_differ(fashion_batch):
    aug = augmenter(erasing=True, flip=True, crop_padding=2)
    first = aug(fashion_batch, 14.0, torch.Generator().manual_seed(3))
    second = aug(fashion_batch, 14.0, torch.Generator().manual_seed(3))
    assert torch.equal(first, second)
    params = aug.make_params(fashion_batch.shape, 14.0, torch.Generator().manual_seed(3))
    assert len(set(params.rounds[0].op.tolist())) > 5  # each image draws its own op


def test_output_range_dtype_and_layout(fashion_batch):
    for policy in ("randaugment", "trivialaugment"):
        out = augmenter(policy=policy, erasing=True, crop_padding=4, flip=True)(
            fashion_batch, 30.0, torch.Generator().manual_seed(1))
        assert out.dtype == torch.float32 and out.min() >= 0 and out.max() <= 255
        assert out.stride() == nchw_strides(out.shape)  # NCHW, not channels-last (see data.as_nchw)


def test_base_view_is_crop_and_flip_only(fashion_batch):
    aug = augmenter(erasing=True, flip=True, crop_padding=2)
    out = aug.base(fashion_batch, 30.0, torch.Generator().manual_seed(0))
    # every output pixel is an input pixel or padding: no op changed a value
    assert set(out.unique().tolist()) <= set(fashion_batch.unique().tolist()) | {0.0}
    assert out.shape == fashion_batch.shape


def test_distortion_grows_with_magnitude(fashion_batch):
    aug = augmenter(policy="randaugment")
    clean = fashion_batch.float()
    change = [float((aug(fashion_batch, m, torch.Generator().manual_seed(0)) - clean).abs().mean())
              for m in (0, 5, 10, 20, 30)]
    assert change == sorted(change), change
    assert change[-1] > 3 * change[0]


def test_refuses_float_images(fashion_batch):
    with pytest.raises(TypeError, match="uint8"):
        augmenter()(fashion_batch.float(), 9.0, torch.Generator())
