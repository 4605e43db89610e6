"""A batch's deliverables for download: written afresh, then served by name.

The agency API and the batch's downloads page both serve them; a name is served only when
it is one of the keys under the batch's export folder, never a path made up from a URL.
"""

from __future__ import annotations

import mimetypes

from fastapi.responses import Response

from kerani.core.errors import NotFoundError
from kerani.records.archive import write_archive_files
from kerani.records.exports import export_batch
from kerani.storage.stores import Stores


def export_keys(stores: Stores, batch_id: str, ocr_languages: str | None) -> list[str]:
    """Write the batch's exports and archive files afresh (hOCR, ALTO, PDF/A, named with
    the OCR's languages); every key under its folder."""
    export_batch(stores.db, stores.blobs, batch_id)
    write_archive_files(stores.db, stores.blobs, batch_id, ocr_languages)
    return list(stores.blobs.list(f"exports/{batch_id}/"))


def export_file(stores: Stores, batch_id: str, name: str, ocr_languages: str | None) -> Response:
    """One deliverable of the batch, as an attachment; NotFoundError for any other name."""
    key = f"exports/{batch_id}/{name}"
    # Written before, or else now (a name not there even then is unknown).
    listed = set(stores.blobs.list(f"exports/{batch_id}/"))
    if key not in listed and key not in set(export_keys(stores, batch_id, ocr_languages)):
        raise NotFoundError(f"no export {name!r}")
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    filename = name.rsplit("/", 1)[-1].replace('"', "")
    return Response(
        stores.blobs.get(key),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
