"""Pixels: one image file to a tensor, and what is done to it.

- images: decoding (EXIF, palettes, transparency onto the paper colour), damaged-JPEG detection
- background: the paper colour of a data set, measured once, and the fill it gives
- transforms: the per-image training and eval transforms (workers, feature-store views, previews)
- device_augment: the same augmentation as one batched warp on the device
"""
