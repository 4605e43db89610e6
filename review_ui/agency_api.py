"""The agency API under /api/v1: batches made, filled, started, followed and downloaded.

A program calls it with an API token of its agency (`Authorization: Bearer kt_...`, made
on the Tokens page or with `kerani token create`); the agency's upload page calls it with
its session cookie and the session's CSRF token in `X-CSRF-Token`. Either way every route
acts for that one agency: another agency's batch or upload answers exactly as one that does
not exist (404, the same words), and ids are whole ids, never prefixes.

Bodies are read after the caller is known: an anonymous request is refused before a byte
of its body is parsed. Whole files go up as multipart (`POST /api/v1/uploads/{batch}/files`,
several at once, streamed to disk and then the blob store); big files, or files on a weak
line, in chunks: `POST /api/v1/uploads/{batch}/chunked` with the name and size gives an
upload id, then each `PATCH /api/v1/uploads/chunks/{id}` carries `Upload-Offset` and the
next bytes; `GET` of the upload says how far it got, which is where a client that lost
its line goes on from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from kerani.core.errors import BadInputError, ForbiddenError, TemplateError
from kerani.core.vocabulary import Role
from kerani.flows.retrying import BatchRuns
from kerani.flows.webhooks import check_webhook_url
from kerani.forms.catalogue import stored_template, template_versions
from kerani.ingest.cancel import cancel_batch
from kerani.ingest.intake import (
    add_file,
    agency_batch,
    agency_upload,
    append_chunk,
    batch_files,
    begin_intake,
    create_open_batch,
    open_batch,
    set_s3_source,
    start_upload,
)
from kerani.people.api_tokens import TOKEN_PREFIX, token_holder
from kerani.records.listing import batch_documents
from kerani.records.progress import batch_progress
from kerani.review_ui.downloads import export_file, export_keys
from kerani.review_ui.limits import BodyTooLarge
from kerani.review_ui.web import check_csrf, db_of, need_role, page_session, settings_of

router = APIRouter(prefix="/api/v1", tags=["agency"])
# At most this many files in one multipart request (a folder goes up in several).
MAX_FILES_PER_REQUEST = 200


@dataclass(frozen=True)
class AgencyCaller:
    """Who calls: the agency, and the token it used (None: the upload page's session)."""

    agency_id: int
    token_id: int | None


def agency_caller(request: Request) -> AgencyCaller:
    """The agency a request acts for, from its API token or its signed-in agency session
    (whose changes must carry the session's CSRF token)."""
    auth = request.headers.get("authorization", "")
    if auth:
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX):
            raise ForbiddenError("send 'Authorization: Bearer <API token>' (kt_...)")
        holder = token_holder(db_of(request), token)
        return AgencyCaller(holder.agency_id, holder.token_id)
    person, csrf = page_session(request)
    need_role(person, Role.AGENCY)
    if request.method not in ("GET", "HEAD"):
        check_csrf(request.headers.get("x-csrf-token", ""), csrf)
    return AgencyCaller(person.id, None)


class BatchIn(BaseModel):
    """A batch to create."""

    name: str = Field(description="The agency's own name for the batch (1-200 characters)")
    template: str = Field(description="A stored template: NAME or NAME:VERSION")
    webhook_url: str | None = Field(
        default=None, description="Told (POST, signed) when every document is done"
    )


class S3In(BaseModel):
    """An S3 prefix a batch's scans are read from."""

    s3_url: str = Field(description="s3://bucket/<agency name>/... in an allowed bucket")


class ChunkedIn(BaseModel):
    """A file to send in chunks."""

    filename: str = Field(description="Its name in the batch; folders as a/b.png")
    size: int = Field(ge=0, description="Its size in bytes")


def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    # The bodies are read by the routes themselves (after the caller is known); this is how
    # the API's description shows them.
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def _parse(model: type[BaseModel], body: bytes) -> Any:
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "body"
        raise BadInputError(f"{where}: {first['msg']}") from e


