"""Decode any image file to a 3 x H x W uint8 RGB tensor: torchvision.io first, PIL where it cannot.

Grayscale is repeated to 3 channels, 16-bit is scaled to 8, and transparency is composited on white
paper (a sketch with a transparent background must not turn into black ink on black).
"""
from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file

from engine.errors import UserError


def _to_rgb_uint8(img: torch.Tensor) -> torch.Tensor:
    if img.ndim == 4:  # an animated GIF: its first frame
        img = img[0]
    if img.dtype == torch.uint16:
        img = (img.to(torch.int32) >> 8).to(torch.uint8)
    elif img.dtype != torch.uint8:
        img = img.clamp(0, 255).to(torch.uint8)
    channels = img.shape[0]
    if channels in (2, 4):  # colour + alpha: composite on white
        colour, alpha = img[:-1].float(), img[-1:].float() / 255
        img = (colour * alpha + 255 * (1 - alpha)).round().to(torch.uint8)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return img.contiguous()


def _decode_with_pil(path: str) -> torch.Tensor:
    from PIL import Image
    with Image.open(path) as im:
        if im.mode == "P":
            im = im.convert("RGBA")
        elif im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.int64)
            scale = 65535 if arr.max() > 255 else 255
            return torch.from_numpy((arr * 255 // scale).astype(np.uint8))[None].expand(3, -1, -1).contiguous()
        elif im.mode not in ("RGB", "RGBA", "L", "LA"):
            im = im.convert("RGBA" if "A" in im.mode else "RGB")
        arr = np.asarray(im)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return _to_rgb_uint8(torch.from_numpy(arr.copy()))


def load_image(path: str) -> torch.Tensor:
    """Read and decode `path` to a 3 x H x W uint8 tensor; a clear UserError if it cannot be read."""
    try:
        data = read_file(path)  # read once: the magic bytes and the decoder share it
        is_jpeg = data[:2].tolist() == [0xFF, 0xD8]
        # JPEG has no alpha, and 4 channels there mean CMYK: let the decoder convert it
        return _to_rgb_uint8(decode_image(data, mode=ImageReadMode.RGB if is_jpeg else ImageReadMode.UNCHANGED))
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
