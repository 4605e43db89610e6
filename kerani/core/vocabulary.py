"""The closed sets of values that database columns hold: one enumeration per vocabulary.

Each member equals its string (`TaskStatus.OPEN == "open"`), so a value read back from the
database compares equal to the member, and a member can be written wherever the string was.
storage.schema turns each vocabulary into a CHECK constraint on its column.
"""

from __future__ import annotations

from enum import StrEnum


class BatchStatus(StrEnum):
    """Whether a batch's files are still being taken in (batches.status)."""

    OPEN = "open"  # created through the agency API: takes uploads until it is started
    INGESTING = "ingesting"
    INGESTED = "ingested"
    CANCELLED = "cancelled"  # its open tasks withdrawn, nothing more read or asked


class UploadStatus(StrEnum):
    """A file sent to an open batch in chunks (uploads.status)."""

    RECEIVING = "receiving"
    COMPLETE = "complete"


class ScanStatus(StrEnum):
    """Whether a submitted file was taken in or refused, with the reason (scans.status)."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"


class PageStatus(StrEnum):
    """A page's way from its rendered image to its assembled record (pages.status)."""

    INGESTED = "ingested"
    OCRED = "ocred"  # its fields cut out and read by the pre-OCR
    OCR_FAILED = "ocr_failed"  # unreadable as a whole (pages.error says why); no fields
    ROUTED = "routed"  # each field accepted from the OCR or given a task for people
    COMPLETE = "complete"  # its record assembled
    GOLD = "gold"  # its fields turned into gold snippets: it never becomes a record
    # The same scan page as one its agency sent before (pages.duplicate_of): not read
    # again, its record is a copy of that page's.
    DUPLICATE = "duplicate"


class FieldStatus(StrEnum):
    """Where a field's value stands (fields.status)."""

    PENDING = "pending"  # read by the OCR, not routed yet
    AUTO_ACCEPTED = "auto_accepted"  # the OCR was sure enough that no person is asked
    IN_REVIEW = "in_review"  # a task for people is open
    SETTLED = "settled"  # by people
    GOLD = "gold"  # a gold snippet: its known answer tests workers


class ValueKind(StrEnum):
    """What a settled field holds: a text, or the verdict that it has none (fields.value_kind)."""

    TEXT = "text"
    UNREADABLE = "unreadable"
    BLANK = "blank"


class ValueSource(StrEnum):
    """Where a field's settled value came from (fields.source)."""

    OCR = "ocr"
    HUMAN = "human"  # the weighted agreement of workers
    ARBITRATED = "arbitrated"  # a trusted worker decided a dispute
    GOLD = "gold"  # the known answer the operator gave


class GoldOrigin(StrEnum):
    """Where a gold snippet's known answer came from (fields.gold_origin)."""

    TRUTH = "truth"  # a truth folder: the demo's and the benchmarks' stand-in only
    STAFF = "staff"  # staff keyed the field blind, twice, and agreed
    CROWD = "crowd"  # settled by strong independent evidence: proven workers keying blind


class Role(StrEnum):
    """What a person does: key fields, run the engine, or submit batches (workers.role)."""

    WORKER = "worker"
    OPERATOR = "operator"
    AGENCY = "agency"


class Language(StrEnum):
    """The languages of the pages a person may choose (workers.language)."""

    ENGLISH = "en"
    MALAY = "ms"


class TaskStatus(StrEnum):
    """Whether a task still takes answers (tasks.status)."""

    OPEN = "open"
    SETTLED = "settled"
    WITHDRAWN = "withdrawn"  # its batch was cancelled: nobody is asked any more


class TaskKind(StrEnum):
    """An ordinary task of a field, or a gold snippet that tests a worker (tasks.kind)."""

    FIELD = "field"
    GOLD = "gold"


class AnswerKind(StrEnum):
    """What a worker answered: a value, unreadable, blank, or a pass (answers.kind)."""

    VALUE = "value"
    UNREADABLE = "unreadable"
    BLANK = "blank"
    SKIP = "skip"  # passed on to others: neither counted nor paid


class PayKind(StrEnum):
    """The rate an answer is paid at (ledger.task_kind)."""

    FIELD = "field"
    GOLD = "gold"
    ARBITRATION = "arbitration"  # an answer to an escalated (disputed) task


class PaymentStatus(StrEnum):
    """Where one answer's pay stands (ledger.status)."""

    # Earned, waiting for a check on the worker's work (a passed gold, or the hold's end).
    HELD = "held"
    CREDITED = "credited"  # owed to the worker: goes into the next payout
    VOIDED = "voided"  # not paid: the worker was paused on failed checks


class PayReason(StrEnum):
    """Why a payment stands where it does (ledger.reason), as the worker's statement says."""

    WAITING_CHECK = "waiting_check"
    CHECK_PASSED = "check_passed"  # a passed gold after the answer vouches for it
    HOLD_ENDED = "hold_ended"  # no check came within the hold: paid on trust
    PAUSED_ON_CHECKS = "paused_on_checks"  # voided: paused after failing gold
    UNPAUSED = "unpaused"  # an operator lifted that pause: paid after all
    BEFORE_HOLDS = "before_holds"  # credited at once, before pay was held (migration 0018)


class Sensitivity(StrEnum):
    """How sensitive a field's contents are, as its template says (fields.sensitivity)."""

    PUBLIC = "public"
    PERSONAL = "personal"  # what a field is when its template does not say
    RESTRICTED = "restricted"  # shown only to cleared workers


class AuditAction(StrEnum):
    """What a worker did to a task, or an operator to a worker or a masked value, as the
    audit log keeps it (audit_log.action)."""

    VIEW = "view"  # opened the snippet
    CLAIM = "claim"
    ANSWER = "answer"
    STANDING = "standing"  # an operator paused, trusted, cleared or revoked a worker
    REVEAL = "reveal"  # an operator asked to see a masked (personal or restricted) value
    PAY = "pay"  # an operator confirmed rates or exported a payout