async def _small_body(request: Request, cap: int = 64 * 1024) -> bytes:
    """A JSON body, read up to `cap` bytes (the upload routes' own limit is far larger)."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > cap:
            raise BodyTooLarge(cap)
    return bytes(data)


def _runs(request: Request) -> BatchRuns:
    runs: BatchRuns = request.app.state.retries
    return runs


def _staging(request: Request) -> Path:
    return settings_of(request).core.data_dir / "uploads"


def _batch_view(request: Request, batch_id: str, agency_id: int) -> dict[str, Any]:
    (progress,) = batch_progress(db_of(request), batch_id, agency_id=agency_id)
    progress["files"] = batch_files(db_of(request), batch_id)
    progress["links"] = {
        "self": f"/api/v1/batches/{batch_id}",
        "records": f"/api/v1/batches/{batch_id}/records",
        "exports": f"/api/v1/batches/{batch_id}/exports",
        "files": f"/api/v1/uploads/{batch_id}/files",
        "chunked": f"/api/v1/uploads/{batch_id}/chunked",
        "start": f"/api/v1/batches/{batch_id}/start",
        "cancel": f"/api/v1/batches/{batch_id}/cancel",
    }
    return progress


@router.get("/templates")
def list_templates(request: Request) -> list[dict[str, Any]]:
    """The stored template versions a batch can be read with."""
    caller = agency_caller(request)
    return [
        {"template": v.ref, "name": v.name, "version": v.version}
        for v in template_versions(db_of(request), agency_id=caller.agency_id)
    ]


@router.post("/batches", status_code=201, openapi_extra=_schema_of(BatchIn))
async def create_batch(request: Request) -> JSONResponse:
    """Create an empty, named batch read with a stored template version (status open)."""
    caller = await run_in_threadpool(agency_caller, request)
    wanted: BatchIn = _parse(BatchIn, await _small_body(request))

    def work() -> dict[str, Any]:
        db = db_of(request)
        try:
            template = stored_template(db, wanted.template.strip(), caller.agency_id)
        except TemplateError as e:  # the caller's pick, not a broken template on the server
            raise BadInputError(f"template: {e}") from e
        hook = None
        if wanted.webhook_url and caller.token_id is None:
            # Its notice is signed with the secret of the token that made the batch.
            raise BadInputError("webhook_url: only a batch made with an API token has one")
        if wanted.webhook_url:
            allow = settings_of(request).api.webhook_allow_private
            hook = check_webhook_url(wanted.webhook_url, allow)
        batch_id = create_open_batch(
            db, template, caller.agency_id, wanted.name, hook, caller.token_id
        )
        return _batch_view(request, batch_id, caller.agency_id)

    return JSONResponse(await run_in_threadpool(work), status_code=201)


@router.get("/batches")
def list_batches(request: Request, offset: int = 0, limit: int = 50) -> dict[str, Any]:
    """This agency's batches, newest first, with their progress."""
    caller = agency_caller(request)
    if offset < 0 or not 1 <= limit <= 200:
        raise BadInputError("offset from 0, limit from 1 to 200")
    batches = batch_progress(db_of(request), agency_id=caller.agency_id)
    return {"total": len(batches), "batches": batches[offset : offset + limit]}


@router.get("/batches/{batch_id}")
def read_batch(request: Request, batch_id: str) -> dict[str, Any]:
    """One batch: its status, progress, files, failed pages with reasons, and links."""
    caller = agency_caller(request)
    agency_batch(db_of(request), batch_id, caller.agency_id)
    return _batch_view(request, batch_id, caller.agency_id)


@router.post("/batches/{batch_id}/s3", openapi_extra=_schema_of(S3In))
async def point_at_s3(request: Request, batch_id: str) -> dict[str, Any]:
    """Read an open batch's scans from an S3 prefix when it is started."""
    caller = await run_in_threadpool(agency_caller, request)
    wanted: S3In = _parse(S3In, await _small_body(request))

    def work() -> dict[str, Any]:
        api = settings_of(request).api
        set_s3_source(db_of(request), batch_id, caller.agency_id, wanted.s3_url, api)
        return _batch_view(request, batch_id, caller.agency_id)

    result: dict[str, Any] = await run_in_threadpool(work)
    return result


@router.post("/batches/{batch_id}/start", status_code=202)
def start_batch(request: Request, batch_id: str) -> JSONResponse:
    """Start reading an open batch's files: pre-OCR, then micro tasks for people."""
    caller = agency_caller(request)
    db = db_of(request)
    begin_intake(db, batch_id, caller.agency_id)
    where = _runs(request).start_processing(settings_of(request), batch_id)
    view = _batch_view(request, batch_id, caller.agency_id)
    return JSONResponse(view | {"run": where}, status_code=202)


@router.post("/batches/{batch_id}/cancel")
def cancel(request: Request, batch_id: str) -> dict[str, Any]:
    """Cancel a batch: nothing more is read, its open tasks are withdrawn."""
    caller = agency_caller(request)
    agency_batch(db_of(request), batch_id, caller.agency_id)
    withdrawn = cancel_batch(db_of(request), batch_id)
    return _batch_view(request, batch_id, caller.agency_id) | {"tasks_withdrawn": withdrawn}


@router.get("/batches/{batch_id}/records")
def list_records(
    request: Request, batch_id: str, status: str | None = None, page: int = 1, per_page: int = 50
) -> dict[str, Any]:
    """The batch's documents, paged, with status done / waiting / failed (filter by it)."""
    caller = agency_caller(request)
    agency_batch(db_of(request), batch_id, caller.agency_id)
    return batch_documents(db_of(request), batch_id, status, page, per_page)


