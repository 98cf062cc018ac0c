"""load_image, load_depth, load_normal: values, conversions, orientation and the pixel guard."""

from __future__ import annotations

import io
import time
import tracemalloc

import numpy as np
import pytest
from helpers.media_samples import png_bomb_bytes, png_bytes
from PIL import Image

from mico_chat.media import MediaError, MediaLimits, load_depth, load_image, load_normal


def _pattern(height: int = 24, width: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 7 % 256, y * 11 % 256, (x + y) * 5 % 256], axis=-1).astype(np.uint8)


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "fmt,kwargs,tolerance",
    [("PNG", {}, 0), ("WEBP", {"lossless": True}, 0), ("JPEG", {"quality": 95, "subsampling": 0}, 24), ("BMP", {}, 0)],
)
def test_rgb_formats(tmp_path, fmt, kwargs, tolerance):
    pattern = _pattern()
    path = tmp_path / f"pattern.{fmt.lower()}"
    path.write_bytes(_save(Image.fromarray(pattern), fmt, **kwargs))
    image = load_image(path)
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - pattern).max() <= tolerance
    if tolerance:
        assert np.abs(image.astype(int) - pattern).mean() < 4


def test_transparency_is_composited_onto_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (200, 10, 10, 255)  # opaque red stays red
    rgba[0, 1] = (200, 10, 10, 0)  # fully transparent becomes white
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black becomes mid grey
    image = load_image(_save(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_array_equal(image[0, 0], [200, 10, 10])
    np.testing.assert_array_equal(image[0, 1], [255, 255, 255])
    assert np.abs(image[1, 0].astype(int) - 127).max() <= 1


def test_grey_and_palette_images_become_rgb():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    image = load_image(_save(Image.fromarray(grey, "L"), "PNG"))
    np.testing.assert_array_equal(image, np.repeat(grey[:, :, None], 3, axis=2))

    palette_image = Image.fromarray(_pattern(4, 4)).quantize(colors=4)
    want = np.asarray(palette_image.convert("RGB"))
    np.testing.assert_array_equal(load_image(_save(palette_image, "PNG")), want)


def test_sixteen_bit_grey_is_scaled_to_eight_bits():
    grey = np.array([[0, 257, 65535]], np.uint16)
    np.testing.assert_array_equal(load_image(png_bytes(grey, 16))[0, :, 0], [0, 1, 255])


@pytest.mark.parametrize(
    "orientation,turn",
    [(1, lambda a: a), (3, lambda a: np.rot90(a, 2)), (6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1))],
)
def test_exif_orientation_is_applied(orientation, turn):
    pattern = np.zeros((24, 40, 3), np.uint8)
    pattern[:8, :8] = 255  # a white corner, top left as stored
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = load_image(_save(Image.fromarray(pattern), "JPEG", quality=95, exif=exif.tobytes()))
    want = turn(pattern)
    assert image.shape == want.shape
    assert np.abs(image.astype(int) - want).mean() < 3


def test_decompression_bomb_is_refused_from_the_header():
    bomb = png_bomb_bytes(200_000, 200_000)  # 40 gigapixels announced in a ~100-byte file
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(MediaError, match="200000x200000 = 40,000,000,000 pixels, over the limit"):
        load_image(bomb, name="bomb.png")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert time.perf_counter() - started < 1.0 and peak < 5_000_000
    for loader in (load_depth, load_normal):
        with pytest.raises(MediaError, match="over the limit"):
            loader(bomb)


@pytest.mark.parametrize("width,height,message", [
    (10_000, 10_000, "10000x10000 = 100,000,000 pixels, over the limit of 64,000,000"),  # our guard
    (60_000, 60_000, "could be decompression bomb"),  # past PIL's own guard, which answers first
])  # fmt: skip
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL warns past 89 Mpx; we refuse
def test_jpeg_bomb_is_refused_from_the_header(width, height, message):
    jpeg = bytearray(_save(Image.fromarray(_pattern(8, 8)), "JPEG"))
    sof = jpeg.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    jpeg[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    with pytest.raises(MediaError, match=message):
        load_image(bytes(jpeg), name="bomb.jpg")


def test_pixel_limit_is_configurable():
    image = png_bytes(np.zeros((100, 100), np.uint8), 8)
    with pytest.raises(MediaError, match="10,000 pixels, over the limit of 9,999"):
        load_image(image, limits=MediaLimits(max_pixels=9_999))
    assert load_image(image, limits=MediaLimits(max_pixels=10_000)).shape == (100, 100, 3)


def test_32_bit_images_are_refused_by_load_image():
    with pytest.raises(MediaError, match="F-mode image"):
        load_image(_save(Image.fromarray(np.ones((4, 4), np.float32)), "TIFF"))


# --- depth ----------------------------------------------------------------------------------------


def test_depth_16_bit_png_keeps_the_stored_values():
    stored = np.array([[0, 1, 1000], [40000, 65534, 65535]], np.uint16)
    depth = load_depth(png_bytes(stored, 16))
    assert depth.dtype == np.float32 and depth.shape == (2, 3)
    np.testing.assert_array_equal(depth, stored.astype(np.float32))
    np.testing.assert_allclose(load_depth(png_bytes(stored, 16), scale=1e-3), stored * 1e-3, rtol=1e-6)


def test_depth_8_bit_png_and_grey_saved_as_rgb():
    stored = np.array([[0, 7, 255]], np.uint8)
    np.testing.assert_array_equal(load_depth(png_bytes(stored, 8)), [[0.0, 7.0, 255.0]])
    as_rgb = np.repeat(stored[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(load_depth(png_bytes(as_rgb, 8)), [[0.0, 7.0, 255.0]])


def test_depth_from_colour_image_is_refused():
    with pytest.raises(MediaError, match="3 different channels"):
        load_depth(png_bytes(_pattern(4, 4), 8), name="colourmap.png")


@pytest.mark.parametrize("shape", [(3, 5), (3, 5, 1)])
def test_depth_npy(tmp_path, shape):
    values = np.arange(15, dtype=np.float64).reshape(shape) / 7
    path = tmp_path / "depth.npy"
    np.save(path, values)
    depth = load_depth(path)
    assert depth.shape == (3, 5) and depth.dtype == np.float32
    np.testing.assert_allclose(depth, values.reshape(3, 5), rtol=1e-6)


def test_depth_npy_with_wrong_shape_or_pickles_is_refused(tmp_path):
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4)))
    with pytest.raises(MediaError, match=r"shape \(H, W\) or \(H, W, 1\); this array has shape \(2, 3, 4\)"):
        load_depth(tmp_path / "cube.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MediaError, match="holds object values"):
        load_depth(tmp_path / "objects.npy")


# --- normals --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits,max_value", [(8, 255), (16, 65535)])
def test_normal_png_maps_zero_to_max_onto_minus_one_to_one(bits, max_value):
    stored = np.array([[[0, max_value, max_value // 2]]], np.uint16 if bits == 16 else np.uint8)
    normal = load_normal(png_bytes(stored, bits))
    assert normal.shape == (1, 1, 3) and normal.dtype == np.float32
    np.testing.assert_allclose(normal[0, 0], [-1.0, 1.0, (max_value // 2) / max_value * 2 - 1], atol=1e-6)


def test_normal_npy_in_range(tmp_path):
    vectors = np.array([[[0.0, 0.0, 1.0], [0.6, -0.8, 0.0]]], np.float32)
    np.save(tmp_path / "normal.npy", vectors)
    np.testing.assert_array_equal(load_normal(tmp_path / "normal.npy"), vectors)


@pytest.mark.parametrize("array,message", [
    (np.full((2, 2, 3), 2.0), r"spans \[2, 2\]"),
    (np.zeros((2, 2)), r"shape \(H, W, 3\)"),
    (np.zeros((2, 2, 3), np.uint8), "holds floats"),
    (np.full((2, 2, 3), np.nan), "non-finite"),
])  # fmt: skip
def test_bad_normal_npy_is_refused(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(MediaError, match=message):
        load_normal(tmp_path / "bad.npy")


def test_grey_png_is_not_a_normal_map():
    with pytest.raises(MediaError, match="is an RGB image"):
        load_normal(png_bytes(np.zeros((2, 2), np.uint8), 8))
