"""Decode any image file to a 3 x H x W uint8 RGB tensor that looks as the file does in a viewer.

JPEG and plain PNG go through torchvision.io (twice as fast as PIL); palette and tRNS PNGs, which it
decodes wrong, and every other format go through PIL. Both turn the image upright by its EXIF orientation,
repeat grey to 3 channels, scale 16-bit to 8 (the high byte), and composite transparency on white paper
(a sketch with a transparent background must not turn into black ink on black).
"""
from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file

from engine.errors import UserError

DECODER = "exif+palette-2026-12"  # the decode rules' revision: caches of decoded pixels keep it in their key


def _to_rgb_uint8(img: torch.Tensor) -> torch.Tensor:
    if img.ndim == 4:  # an animated image: its first frame
        img = img[0]
    if img.dtype == torch.uint16:
        img = (img.to(torch.int32) >> 8).to(torch.uint8)
    elif img.dtype != torch.uint8:
        img = img.clamp(0, 255).to(torch.uint8)
    channels = img.shape[0]
    if channels in (2, 4):  # colour + alpha: composite on white, rounded as PIL's alpha_composite does
        colour, alpha = img[:-1].to(torch.int32), img[-1:].to(torch.int32)
        img = ((colour * alpha + 255 * (255 - alpha) + 127) // 255).to(torch.uint8)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return img.contiguous()


def _decode_with_pil(path: str) -> torch.Tensor:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode.startswith("I;16"):  # PIL's convert clips 16-bit at 255: keep the high byte instead
            arr = (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
        elif "A" in im.getbands() or "transparency" in im.info:  # alpha, or a palette / colour key tRNS
            arr = np.asarray(im.convert("RGBA"))
        else:
            arr = np.asarray(im.convert("RGB"))
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return _to_rgb_uint8(torch.from_numpy(arr.copy()))


def _torchvision_mode(data: torch.Tensor) -> ImageReadMode | None:
    """How torchvision decodes these bytes right, or None where it decodes them wrong (or not at all).

    JPEG: RGB (4 channels there mean CMYK, which the decoder converts). PNG: UNCHANGED, except palette
    images (1 channel of uninitialised memory) and a tRNS colour key (ignored): those go to PIL."""
    raw = memoryview(data.numpy())  # plain bytes: slicing a tensor costs microseconds per slice
    if raw[:2] == b"\xff\xd8":
        return ImageReadMode.RGB
    if raw[:8] != b"\x89PNG\r\n\x1a\n" or len(raw) < 33:
        return None
    if raw[25] == 3:  # IHDR colour type 3: palette
        return None
    pos = 8
    while pos + 8 <= len(raw):  # the chunks before the pixels: a tRNS chunk sits among them
        kind = bytes(raw[pos + 4:pos + 8])
        if kind == b"tRNS":
            return None
        if kind == b"IDAT":
            break
        pos += 12 + int.from_bytes(raw[pos:pos + 4], "big")
    return ImageReadMode.UNCHANGED


def load_image(path: str) -> torch.Tensor:
    """Read and decode `path` to an upright 3 x H x W uint8 tensor; a clear UserError if it cannot be read."""
    try:
        data = read_file(path)  # read once: the format check and the decoder share it
        mode = _torchvision_mode(data)
        if mode is not None:
            return _to_rgb_uint8(decode_image(data, mode=mode, apply_exif_orientation=True))
    except Exception:
        pass
    try:
        return _decode_with_pil(path)
    except FileNotFoundError:
        raise UserError(f"image '{path}' not found")
    except Exception as e:
        raise UserError(f"image '{path}' could not be decoded ({type(e).__name__}: {e}); "
                        f"set bad_images='skip' or remove it from the CSV") from e


def jpeg_damage(path: str) -> str | None:
    """Fully decode a JPEG; libjpeg's complaint if its data is corrupt, else None.

    A JPEG damaged in the middle still decodes (to garbage): libjpeg only prints a warning on stderr, which
    no Python API reports, so stderr is caught at the file-descriptor level for the duration of the decode."""
    sys.stderr.flush()
    with tempfile.TemporaryFile() as caught:
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            decode_jpeg(read_file(path))
        except RuntimeError as e:  # a JPEG flavour torchvision cannot decode (12-bit, ...) is fine if PIL can
            try:
                _decode_with_pil(path)
            except Exception:
                return str(e).splitlines()[0].rsplit(", ", 1)[-1]
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        said = caught.read().decode(errors="replace").strip()
    return said.splitlines()[0] if "corrupt" in said.lower() or "premature" in said.lower() else None