@router.get("/batches/{batch_id}/exports")
def list_exports(request: Request, batch_id: str) -> dict[str, Any]:
    """Every deliverable of the batch, written afresh: records in each format, per-page
    text layers; each with its download link."""
    caller = agency_caller(request)
    agency_batch(db_of(request), batch_id, caller.agency_id)
    prefix = f"exports/{batch_id}/"
    files = [
        key[len(prefix) :]
        for key in export_keys(
            request.app.state.stores, batch_id, settings_of(request).ocr.languages
        )
    ]
    return {
        "batch_id": batch_id,
        "files": [
            {"name": name, "url": f"/api/v1/batches/{batch_id}/exports/{name}"} for name in files
        ],
    }


@router.get("/batches/{batch_id}/exports/{name:path}")
def download_export(request: Request, batch_id: str, name: str) -> Response:
    """One deliverable of the batch (as listed by its exports)."""
    caller = agency_caller(request)
    agency_batch(db_of(request), batch_id, caller.agency_id)
    return export_file(request.app.state.stores, batch_id, name, settings_of(request).ocr.languages)


@router.post("/uploads/{batch_id}/files", status_code=201)
async def upload_files(request: Request, batch_id: str) -> JSONResponse:
    """Add files to an open batch (multipart/form-data, field `files`, several at once;
    a part's file name may hold folders: scans/a.png). Zips are expanded when read."""
    caller = await run_in_threadpool(agency_caller, request)
    # Open, and this agency's, before a byte of the files is parsed.
    await run_in_threadpool(open_batch, db_of(request), batch_id, caller.agency_id)
    try:
        form = await request.form(max_files=MAX_FILES_PER_REQUEST, max_fields=20)
    except HTTPException:
        raise  # a body over its limit: 413, said as such
    except Exception as e:  # python-multipart's and Starlette's parse errors
        raise BadInputError(f"body: not a readable multipart form ({e})") from e
    try:
        parts = [p for p in form.getlist("files") if isinstance(p, UploadFile)]
        if not parts:
            raise BadInputError("files: send one or more files in the form field 'files'")
        settings = settings_of(request)
        stores = request.app.state.stores

        def work() -> list[dict[str, Any]]:
            stored = []
            for part in parts:
                got = add_file(
                    stores.db,
                    stores.blobs,
                    batch_id,
                    caller.agency_id,
                    part.filename or "",
                    part.file,
                    settings.ingest,
                    _staging(request),
                )
                stored.append({"name": got.name, "size": got.size, "sha256": got.sha256})
            return stored

        stored = await run_in_threadpool(work)
    finally:
        await form.close()
    return JSONResponse({"batch_id": batch_id, "stored": stored}, status_code=201)


def _upload_view(row: Any) -> dict[str, Any]:
    return {
        "upload_id": row.id,
        "batch_id": row.batch_id,
        "name": row.filename,
        "size": row.size,
        "received": row.received,
        "status": row.status,
        "url": f"/api/v1/uploads/chunks/{row.id}",
    }


@router.post("/uploads/{batch_id}/chunked", status_code=201, openapi_extra=_schema_of(ChunkedIn))
async def begin_chunked(request: Request, batch_id: str) -> JSONResponse:
    """Begin (or resume: same name and size) a file sent in chunks; its upload id and the
    offset to send from."""
    caller = await run_in_threadpool(agency_caller, request)
    wanted: ChunkedIn = _parse(ChunkedIn, await _small_body(request))

    def work() -> dict[str, Any]:
        row = start_upload(
            db_of(request),
            batch_id,
            caller.agency_id,
            wanted.filename,
            wanted.size,
            settings_of(request).ingest,
        )
        return _upload_view(row)

    return JSONResponse(await run_in_threadpool(work), status_code=201)


@router.get("/uploads/chunks/{upload_id}")
def chunked_state(request: Request, upload_id: str) -> dict[str, Any]:
    """How far a chunked upload got (`received` is the offset to send from)."""
    caller = agency_caller(request)
    return _upload_view(agency_upload(db_of(request), upload_id, caller.agency_id))


@router.patch("/uploads/chunks/{upload_id}")
async def send_chunk(request: Request, upload_id: str) -> dict[str, Any]:
    """The next bytes of a chunked upload, at the offset in the `Upload-Offset` header; a
    chunk at another offset than the server's is refused (409, naming the offset)."""
    caller = await run_in_threadpool(agency_caller, request)
    raw = request.headers.get("upload-offset", "")
    if not (raw.isascii() and raw.isdigit()):
        raise BadInputError("Upload-Offset: give the byte offset of this chunk")
    await run_in_threadpool(agency_upload, db_of(request), upload_id, caller.agency_id)
    data = await request.body()
    stores = request.app.state.stores

    def work() -> dict[str, Any]:
        row = append_chunk(
            stores.db, stores.blobs, upload_id, caller.agency_id, int(raw), data, _staging(request)
        )
        return _upload_view(row)

    result: dict[str, Any] = await run_in_threadpool(work)
    return result
