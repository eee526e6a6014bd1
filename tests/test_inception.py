"""The FID Inception network with random weights: key layout, shapes, pooling, preprocessing, weights checks."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.nets import inception

STANDARD_KEYS = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_4a_3x3.bn.running_mean": (192,),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_6b.branch7x7dbl_5.conv.weight": (192, 128, 1, 7),
    "Mixed_7c.branch3x3dbl_3b.bn.running_var": (384,),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = inception.FIDInceptionV3()
    for name, buf in m.named_buffers():  # non-trivial BN statistics so that eval mode matters
        if name.endswith("running_var"):
            buf.uniform_(0.5, 2.0)
        elif name.endswith("running_mean"):
            buf.normal_(0, 0.1)
    return m.eval()


def test_key_layout_loads_strictly_with_standard_names(model, tmp_path):
    sd = model.state_dict()
    for key, shape in STANDARD_KEYS.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith("AuxLogits") for k in sd)
    # a plain state dict as the published file stores it (no num_batches_tracked) loads strictly too
    plain = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "w.pth"
    torch.save(plain, path)
    fresh = inception.load_fid_inception(path, sha256=inception.file_sha256(path))
    x = torch.rand(1, 3, 299, 299) * 2 - 1
    with torch.no_grad():
        a, b = model(x), fresh(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.slow  # the full-size Inception at 299²
def test_outputs_shapes_determinism_and_batch_invariance(model):
    x = torch.rand(4, 3, 299, 299) * 2 - 1
    with torch.no_grad():
        pool, logits = model(x)
        pool2, _ = model(x)
        split = torch.cat([model(x[:2])[0], model(x[2:])[0]])
    assert pool.shape == (4, 2048) and logits.shape == (4, 1008)
    assert torch.equal(pool, pool2)
    assert torch.allclose(pool, split, atol=1e-5)
    # logits are the fc layer without its bias
    assert torch.allclose(logits, pool @ model.fc.weight.T, atol=1e-5)


def test_pooling_branches_follow_the_tf_graph():
    # a constant input: averages that exclude padding stay constant at the border, ones that count it do not
    x = torch.ones(1, 1, 5, 5)
    assert torch.equal(inception._avg_pool_no_pad(x), x)
    blk_avg, blk_max = inception.InceptionE(8, max_pool=False), inception.InceptionE(8, max_pool=True)
    seen = {}
    blk_avg.branch_pool.register_forward_hook(lambda m, i, o: seen.__setitem__("avg", i[0]))
    blk_max.branch_pool.register_forward_hook(lambda m, i, o: seen.__setitem__("max", i[0]))
    z = torch.zeros(1, 8, 5, 5)
    z[0, :, 2, 2] = 9.0
    blk_avg.eval()(z)
    blk_max.eval()(z)
    assert seen["max"][0, 0, 1, 1] == 9.0  # max pooling spreads the peak unchanged
    assert seen["avg"][0, 0, 1, 1] == pytest.approx(1.0)  # 9 / 9 neighbours
    assert seen["avg"][0, 0, 0, 0] == 0.0  # corner window (4 cells, no padding counted) misses the peak
    m = inception.FIDInceptionV3()
    assert m.Mixed_7b.max_pool is False and m.Mixed_7c.max_pool is True


def test_preprocessing_modes():
    black = torch.zeros(1, 8, 8, 3, dtype=torch.uint8)
    white = torch.full((1, 8, 8, 3), 255, dtype=torch.uint8)
    for mode in inception.PREPROCESSING_MODES:
        assert inception.preprocess(black, mode).shape == (1, 3, 299, 299)
        assert torch.allclose(inception.preprocess(black, mode), torch.tensor(-1.0))
    assert torch.allclose(inception.preprocess(white, "pytorch-fid"), torch.tensor(1.0))
    assert torch.allclose(inception.preprocess(white, "tf"), torch.tensor(127 / 128))
    img = torch.randint(0, 256, (2, 13, 17, 3), dtype=torch.uint8)
    expected = (
        F.interpolate(img.permute(0, 3, 1, 2).float() / 255, size=(299, 299), mode="bilinear", align_corners=False) * 2
        - 1
    )
    assert torch.allclose(inception.preprocess(img, "pytorch-fid"), expected, atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        inception.preprocess(img.float(), "tf")
    with pytest.raises(ValueError, match="pytorch-fid"):
        inception.preprocess(img, "bicubic")


def test_tf1_resize_against_hand_computed_values():
    # 2 → 4 pixels: source coordinates 0, 0.5, 1, 1.5 (clamped at the edge), no half-pixel offset
    x = torch.tensor([[0.0, 10.0], [20.0, 30.0]])[None, None]
    out = inception._tf1_resize_bilinear(x, 4)[0, 0]
    row0 = torch.tensor([0.0, 5.0, 10.0, 10.0])
    expected = torch.stack([row0, row0 + 10, row0 + 20, row0 + 20])
    assert torch.allclose(out, expected)


def test_weights_are_verified_before_use(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"metrics\.inception_weights"):
        inception.verify_weights(tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(b"not the weights")
    with pytest.raises(ValueError, match=inception.INCEPTION_SHA256):
        inception.verify_weights(wrong)


@pytest.mark.slow  # the full-size Inception at 299²
def test_extractor_batches_and_restores_tf32(model, tmp_path):
    from core.features import load_extractor

    path = tmp_path / "w.pth"
    torch.save(model.state_dict(), path)
    spec = {"kind": "inception", "weights": str(path), "sha256": inception.file_sha256(path), "preprocessing": "tf"}
    extractor = load_extractor(spec)
    assert extractor.label["extractor"] == "inception-v3-fid" and extractor.label["preprocessing"] == "tf"
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    before = torch.backends.cuda.matmul.allow_tf32
    f1, l1 = extractor.extract(images, batch_size=2)
    f2, _ = extractor.extract(images, batch_size=3)
    assert f1.shape == (3, 2048) and l1.shape == (3, 1008) and f1.dtype == np.float64
    assert np.allclose(f1, f2, atol=1e-5)
    assert torch.backends.cuda.matmul.allow_tf32 == before
    with pytest.raises(ValueError, match="uint8"):
        extractor.extract(images.astype(np.float32))
    with pytest.raises(ValueError, match="SHA-256"):
        load_extractor({**spec, "sha256": "0" * 64})
