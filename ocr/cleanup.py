"""Page clean-up before OCR: greyscale and contrast stretch (deskew and denoise come later)."""

from __future__ import annotations

from PIL import Image, ImageOps


def clean_page(image: Image.Image) -> Image.Image:
    """Return a greyscale copy with its contrast stretched, which helps faint scans."""
    grey = image.convert("L")
    # A 1% cut ignores specks of dust and the darkest scanner edge when stretching.
    return ImageOps.autocontrast(grey, cutoff=1)
