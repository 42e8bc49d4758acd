from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgevision.records import InputSpec


from edgevision.runtime.preprocess import plan, preprocess, resize, resize_nearest


def _spec(**kw: object) -> InputSpec:
    base = dict(size=(64, 96), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    base.update(kw)
    return InputSpec(**base)  # type: ignore[arg-type]


def test_upscale_matches_torch_bilinear(rng: np.random.Generator) -> None:
    img = rng.uniform(0, 255, size=(17, 23, 3)).astype(np.float32)
    ours = resize(img, 40, 57)
    ref = F.interpolate(torch.from_numpy(img).permute(2, 0, 1)[None], size=(40, 57), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(ours, ref[0].permute(1, 2, 0).numpy(), atol=1e-3)


def test_integer_downscale_is_block_mean(rng: np.random.Generator) -> None:
    img = rng.uniform(0, 255, size=(40, 60, 3)).astype(np.float32)
    expected = img.reshape(10, 4, 15, 4, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(resize(img, 10, 15), expected, rtol=1e-5, atol=1e-3)


def _torch_steps(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """The oracle: torch's bilinear (half-pixel centres), shrinking at most 2x per axis per step."""
    x = torch.from_numpy(img).permute(2, 0, 1)[None].double()
    h, w = img.shape[:2]
    while h >= 2 * height or w >= 2 * width:
        h, w = (h // 2 if h >= 2 * height else h), (w // 2 if w >= 2 * width else w)
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    return x[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("shape,size", [((50, 70), (20, 30)), ((427, 640), (214, 320)), ((101, 77), (13, 9)),
                                        ((720, 1280), (180, 320)), ((33, 40), (30, 12))])
def test_downscale_matches_torch_in_steps_and_keeps_constants(rng: np.random.Generator, shape: tuple,
                                                              size: tuple) -> None:
    img = rng.uniform(0, 255, size=(*shape, 3)).astype(np.float32)
    np.testing.assert_allclose(resize(img, *size), _torch_steps(img, *size), atol=2e-3)
    const = resize(np.full((*shape, 3), 42.0, dtype=np.float32), *size)
    np.testing.assert_allclose(const, 42.0, atol=1e-3)


@pytest.mark.parametrize("shape,size", [((720, 1280), (180, 320)), ((1080, 1920), (320, 320)), ((110, 77), (20, 13)),
                                        ((400, 400), (130, 130))])
def test_downscale_averages_every_pixel(rng: np.random.Generator, shape: tuple, size: tuple) -> None:
    """Shrinking white noise by an area factor a leaves std / sqrt(a) when every source pixel is
    averaged in (INTER_AREA's box): no aliasing from a sensor's fine texture. One bilinear step
    reads 4 pixels per output whatever the factor, and keeps 2-4x more of the noise."""
    img = rng.uniform(0, 255, size=(*shape, 3)).astype(np.float32)
    ideal = img.std() / np.sqrt(shape[0] * shape[1] / (size[0] * size[1]))
    assert resize(img, *size).std() <= 1.25 * ideal
    one_step = cv2.resize(img, size[::-1], interpolation=cv2.INTER_LINEAR)
    assert one_step.std() >= 1.9 * ideal  # the test has teeth: a plain bilinear resize does alias


def test_letterbox_plan_and_inverse() -> None:
    spec = _spec(size=(320, 320), resize="letterbox")
    t = plan(480, 640, spec)  # landscape: width fills, height padded
    assert (t.scale_x, t.scale_y) == (0.5, 0.5)
    assert (t.pad_x, t.pad_y) == (0, 40)
    assert t.content == (0, 40, 320, 280)
    boxes = np.array([[0, 40, 320, 280], [10, 50, 20, 60]], dtype=np.float32)
    np.testing.assert_allclose(t.to_original(boxes), [[0, 0, 640, 480], [20, 20, 40, 40]])


def test_letterbox_pads_with_pad_value() -> None:
    spec = _spec(size=(32, 32), resize="letterbox", pad_value=114, mean=(0, 0, 0), std=(1, 1, 1))
    img = np.full((16, 32, 3), 200, dtype=np.uint8)
    x, [t] = preprocess([img], spec)
    assert x.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(x[0, :, :8], 114 / 255, atol=1e-6)
    np.testing.assert_allclose(x[0, :, 8:24], 200 / 255, atol=1e-6)
    np.testing.assert_allclose(x[0, :, 24:], 114 / 255, atol=1e-6)


def test_stretch_normalise_channel_order_and_layout() -> None:
    img = np.zeros((8, 8, 3), dtype=np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 255, 128, 0
    rgb, _ = preprocess([img], _spec(size=(4, 4)))
    np.testing.assert_allclose(rgb[0, :, 0, 0], [(1 - 0.5) / 0.25, (128 / 255 - 0.5) / 0.25, (0 - 0.5) / 0.25], atol=1e-5)
    bgr, _ = preprocess([img], _spec(size=(4, 4), channel_order="bgr"))
    np.testing.assert_allclose(bgr[0, :, 0, 0], rgb[0, ::-1, 0, 0], atol=1e-6)
    nhwc, _ = preprocess([img], _spec(size=(4, 4), layout="nhwc"))
    assert nhwc.shape == (1, 4, 4, 3)
    np.testing.assert_allclose(nhwc[0], rgb[0].transpose(1, 2, 0))


@pytest.mark.parametrize("shape,size", [((5, 7), (10, 14)), ((9, 9), (3, 3))])
def test_resize_nearest_picks_pixel_centres(shape: tuple, size: tuple) -> None:
    labels = np.arange(np.prod(shape)).reshape(shape)
    out = resize_nearest(labels, *size)
    ref = F.interpolate(torch.from_numpy(labels)[None, None].double(), size=size, mode="nearest-exact")[0, 0].long().numpy()
    np.testing.assert_array_equal(out, ref)


def test_to_network_inverts_to_original() -> None:
    t = plan(480, 640, _spec(size=(320, 320), resize="letterbox"))
    boxes = np.array([[20, 20, 40, 40], [0, 0, 640, 480]], dtype=np.float32)
    np.testing.assert_allclose(t.to_network(boxes), [[10, 50, 20, 60], [0, 40, 320, 280]])
    np.testing.assert_allclose(t.to_original(t.to_network(boxes)), boxes, atol=1e-4)


def test_upsampled_argmax_is_bilinear_then_argmax(rng: np.random.Generator) -> None:
    from edgevision.runtime.postprocess import upsampled_argmax

    cases = [((5, 13, 17), (50, 70)), ((21, 40, 40), (30, 90)), ((2, 8, 8), (8, 8)), ((300, 9, 11), (45, 33))]
    for (c, h, w), (oh, ow) in cases:
        logits = rng.normal(size=(c, h, w)).astype(np.float32)
        up = F.interpolate(torch.from_numpy(logits)[None], size=(oh, ow), mode="bilinear", align_corners=False)[0]
        top2 = up.topk(2, dim=0).values
        clear = (top2[0] - top2[1] > 1e-4).numpy()  # float rounding can only flip near-ties
        ours = upsampled_argmax(logits, oh, ow)
        assert ours.shape == (oh, ow) and ours.dtype == np.int32 and clear.mean() > 0.99
        np.testing.assert_array_equal(ours[clear], up.argmax(dim=0).numpy()[clear])
        # every class shows up (the comparison had something in it); past 256 classes labels are kept in uint16
        assert len(np.unique(ours)) == c if c <= 21 else ours.max() > 255
    single = upsampled_argmax(rng.normal(size=(1, 4, 4)).astype(np.float32), 9, 9)
    assert single.shape == (9, 9) and not single.any()


@pytest.mark.parametrize("channel_order", ["rgb", "bgr"])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("resize_mode", ["stretch", "letterbox"])
def test_bgr_frames_give_the_same_batch_as_rgb(rng: np.random.Generator, channel_order: str, layout: str,
                                               resize_mode: str) -> None:
    """Video frames are BGR: reading their planes in the other order must equal converting them first."""
    spec = InputSpec((48, 64), (0.4, 0.5, 0.6), (0.2, 0.3, 0.4), channel_order=channel_order, resize=resize_mode,
                     layout=layout)
    rgb = rng.integers(0, 256, (75, 131, 3), dtype=np.uint8)
    expected, _ = preprocess([rgb], spec)
    got, _ = preprocess([np.ascontiguousarray(rgb[..., ::-1])], spec, bgr=True)
    assert np.array_equal(got, expected)
    assert not np.array_equal(preprocess([rgb], spec, bgr=True)[0], expected)  # the flag does change what is read


def test_large_label_map_never_holds_full_size_logits(rng: np.random.Generator) -> None:
    """Issue 15, item 5: a 4000x3000 label map from 21 classes without 21 full-size logit planes
    (1 GB in float32): peak memory is a small multiple of the label map itself."""
    import tracemalloc

    from edgevision.runtime.postprocess import upsampled_argmax

    logits = rng.normal(size=(21, 130, 173)).astype(np.float32)
    tracemalloc.start()
    try:
        labels = upsampled_argmax(logits, 3000, 4000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert labels.shape == (3000, 4000) and len(np.unique(labels)) == 21
    assert peak < 3.5 * labels.nbytes, f"peak {peak / 1e6:.0f} MB for a {labels.nbytes / 1e6:.0f} MB label map"
