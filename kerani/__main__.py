"""`python -m kerani` runs the CLI."""

from __future__ import annotations

from kerani.cli import main

main()
