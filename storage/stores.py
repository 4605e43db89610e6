"""Open the database and the blob store named by the settings, together."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from kerani.core.settings import Settings
from kerani.storage.blobs import BlobStore, open_blob_store
from kerani.storage.database import open_engine


@dataclass(frozen=True)
class Stores:
    """The two places Kerani keeps state."""

    db: Engine
    blobs: BlobStore


def open_stores(settings: Settings) -> Stores:
    """Open (and migrate, once per process) the database, and open the blob store."""
    return Stores(db=open_engine(settings.database_url), blobs=open_blob_store(settings))
