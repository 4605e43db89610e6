"""Image clean-up, OCR engines (Tesseract first), words to fields, snippet cropping."""
