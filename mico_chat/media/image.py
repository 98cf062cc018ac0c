"""Load images as RGB arrays, and depth and surface-normal maps as float arrays.

Pixel counts are checked from the header (PNG's IHDR, PIL's lazy open, the .npy header) before
any pixel is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image, ImageOps

from mico_chat.media.errors import MediaError, MediaLimits, MediaTooLargeError
from mico_chat.media.source import MediaSource, ResolvedSource, resolve_source

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"

# PIL formats never opened: EPS is rendered by running Ghostscript on the file.
REFUSED_PIL_FORMATS = frozenset({"EPS"})

# What PIL raises on broken input: truncated data (OSError), bad PNG chunks (SyntaxError), bad
# tiles or modes (ValueError), short reads (EOFError, struct.error), bad zlib streams, and its own
# bomb guard (DecompressionBombError, when more than twice Image.MAX_IMAGE_PIXELS).
PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)

# .npy normal maps may exceed [-1, 1] by float rounding of unit vectors; anything beyond is refused.
_NORMAL_RANGE_SLACK = 1e-3


def load_image(source: MediaSource, *, name: str | None = None, limits: MediaLimits = MediaLimits()) -> np.ndarray:
    """Decode an image (jpg, png, webp, gif, bmp, tiff, ... anything PIL opens but EPS).

    Returns ``(H, W, 3)`` uint8 RGB, upright (EXIF orientation applied). Conversions: L, P, CMYK
    and other modes to RGB; images with transparency (RGBA, LA, PA, P with a transparent colour)
    are composited onto white, as Hugging Face image processors do; 16-bit grey is scaled to 8 bits.
    Animated images give their first frame.

    Raises ``MediaError`` for a missing, empty, corrupt or unsupported file, a 32-bit integer or
    float image (use :func:`load_depth`), or more than ``limits.max_pixels`` pixels.
    """
    src = resolve_source(source, name, limits)
    with _open_pil(src, limits) as image:
        with _pil_errors(src.name):
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image, src.name)


def load_depth(
    source: MediaSource, *, scale: float = 1.0, name: str | None = None, limits: MediaLimits = MediaLimits()
) -> np.ndarray:
    """Load a depth map as ``(H, W)`` float32: the values as stored, times ``scale``.

    Accepted: 16-bit PNG (integers 0..65535), 8-bit PNG or other single-channel images (0..255),
    a grey image saved as RGB (all channels equal), and ``.npy`` arrays of shape ``(H, W)`` or
    ``(H, W, 1)`` (numeric dtype; loaded with ``allow_pickle=False``).

    Units: nothing is normalised. Datasets store depth in their own unit, e.g. millimetres in
    16-bit PNG (NYUv2, ScanNet): pass ``scale=1e-3`` for metres. Non-finite values in ``.npy``
    files (holes marked NaN) are kept as stored.

    Raises ``MediaError`` for a missing/empty/corrupt file, a shape or dtype that is not a depth
    map, a colour image with differing channels, or more than ``limits.max_pixels`` pixels.
    """
    src = resolve_source(source, name, limits)
    head = src.read_head(64)
    if head.startswith(NPY_MAGIC):
        array = _load_npy(src, limits)
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if array.ndim != 2:
            raise MediaError(src.name, f"a depth map has shape (H, W) or (H, W, 1); this array has shape {array.shape}")
    else:
        array = _load_integer_raster(src, head, limits)
        if array.ndim == 3:
            if not all(np.array_equal(array[:, :, 0], array[:, :, c]) for c in range(1, array.shape[2])):
                raise MediaError(
                    src.name,
                    f"a depth map has one channel; this image has {array.shape[2]} different channels "
                    "(a colour-mapped visualisation?)",
                )
            array = array[:, :, 0]
    depth = array.astype(np.float32)
    if scale != 1.0:
        depth *= np.float32(scale)
    return depth


def load_normal(source: MediaSource, *, name: str | None = None, limits: MediaLimits = MediaLimits()) -> np.ndarray:
    """Load a surface-normal map as ``(H, W, 3)`` float32 in [-1, 1].

    Accepted: 8-bit or 16-bit RGB PNG (or RGBA, alpha dropped; or any RGB image PIL opens), whose
    values 0..max (max = 255 or 65535) map linearly onto -1..1, i.e. ``v / max * 2 - 1``; and
    ``.npy`` float arrays of shape ``(H, W, 3)`` already in [-1, 1]. Vectors are not renormalised.

    Raises ``MediaError`` for a missing/empty/corrupt file, a shape that is not ``(H, W, 3)``, an
    ``.npy`` that is not float, holds non-finite values or leaves [-1, 1], or too many pixels.
    """
    src = resolve_source(source, name, limits)
    head = src.read_head(64)
    if head.startswith(NPY_MAGIC):
        array = _load_npy(src, limits)
        if array.ndim != 3 or array.shape[2] != 3:
            raise MediaError(src.name, f"a normal map has shape (H, W, 3); this array has shape {array.shape}")
        if array.dtype.kind != "f":
            raise MediaError(src.name, f"a .npy normal map holds floats in [-1, 1]; this one holds {array.dtype}")
        if not np.isfinite(array).all():
            raise MediaError(src.name, "the normal map holds non-finite values")
        low, high = float(array.min()), float(array.max())
        if low < -1 - _NORMAL_RANGE_SLACK or high > 1 + _NORMAL_RANGE_SLACK:
            raise MediaError(
                src.name, f"a .npy normal map holds values in [-1, 1]; this one spans [{low:.3g}, {high:.3g}]"
            )
        return np.clip(array, -1.0, 1.0).astype(np.float32)

    array = _load_integer_raster(src, head, limits)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise MediaError(src.name, f"a normal map is an RGB image; this one has shape {array.shape}")
    max_value = 65535.0 if array.dtype == np.uint16 else 255.0
    return (array[:, :, :3].astype(np.float32) * np.float32(2.0 / max_value) - 1.0).astype(np.float32)


# --- decoding helpers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PngHeader:
    width: int
    height: int
    bit_depth: int
    color_type: int  # 0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA

    @property
    def is_grey(self) -> bool:
        return self.color_type in (0, 4)


def png_header(head: bytes) -> PngHeader | None:
    """The IHDR fields of a PNG file from its first 33 bytes; ``None`` if it is not a PNG."""
    if not head.startswith(PNG_SIGNATURE) or len(head) < 29 or head[12:16] != b"IHDR":
        return None
    width, height, bit_depth, color_type = struct.unpack(">IIBB", head[16:26])
    return PngHeader(width, height, bit_depth, color_type)


def _load_integer_raster(src: ResolvedSource, head: bytes, limits: MediaLimits) -> np.ndarray:
    """An image's stored values: ``(H, W)`` or ``(H, W, C)``, uint16 for 16-bit PNG, else uint8
    (or int32/float32 for PIL's I and F modes). No colour conversion, no EXIF rotation."""
    png = png_header(head)
    if png is not None and png.bit_depth == 16:
        # PIL reduces 16-bit colour PNG to 8 bits; FFmpeg's PNG decoder keeps all 16.
        limits.check_pixels(src.name, png.width, png.height)
        return _decode_png16(src, png)
    with _open_pil(src, limits) as image, _pil_errors(src.name):
        if image.mode in ("P", "PA"):
            image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
        elif image.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
            image = image.convert("RGB" if image.mode != "1" else "L")
        return np.asarray(image)


def _decode_png16(src: ResolvedSource, png: PngHeader) -> np.ndarray:
    data = src.data if src.data is not None else _read_all(src)
    try:
        codec = av.CodecContext.create("png", "r")
        frames = codec.decode(av.Packet(data)) + codec.decode(None)
        if not frames:
            raise MediaError(src.name, "the PNG decoder returned no image")
        # Alpha is dropped: depth and normal maps keep their values in the colour channels.
        return frames[0].to_ndarray(format="gray16le" if png.is_grey else "rgb48le")
    except av.FFmpegError as err:
        raise MediaError(src.name, f"cannot decode 16-bit PNG: {err.strerror or err} (FFmpeg)") from err


def _read_all(src: ResolvedSource) -> bytes:
    with src.open_binary() as f:
        try:
            return f.read()
        except OSError as err:
            raise MediaError(src.name, f"cannot read: {err.strerror or err}") from err


@contextlib.contextmanager
def _pil_errors(name: str) -> Iterator[None]:
    try:
        yield
    except Image.DecompressionBombError as err:
        raise MediaTooLargeError(name, f"cannot decode image: {err} (a decompression bomb)") from err
    except PIL_ERRORS as err:
        raise MediaError(name, f"cannot decode image: {err} ({type(err).__name__})") from err


def identify_image(src: ResolvedSource, limits: MediaLimits) -> tuple[int, int] | None:
    """``(width, height)`` if PIL recognises the content as a picture, else ``None`` (not an error:
    the content may be audio or video). Only the header is read."""
    with src.open_binary() as file:
        try:
            image = Image.open(file)
        except Image.UnidentifiedImageError:
            return None
        except Image.DecompressionBombError as err:
            raise MediaTooLargeError(src.name, f"cannot open image: {err} (a decompression bomb)") from err
        except PIL_ERRORS as err:
            raise MediaError(src.name, f"cannot open image: {err} ({type(err).__name__})") from err
        with image:
            if image.format in REFUSED_PIL_FORMATS:
                raise MediaError(src.name, f"{image.format} images are not accepted")
            limits.check_pixels(src.name, *image.size)
            return image.size


@contextlib.contextmanager
def _open_pil(src: ResolvedSource, limits: MediaLimits) -> Iterator[Image.Image]:
    """Open with PIL, reading only the header, and check the pixel count before any decoding."""
    png = png_header(src.read_head(64))
    if png is not None:  # checked before PIL, whose own guard would answer first, less clearly
        limits.check_pixels(src.name, png.width, png.height)
    file = src.open_binary()
    try:
        try:
            image = Image.open(file)
        except Image.UnidentifiedImageError as err:
            raise MediaError(src.name, "not a recognisable image file") from err
        except Image.DecompressionBombError as err:
            raise MediaTooLargeError(src.name, f"cannot open image: {err} (a decompression bomb)") from err
        except PIL_ERRORS as err:
            raise MediaError(src.name, f"cannot open image: {err} ({type(err).__name__})") from err
        if image.format in REFUSED_PIL_FORMATS:
            raise MediaError(src.name, f"{image.format} images are not accepted")
        limits.check_pixels(src.name, *image.size)
        yield image
    finally:
        file.close()


def _to_rgb(image: Image.Image, name: str) -> np.ndarray:
    if image.mode.startswith("I;16"):
        grey = np.asarray(image).astype(np.float32)
        grey8 = np.round(grey / 257.0).astype(np.uint8)  # 65535 / 257 = 255
        return np.repeat(grey8[:, :, None], 3, axis=2)
    if image.mode in ("I", "F"):
        raise MediaError(name, f"is a {image.mode}-mode image (32-bit values, not a picture); load it with load_depth")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("RGB"))


def read_npy_shape(src: ResolvedSource, limits: MediaLimits) -> tuple[int, ...]:
    """The shape stated by a .npy header, after checking its pixel count and dtype (no data read)."""
    header_readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        with src.open_binary() as f:
            version = np.lib.format.read_magic(f)
            if version not in header_readers:
                raise MediaError(src.name, f"unsupported .npy format version {version}")
            shape, _, dtype = header_readers[version](f)
    except (ValueError, OSError, EOFError) as err:
        raise MediaError(src.name, f"cannot read .npy header: {err}") from err
    if len(shape) >= 2:
        limits.check_pixels(src.name, shape[1], shape[0])
    if dtype.kind not in "biuf":
        raise MediaError(src.name, f"holds {dtype} values, not numbers")
    return shape


def _load_npy(src: ResolvedSource, limits: MediaLimits) -> np.ndarray:
    """Load a .npy array without pickles, refusing it from its header if it has too many pixels."""
    read_npy_shape(src, limits)
    try:
        with src.open_binary() as f:
            return np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise MediaError(src.name, f"cannot read .npy array: {err}") from err
