"""The database tables. Migrations in storage/migrations create them; this is the live picture.

Machine predictions (ocr_readings, one row per engine's reading of a field) are kept apart
from human answers (answers); the settled value of a field (fields.value) records where it
came from (fields.source).
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    column,
)

from kerani.core.vocabulary import (
    AnswerKind,
    AuditAction,
    BatchStatus,
    FieldStatus,
    GoldOrigin,
    Language,
    PageStatus,
    PayKind,
    PaymentStatus,
    PayReason,
    Role,
    ScanStatus,
    Sensitivity,
    TaskKind,
    TaskStatus,
    UploadStatus,
    ValueKind,
    ValueSource,
)

# Indexes are named as SQLAlchemy names them by default; a CHECK constraint named "status"
# in table "tasks" is created as ck_tasks_status.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


def one_of(column_name: str, vocabulary: type[StrEnum]) -> CheckConstraint:
    """A CHECK that the column holds a member of `vocabulary` (or NULL, where it may)."""
    return CheckConstraint(
        column(column_name).in_([member.value for member in vocabulary]),
        name=column_name,
        info={"column": column_name, "vocabulary": vocabulary},
    )


# Every version of every template: its YAML as checked and stored, never a path (a path is
# only where one agency's file happened to be; the review page may run anywhere else).
# A version is never changed: editing a template stores a new one, and batches keep theirs.
templates = Table(
    "templates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("content", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("origin", Text, nullable=False),  # where it came from: a file name, "bundled", ...
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", Integer, ForeignKey("workers.id"), nullable=True),
    UniqueConstraint("name", "version", name="uq_templates_name_version"),
)

batches = Table(
    "batches",
    metadata,
    Column("id", String(32), primary_key=True),  # hash of the template and the files' hashes
    Column("template", String(100), nullable=False),  # the template's name
    # The stored version it was submitted (or last retried) with; empty only for batches
    # from before templates were stored, which name a bundled template or a file.
    Column("template_id", Integer, ForeignKey("templates.id"), nullable=True),
    Column("source", Text, nullable=False),
    Column("status", String(20), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The agency user who submitted it: only they (and operators) see its progress and report.
    Column("agency_id", Integer, ForeignKey("workers.id"), nullable=True, index=True),
    Column("name", String(200), nullable=True),  # the agency's own name for it (API, page)
    Column("webhook_url", Text, nullable=True),  # told when the batch is complete
    # The API token that created it: its secret signs the webhook.
    Column("token_id", Integer, ForeignKey("api_tokens.id"), nullable=True),
    Column("completed_at", DateTime(timezone=True), nullable=True),  # every document done
    Column("cancelled_at", DateTime(timezone=True), nullable=True),
    one_of("status", BatchStatus),
)

# An agency's API tokens: only the SHA-256 of each is kept (a token is shown once, when it
# is made); revoked_at stops it at once. The webhook secret signs the batches' webhooks
# (HMAC-SHA256): it is shown with the token, and kept, because signing needs it.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("agency_id", Integer, ForeignKey("workers.id"), nullable=False, index=True),
    Column("label", String(100), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("shown", String(16), nullable=False),  # its first characters, to tell tokens apart
    Column("webhook_secret", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", Integer, ForeignKey("workers.id"), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
)

# A file sent to an open batch in chunks: `received` bytes of `size` are in its staging
# file; a client that lost its line asks for `received` and goes on from there.
uploads = Table(
    "uploads",
    metadata,
    Column("id", String(32), primary_key=True),  # random, so ids cannot be guessed
    Column("batch_id", String(32), ForeignKey("batches.id"), nullable=False),
    Column("filename", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("received", BigInteger, nullable=False),
    Column("status", String(20), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("batch_id", "filename", name="uq_uploads_batch_filename"),
    one_of("status", UploadStatus),
)

# A webhook to deliver (one per batch and event), retried with a growing wait until the
# agency's server answers 2xx.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("batch_id", String(32), ForeignKey("batches.id"), nullable=False),
    Column("event", String(50), nullable=False),
    Column("body", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("batch_id", "event", name="uq_webhook_deliveries_batch_event"),
)

scans = Table(
    "scans",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("batch_id", String(32), ForeignKey("batches.id"), nullable=False),
    Column("filename", Text, nullable=False),
    Column("sha256", String(64), nullable=True),
    Column("size", Integer, nullable=False),
    Column("blob_key", Text, nullable=True),
    Column("status", String(20), nullable=False),  # accepted | rejected | duplicate
    Column("error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("batch_id", "filename", name="uq_scans_batch_filename"),
    one_of("status", ScanStatus),
)

pages = Table(
    "pages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("batch_id", String(32), ForeignKey("batches.id"), nullable=False),
    Column("scan_id", Integer, ForeignKey("scans.id"), nullable=False),
    Column("source_sha256", String(64), nullable=False),
    Column("page_index", Integer, nullable=False),
    Column("template", String(100), nullable=False),  # the template's name
    # The stored version the page was read with (see batches.template_id).
    Column("template_id", Integer, ForeignKey("templates.id"), nullable=True),
    Column("image_key", Text, nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    # ingested | ocred | ocr_failed | routed | complete | gold | duplicate
    Column("status", String(20), nullable=False),
    Column("error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # A scan the same agency sent before: this page is not read again, it gets a copy of
    # that page's record (status `duplicate`). Pages are unique per batch only, so another
    # agency's scan never stops, or reveals itself to, this one.
    Column("duplicate_of", Integer, ForeignKey("pages.id"), nullable=True, index=True),
    # Tesseract's language setting it was read with ('eng+msa'): the archive files say so.
    Column("ocr_languages", String(100), nullable=True),
    UniqueConstraint("batch_id", "source_sha256", "page_index", name="uq_pages_batch_content"),
    Index("ix_pages_source", "source_sha256", "page_index"),
    Index("ix_pages_batch_status", "batch_id", "status"),
    one_of("status", PageStatus),
)

fields = Table(
    "fields",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("page_id", Integer, ForeignKey("pages.id"), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("kind", String(30), nullable=False),
    Column("x0", Integer, nullable=False),
    Column("y0", Integer, nullable=False),
    Column("x1", Integer, nullable=False),
    Column("y1", Integer, nullable=False),
    # The guess reading's text and confidence (ocr_readings.is_guess), copied here: the
    # claim and settle statements (microtasks.leases, microtasks.settling) read them for
    # every task they hand out or count, and a join to ocr_readings there would cost each
    # of them. Written
    # together with the readings, by kerani.ocr.preocr.store_fields only.
    Column("ocr_text", Text, nullable=False),
    Column("ocr_confidence", Float, nullable=False),
    Column("snippet_key", Text, nullable=False),
    # pending | auto_accepted | in_review | settled
    Column("status", String(20), nullable=False),
    Column("value", Text, nullable=True),
    Column("value_kind", String(20), nullable=True),  # text | unreadable | blank
    Column("source", String(20), nullable=True),  # ocr | human
    Column("agreement", Float, nullable=True),
    Column("answer_count", Integer, nullable=False, default=0),
    Column("sensitivity", String(20), nullable=False, default="personal"),
    Column("validation_error", Text, nullable=True),
    # A known answer that tests workers, and where it came from (microtasks.gold).
    Column("gold_value", Text, nullable=True),
    Column("gold_origin", String(20), nullable=True),
    # An auto-accepted field sent to people blind anyway, to measure the rule (audit share).
    Column("audit", Boolean, nullable=False, default=False, server_default="0"),
    # The settled value's posterior under the consensus model (microtasks.consensus).
    Column("posterior", Float, nullable=True),
    # The group the OCR's guess is weighed in (template|field type|evidence), set by routing:
    # how often such guesses, once doubted, proved right (ocr_quality).
    Column("ocr_group", String(200), nullable=True),
    UniqueConstraint("page_id", "name", name="uq_fields_page_name"),
    one_of("status", FieldStatus),
    one_of("value_kind", ValueKind),
    one_of("source", ValueSource),
    one_of("sensitivity", Sensitivity),
    one_of("gold_origin", GoldOrigin),
)
# The gold fields only, by type: a gold claim reads these, not every field (0012).
Index(
    "ix_fields_gold",
    fields.c.kind,
    sqlite_where=fields.c.gold_value.is_not(None),
    postgresql_where=fields.c.gold_value.is_not(None),
)

# What each engine read for a field, apart from what people answered (Label Studio keeps
# predictions apart from annotations the same way). Exactly one reading per field is the
# guess: the text the review page pre-fills, and the one routing judges by its evidence.
ocr_readings = Table(
    "ocr_readings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("field_id", Integer, ForeignKey("fields.id"), nullable=False, index=True),
    Column("engine", String(50), nullable=False),  # name and version, e.g. tesseract-5.3.0
    Column("text", Text, nullable=False),
    Column("confidence", Float, nullable=False),  # 0-100
    # How the text was obtained, the group the calibration fits a floor for: page | agree |
    # reocr | disagree, with -ink, -num, -2agree or -2differ appended (kerani.ocr.calibration).
    Column("evidence", String(50), nullable=False),
    Column("is_guess", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
# At most one guess per field: routing joins on it and must find one row, not several.
Index(
    "uq_ocr_readings_guess",
    ocr_readings.c.field_id,
    unique=True,
    sqlite_where=ocr_readings.c.is_guess,
    postgresql_where=ocr_readings.c.is_guess,
)

workers = Table(
    "workers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("role", String(20), nullable=False),  # worker | operator | agency
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("trusted", Boolean, nullable=False, default=False),  # may arbitrate disputes
    Column("cleared", Boolean, nullable=False, default=False),  # may see restricted fields
    Column("quarantined", Boolean, nullable=False, default=False),  # gets no more tasks
    Column("pin_hash", String(200), nullable=True),  # scrypt of the worker's PIN
    Column("invite_hash", String(64), nullable=True, unique=True),  # until the invite is used
    Column("invite_expires_at", DateTime(timezone=True), nullable=True),
    Column("language", String(5), nullable=False, default="en"),  # en | ms, the worker's choice
    # Answers given, skips aside; kept by microtasks.answers as each is recorded.
    Column("answers_done", Integer, nullable=False, default=0, server_default="0"),
    # Passed the minimum of gold: until then answers are kept and paid, but are no votes.
    Column("proven", Boolean, nullable=False, default=False, server_default="0"),
    # Failed their last gold answer: gold comes more often until they pass one again.
    Column("suspect", Boolean, nullable=False, default=False, server_default="0"),
    # When the worker passed the practice round: until then they get no paid work.
    Column("practice_passed_at", DateTime(timezone=True), nullable=True),
    one_of("role", Role),
    one_of("language", Language),
)

# The practice round's answers (0019): a new worker's known-answer snippets, apart from the
# answers to real tasks (neither paid nor counted). One answer per item of a round; a failed
# round is tried again as the next round.
practice_answers = Table(
    "practice_answers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("worker_id", Integer, ForeignKey("workers.id"), nullable=False),
    Column("round", Integer, nullable=False),
    Column("item", String(40), nullable=False),  # the item's id in microtasks.practice
    Column("kind", String(20), nullable=False),  # value | unreadable | blank
    Column("value", Text, nullable=False),
    Column("correct", Boolean, nullable=False),
    Column("answered_at", DateTime(timezone=True), nullable=False),
    # Worker first: it also finds a worker's rounds.
    UniqueConstraint("worker_id", "round", "item", name="uq_practice_answers_item"),
    one_of("kind", AnswerKind),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", String(32), primary_key=True),  # random, so ids cannot be guessed
    Column("field_id", Integer, ForeignKey("fields.id"), nullable=True, unique=True),
    Column("gold_field_id", Integer, ForeignKey("fields.id"), nullable=True),
    # Claim order: escalated and nearly settled fields first (see microtasks.leases).
    Column("priority", Integer, nullable=False, default=0),
    Column("status", String(20), nullable=False),  # open | settled
    Column("lease_worker_id", Integer, ForeignKey("workers.id"), nullable=True),
    Column("lease_expires_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("settled_at", DateTime(timezone=True), nullable=True),
    Column("kind", String(20), nullable=False, default="field"),  # field | gold
    Column("escalated", Boolean, nullable=False, default=False),  # only trusted workers
    Column("restricted", Boolean, nullable=False, default=False),  # only cleared workers
    Column("gold_value", Text, nullable=True),  # the known answer of a gold task
    Column("note", Text, nullable=True),  # shown to the worker, e.g. the rule a value broke
    # The current lease's holder is shown the snippet without the OCR's guess.
    Column("lease_blind", Boolean, nullable=False, default=False, server_default="0"),
    # Answers given, votes or not (skips aside): caps how many on probation answer one task.
    Column("answers_given", Integer, nullable=False, default=0, server_default="0"),
    one_of("status", TaskStatus),
    one_of("kind", TaskKind),
)

# The claim order of microtasks.leases, read from the top: most urgent, then oldest.
Index(
    "ix_tasks_claim_order",
    tasks.c.status,
    tasks.c.kind,
    tasks.c.priority.desc(),
    tasks.c.created_at,
    tasks.c.id,
)
# A worker's leases (see storage/migrations/versions/0006_claim_indexes.py).
Index("ix_tasks_lease", tasks.c.lease_worker_id, tasks.c.lease_expires_at)

answers = Table(
    "answers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", String(32), ForeignKey("tasks.id"), nullable=False, index=True),
    Column("worker_id", Integer, ForeignKey("workers.id"), nullable=False),
    Column("kind", String(20), nullable=False),  # value | unreadable | blank | skip
    Column("value", Text, nullable=False),
    Column("idempotency_key", String(100), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("weight", Float, nullable=True),  # the worker's estimated accuracy when counted
    # What the page pre-filled (the OCR's guess; "" when shown blind) and the time from
    # showing the task to the submit: a confirmation is not blind keying (NULL: not said).
    Column("prefilled", Text, nullable=True),
    Column("duration_ms", Integer, nullable=True),
    # Shown without the OCR's guess (the server's record, from the lease; NULL: before 0011).
    Column("blind", Boolean, nullable=True),
    # One answer per worker and task; worker first, so it also finds a worker's answers.
    UniqueConstraint("worker_id", "task_id", name="uq_answers_worker_task"),
    one_of("kind", AnswerKind),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),  # sha256 of the cookie value
    Column("worker_id", Integer, ForeignKey("workers.id"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=True),  # for the idle timeout
)

signin_failures = Table(
    "signin_failures",
    metadata,
    Column("key", String(100), primary_key=True),  # worker:<number> | ip:<address> | invite:<ip>
    Column("failures", Integer, nullable=False),
    Column("window_started", DateTime(timezone=True), nullable=False),
    Column("locked_until", DateTime(timezone=True), nullable=True),
)

records = Table(
    "records",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("page_id", Integer, ForeignKey("pages.id"), nullable=False, unique=True),
    Column("batch_id", String(32), ForeignKey("batches.id"), nullable=False, index=True),
    Column("data", Text, nullable=False),  # JSON: {field: {value, kind, source, agreement, ...}}
    Column("assembled_at", DateTime(timezone=True), nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("worker_id", Integer, ForeignKey("workers.id"), nullable=True),
    Column("action", String(30), nullable=False),  # AuditAction: a worker's or an operator's act
    Column("task_id", String(32), nullable=True),
    Column("field_id", Integer, nullable=True),
    Column("detail", Text, nullable=True),
    one_of("action", AuditAction),
)

ledger = Table(
    "ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("worker_id", Integer, ForeignKey("workers.id"), nullable=False, index=True),
    # One payment per answer, whatever retries happen: the database refuses a second.
    Column("answer_id", Integer, ForeignKey("answers.id"), nullable=False, unique=True),
    Column("task_kind", String(20), nullable=False),
    Column("amount_sen", Integer, nullable=False),  # integer sen: no float money
    Column("batch_id", String(32), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Held until a check on the worker's work vouches for it (see microtasks.holds); the
    # field type is the rate's (and the statement's) kind.
    Column("status", String(10), nullable=False, default="held", server_default="credited"),
    Column(
        "reason", String(30), nullable=False, default="waiting_check", server_default="before_holds"
    ),
    Column("field_type", String(30), nullable=True),
    Column("settled_at", DateTime(timezone=True), nullable=True),  # credited or voided at
    Column("payout_id", Integer, ForeignKey("payouts.id"), nullable=True),
    one_of("task_kind", PayKind),
    one_of("status", PaymentStatus),
    one_of("reason", PayReason),
)
Index("ix_ledger_worker_status", ledger.c.worker_id, ledger.c.status)
Index("ix_ledger_status_payout", ledger.c.status, ledger.c.payout_id)

# The rate of each task kind (a field type, answered plainly or as an arbiter), as an
# operator confirmed it; the latest row of a kind is in force. A kind with no row is paid
# CrowdSettings' default rate.
pay_rates = Table(
    "pay_rates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("field_type", String(30), nullable=False),
    Column("pay_kind", String(20), nullable=False),  # field | arbitration (gold: field's)
    Column("rate_sen", Integer, nullable=False),
    Column("effective_from", DateTime(timezone=True), nullable=False),
    Column("confirmed_by", Integer, ForeignKey("workers.id"), nullable=True),
    # What the rate was proposed from: median time and how many timed answers measured it.
    Column("median_ms", Integer, nullable=True),
    Column("measured", Integer, nullable=True),
    Column("floor_sen_per_hour", Integer, nullable=True),
    one_of("pay_kind", PayKind),
)
Index("ix_pay_rates_kind", pay_rates.c.field_type, pay_rates.c.pay_kind, pay_rates.c.id)

# One payout: every credited payment not paid out before, up to the end of a period.
payouts = Table(
    "payouts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", Integer, ForeignKey("workers.id"), nullable=True),
    Column("total_sen", Integer, nullable=False),
    Column("workers", Integer, nullable=False),
)

worker_page_views = Table(
    "worker_page_views",
    metadata,
    Column("worker_id", Integer, ForeignKey("workers.id"), primary_key=True),
    Column("page_id", Integer, ForeignKey("pages.id"), primary_key=True),
    Column("fields_seen", Integer, nullable=False),
)

worker_quality = Table(
    "worker_quality",
    metadata,
    Column("worker_id", Integer, ForeignKey("workers.id"), primary_key=True),
    Column("field_type", String(30), primary_key=True),
    Column("gold_seen", Integer, nullable=False, default=0),
    Column("gold_correct", Integer, nullable=False, default=0),
    Column("agree_seen", Integer, nullable=False, default=0),
    Column("agree_correct", Integer, nullable=False, default=0),
    # Shown a pre-filled guess later known wrong, and how often the worker accepted it.
    Column("anchor_seen", Integer, nullable=False, default=0, server_default="0"),
    Column("anchor_accepted", Integer, nullable=False, default=0, server_default="0"),
    Column("accuracy", Float, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# How often the OCR guess of a field type agreed with what people settled on: the OCR is
# one more voter, and its weight is learned the same way as a worker's.
ocr_quality = Table(
    "ocr_quality",
    metadata,
    # The OCR group (fields.ocr_group: template|field type|evidence); a bare field type for
    # fields routed before revision 0011.
    Column("field_type", String(200), primary_key=True),
    Column("shard", Integer, primary_key=True),  # spreads concurrent updates over rows
    Column("seen", Integer, nullable=False, default=0),
    Column("correct", Integer, nullable=False, default=0),
)

# Staff keying a field blind, twice (rounds 1 and 2); where both agree, it becomes gold.
gold_keyings = Table(
    "gold_keyings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("field_id", Integer, ForeignKey("fields.id"), nullable=False),
    Column("round", Integer, nullable=False),
    Column("keyer_id", Integer, ForeignKey("workers.id"), nullable=False),
    Column("kind", String(20), nullable=False),  # value | unreadable | blank
    Column("value", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("field_id", "round", name="uq_gold_keyings_field_round"),
)

# Every refit of a template's auto-accept rule from fields people settled blind.
calibrations = Table(
    "calibrations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("template", String(100), nullable=False),
    Column("fitted_at", DateTime(timezone=True), nullable=False),
    Column("fields", Integer, nullable=False),  # how many settled fields it was fitted on
    Column("rules", Text, nullable=False),  # the ocr.calibration.Calibration as JSON
    Column("changes", Text, nullable=False),  # what changed from the refit before
)
Index("ix_calibrations_template", calibrations.c.template, calibrations.c.fitted_at)

# The transactional outbox of settled documents (0014): a row is written in the transaction
# that settles a page's last field, so no settle is ever without it, even if the process
# dies before anyone hears of it. A publisher sends the open rows to Prefect in one event
# (`publication`: the rows it carried); the run that reassembles them closes them
# (`done_at`, `outcome`); the reconcile flow takes what stayed open too long.
settle_outbox = Table(
    "settle_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("page_id", Integer, ForeignKey("pages.id"), nullable=False, index=True),
    Column("settled_at", DateTime(timezone=True), nullable=False),
    Column("publication", String(40), nullable=True),  # who took it: an event, inline, ...
    Column("published_at", DateTime(timezone=True), nullable=True),
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("done_at", DateTime(timezone=True), nullable=True),
    Column("outcome", String(20), nullable=True),  # assembled | sent_back | not_ready
)
# The open rows only, oldest first: what a publisher or the reconcile flow looks for.
Index(
    "ix_settle_outbox_open",
    settle_outbox.c.settled_at,
    sqlite_where=settle_outbox.c.done_at.is_(None),
    postgresql_where=settle_outbox.c.done_at.is_(None),
)
Index("ix_settle_outbox_publication", settle_outbox.c.publication)
