"""Kerani: digitise paper records with pre-OCR and a crowd of micro workers."""

from __future__ import annotations

__version__ = "0.1.0"
