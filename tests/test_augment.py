import pytest
import torch

from edgecomp.augment import OPS, Augmenter, OpParams, apply_round
from edgecomp.data import read_fashion_mnist
from edgecomp.recipe import AugmentSection


@pytest.fixture(scope="module")
def fashion_batch(fashion_root):
    images, _ = read_fashion_mnist(fashion_root, train=False)
    return images[:256]


def augmenter(**kw) -> Augmenter:
    base = {"policy": "randaugment", "erasing": False, "flip": False, "crop_padding": 0}
    return Augmenter(AugmentSection(**{**base, **kw}))


def test_magnitude_zero_without_extras_is_identity(fashion_batch):
    out = augmenter()(fashion_batch, 0.0, torch.Generator().manual_seed(0))
    # M=0: every op at zero strength; posterize/solarize are no-ops, only
    # autocontrast and equalize (magnitude-free, as in torchvision) change pixels.
    assert out.dtype == torch.float32 and out.shape == fashion_batch.shape
    params = augmenter().make_params(fashion_batch.shape, 0.0, torch.Generator().manual_seed(0))
    magnitude_free = {i for i, (n, _, _) in enumerate(OPS) if n in ("autocontrast", "equalize")}
    untouched = torch.ones(len(fashion_batch), dtype=torch.bool)
    for round_params in params.rounds:
        untouched &= torch.tensor([int(op) not in magnitude_free for op in round_params.op])
    assert torch.equal(out[untouched], fashion_batch[untouched].float())


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


def test_output_stays_in_pixel_range(fashion_batch):
    for policy in ("randaugment", "trivialaugment", "erasing"):
        out = augmenter(policy=policy, erasing=True, crop_padding=4, flip=True)(
            fashion_batch, 30.0, torch.Generator().manual_seed(1))
        assert out.min() >= 0 and out.max() <= 255


def test_distortion_grows_with_magnitude(fashion_batch):
    aug = augmenter(policy="randaugment", erasing=True)
    clean = fashion_batch.float()
    change = [float((aug(fashion_batch, m, torch.Generator().manual_seed(0)) - clean).abs().mean())
              for m in (0, 5, 10, 20, 30)]
    assert change == sorted(change), change
    assert change[-1] > 3 * change[0]


def test_erasing_probability_follows_magnitude(fashion_batch):
    aug = augmenter(policy="erasing")
    def erased_fraction(magnitude):
        boxes = aug.make_params((4000, 1, 28, 28), magnitude, torch.Generator().manual_seed(0)).erase_boxes
        return float(((boxes[:, 1] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 2])).float().mean())
    assert erased_fraction(0) == 0
    assert erased_fraction(15) == pytest.approx(0.25, abs=0.03)
    assert erased_fraction(30) == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("name", [n for n, _, _ in OPS])
def test_batched_op_equals_per_image(fashion_batch, name):
    """The sub-batch implementation gives what applying it image by image gives."""
    index = [n for n, _, _ in OPS].index(name)
    images = fashion_batch[:8].float().expand(-1, 3, -1, -1).contiguous()
    strength = torch.linspace(-1, 1, 8)
    batched = apply_round(images.clone(), OpParams(torch.full((8,), index), strength))
    for i in range(8):
        single = apply_round(images[i:i + 1].clone(), OpParams(torch.tensor([index]), strength[i:i + 1]))
        assert torch.allclose(batched[i:i + 1], single, atol=1e-4), name


def test_geometric_ops_move_pixels_not_values(fashion_batch):
    image = fashion_batch[:1].float()
    rotate = [n for n, _, _ in OPS].index("rotate")
    turned = apply_round(image.clone(), OpParams(torch.tensor([rotate]), torch.tensor([1.0])))
    assert not torch.equal(turned, image)
    assert set(turned.unique().tolist()) <= set(image.unique().tolist()) | {0.0}
