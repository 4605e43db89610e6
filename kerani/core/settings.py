"""Typed settings, one class per component, read from `KERANI_*` environment variables.

Settings are built once at an entry point (the CLI, the demo, the web app, a test) and
passed down; nothing here is created at import time. Prefect flows and tasks never take
them as a parameter (Prefect records parameters with each run, and these hold the database
password and the S3 keys): the entry point activates them with `using_settings`, and a flow
or task reads them where it runs with `current_settings`; a deployment's worker process,
where nothing activated them, reads KERANI_* from its environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """Where Kerani keeps its database and blobs when KERANI_DATA_DIR is not set."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "kerani"


def default_processes() -> int:
    """Web server processes when KERANI_SERVE_PROCESSES is not set: one per core, up to 4."""
    return max(1, min(4, os.cpu_count() or 1))


class CoreSettings(BaseSettings):
    """Where Kerani's state lives."""

    model_config = SettingsConfigDict(env_prefix="KERANI_")
    data_dir: Path = Field(default_factory=default_data_dir)


class DatabaseSettings(BaseSettings):
    """The database: a SQLAlchemy URL; empty means a SQLite file in the data directory."""

    model_config = SettingsConfigDict(env_prefix="KERANI_DB_")
    # A secret: a PostgreSQL URL may hold the password. Shown as '**********' in a repr
    # or a dump; Settings.database_url reveals it to the one place that connects.
    url: SecretStr = SecretStr("")


class BlobSettings(BaseSettings):
    """The blob store: a local folder (default) or `s3://bucket/prefix`."""

    model_config = SettingsConfigDict(env_prefix="KERANI_BLOB_")
    url: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    # Unset, boto3 finds credentials as usual (AWS_* variables, ~/.aws, an instance role).
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None


class IngestSettings(BaseSettings):
    """Limits that keep hostile uploads from hurting the service."""

    model_config = SettingsConfigDict(env_prefix="KERANI_INGEST_")
    max_file_bytes: int = 50 * 1024 * 1024
    max_zip_members: int = 2000
    max_zip_total_bytes: int = 2 * 1024 * 1024 * 1024
    max_zip_ratio: float = 200.0
    max_image_pixels: int = 80_000_000
    # Pages past it are refused as one named range (`a.pdf (pages 201-1000)`), never dropped.
    max_pages_per_file: int = 200
    pdf_dpi: int = 200
    pdf_timeout_s: float = 120.0


class OcrSettings(BaseSettings):
    """Tesseract, the pre-OCR stage, and the routing rule."""

    model_config = SettingsConfigDict(env_prefix="KERANI_OCR_")
    languages: str = "eng"
    timeout_s: float = 120.0
    workers: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1))
    # A hand-set floor, off unless an operator sets it: without a calibration for the
    # template, a typed field above this mean word confidence with a passing validator is
    # auto-accepted. Unset, nothing is auto-accepted until a calibration says so.
    auto_accept_confidence: float | None = None
    snippet_margin_px: int = 6
    # Clean-up and re-OCR of the pre-OCR stage (ocr.stage.StageOptions; the defaults are
    # what `kerani bench ocr` measured best).
    deskew: bool = True
    orientation: bool = True
    reocr: bool = True
    confirm_above: float = 101.0  # above 100: off
    reocr_below: float = 90.0
    reocr_budget: float = 0.08
    # Folder of calibrated routing rules (<template>.json) that override the bundled ones
    # in ocr/calibrations; with a calibration, auto_accept_confidence no longer applies.
    # A refit from the crowd's own work (kerani.microtasks.refit) overrides both.
    calibration_dir: Path | None = None
    # The refit's target accuracy of auto-accepted fields (with the Wilson bound), and the
    # fewest settled fields a (type, evidence) group needs for a floor of its own.
    calibration_target: float = Field(default=0.995, ge=0.5, lt=1.0)
    calibration_min_samples: int = Field(default=40, ge=1)
    # "rapidocr": a second engine that reads every field too; where it agrees with
    # Tesseract that is evidence for the calibrated auto-accept rule, where not the two
    # readings are voted on (ocr.vote), and it finds the lines of template-free pages.
    # It costs more time than the page OCR (ocr/calibrations/README.md). '' for none.
    second_engine: str = "rapidocr"


class CrowdSettings(BaseSettings):
    """Micro tasks: leases, redundancy, worker quality, privacy limits and pay rates."""

    model_config = SettingsConfigDict(env_prefix="KERANI_CROWD_")
    lease_seconds: int = 300
    # Tasks the one-by-one page keeps on the phone besides the one shown, snippets and all,
    # so that a worker on a weak line goes on through a dead spot (review.js, sw.js).
    offline_reserve: int = Field(default=10, ge=2, le=50)
    # A field settles when two votes agree and their answer's posterior reaches this.
    target_posterior: float = 0.995
    escalate_after: int = 3  # people without consensus before a trusted worker arbitrates
    max_answers: int = 5  # then the likeliest answer settles, its low agreement on record
    max_fields_per_document: int = 10  # privacy: no worker sees more of one document
    # Gold (known-answer snippets) comes at random, on average one in every N tasks of a
    # worker: more often on probation and after a failed gold, less often for arbiters
    # (gold is paid work that settles nothing). 0 turns gold off for everyone.
    gold_every: int = 10
    gold_every_probation: int = 3
    gold_every_suspect: int = 4
    gold_every_trusted: int = 30
    # Probation: a new worker's answers are no votes until they have passed this much gold.
    probation_min_gold: int = 4
    probation_min_accuracy: float = 0.75
    # Workers on probation are not offered a task that already has this many answers
    # (theirs wait to count): they spread over the work instead of piling on one field.
    probation_answers_per_task: int = 3
    # The share of first answers on a field shown blind, without the OCR's guess (later
    # answers, disputes and audits always are): what measures how far pre-fill misleads.
    # With blind_follows_ocr, a field type's share rises to how often the OCR's doubted
    # guesses of that type prove right: a blind answer agreeing with a right guess settles
    # the field alone, where a confirmation needs a second, blind look anyway.
    blind_share: float = Field(default=0.25, ge=0.0, le=1.0)
    blind_follows_ocr: bool = True
    # Gold with a wrong guess shown blind: a pre-fill spammer fails it (a blank); shown
    # pre-filled, it measures anchoring. Gold whose guess is right is always blind.
    blind_share_gold: float = Field(default=0.5, ge=0.0, le=1.0)
    quarantine_min_gold: int = 4
    quarantine_below: float = 0.7
    trusted_min_gold: int = 4
    trusted_min_accuracy: float = 0.97
    # Audit sampling: the share of auto-accepted fields sent to people (blind) anyway, and
    # the larger share while the rule of their group was fitted on fewer accepted fields
    # than `audit_young_below`.
    audit_share: float = Field(default=0.02, ge=0.0, le=1.0)
    audit_share_young: float = Field(default=0.10, ge=0.0, le=1.0)
    audit_young_below: int = Field(default=200, ge=0)
    # Gold is paid at the field rate: a different rate would tell a worker which task it was.
    # Until an operator confirms measured rates (microtasks.pay_rates), every field type is
    # paid these.
    rate_sen_field: int = 5
    rate_sen_arbitration: int = 10
    # Proposed rates pay a median careful worker at least this per hour worked: Malaysia's
    # minimum wage, RM 1,700 a month over 45 hours a week (RM 8.72 an hour), in sen.
    pay_floor_sen_per_hour: int = Field(default=872, ge=1)
    pay_min_timed_answers: int = Field(default=30, ge=1)  # per task kind, for a proposal
    pay_max_timed_seconds: int = Field(default=300, ge=1)  # longer is a pause, not work
    # An answer's pay is held until a passed check (gold) vouches for the worker's work
    # after it; with no check within this many days it is paid on trust.
    pay_hold_days: int = Field(default=7, ge=0)
    # The practice round a new worker passes before paid work (microtasks.practice): this
    # many known-answer snippets (of the 10 bundled), this share of them right.
    practice_items: int = Field(default=10, ge=1, le=10)
    practice_pass_share: float = Field(default=0.8, ge=0.0, le=1.0)


class ReviewSettings(BaseSettings):
    """The review web app."""

    model_config = SettingsConfigDict(env_prefix="KERANI_REVIEW_")
    host: str = "127.0.0.1"
    port: int = 8737
    session_hours: int = 12
    # A shared PC in a telecentre: a session left alone this long signs its worker out.
    session_idle_minutes: int = 30
    secure_cookies: bool = False
    invite_days: int = 14  # how long an operator's invite code can be used to join
    # Sign-in throttling: a 6-digit PIN must not be guessable by trying.
    signin_max_failures: int = 5  # per worker number, then locked
    signin_ip_max_failures: int = 30  # per client address, then locked
    signin_lock_minutes: int = 15
    # Each PIN check takes 16 MiB for scrypt: a burst of sign-ins waits its turn, so that
    # memory stays bounded (at most this many checks at once in a server process).
    pin_checks_at_once: int = Field(default=2, ge=1)
    # Bodies larger than this are refused (413) before they are read; text typed into a
    # page is far smaller. An upload route can be given more (review_ui.app BODY_LIMITS).
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    # Addresses of reverse proxies whose X-Forwarded-For/-Proto is believed (comma-separated,
    # "*" for any). Empty: none, so that nobody can pick the address the sign-in throttle
    # counts against by sending the header themselves.
    trusted_proxies: str = ""
    column_size: int = Field(default=15, ge=2, le=30)  # snippets per screen in column mode


class ApiSettings(BaseSettings):
    """The agency API: uploads, S3 intake and webhooks."""

    model_config = SettingsConfigDict(env_prefix="KERANI_API_")
    # One request of a chunked upload carries at most this much: a weak line resends a
    # small piece, not the file.
    chunk_max_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024)
    # Buckets an agency may point a batch at (comma-separated); each agency reads only
    # under `<its name>/` in them. Empty: no S3 intake.
    intake_s3_buckets: str = ""
    intake_s3_endpoint_url: str | None = None
    intake_s3_region: str = "us-east-1"
    intake_s3_access_key_id: str | None = None
    intake_s3_secret_access_key: SecretStr | None = None
    # Webhooks to loopback, private or link-local addresses are refused unless this is
    # set: an agency's URL must not make Kerani call into its own network.
    webhook_allow_private: bool = False
    # Per connect and read; well under the two minutes a sender holds a notice it claimed.
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=30)
    # A webhook the agency's server does not take is tried again, waiting twice as long
    # each time (30 s, 1 min, 2 min, ...), this many times in all.
    webhook_attempts: int = Field(default=12, ge=1, le=100)
    # How often the review app looks for webhooks to deliver.
    webhook_poll_s: float = Field(default=15.0, gt=0)

    def intake_buckets(self) -> list[str]:
        """The buckets S3 intake may read, as a list."""
        return [b.strip() for b in self.intake_s3_buckets.split(",") if b.strip()]


class ScaleSettings(BaseSettings):
    """Where a batch's pre-OCR runs: threads of the flow's own process, or a Dask cluster."""

    model_config = SettingsConfigDict(env_prefix="KERANI_SCALE_")
    # "threads": the flow run's process, KERANI_OCR_WORKERS at once. "dask": the Dask
    # cluster at `dask_address`, or without one a local cluster of `dask_workers` processes.
    runner: Literal["threads", "dask"] = "threads"
    # An existing scheduler (tcp://host:8786): its workers, on any machine, read KERANI_*
    # from their own environment and must reach the same database and blob store.
    dask_address: str = ""
    dask_workers: int = Field(default=2, ge=1)
    # A batch's pages go to pre-OCR this many at a time (one subflow run each), so that a
    # huge batch shows progress chunk by chunk and a crash loses at most one chunk's work.
    chunk_pages: int = Field(default=500, ge=1)


class ServeSettings(BaseSettings):
    """`kerani serve`: how many processes serve the review app, and their database share."""

    model_config = SettingsConfigDict(env_prefix="KERANI_SERVE_")
    # Worker processes of the web server: one Python process uses one core at most.
    processes: int = Field(default_factory=default_processes, ge=1, le=64)
    # PostgreSQL connections all the processes together may hold: PostgreSQL's default
    # max_connections is 100, and flows, the CLI and an operator's psql need some too.
    db_connections: int = Field(default=60, ge=2)


class Settings(BaseModel):
    """All of Kerani's settings, one member per component."""

    core: CoreSettings = Field(default_factory=CoreSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    blobs: BlobSettings = Field(default_factory=BlobSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    ocr: OcrSettings = Field(default_factory=OcrSettings)
    crowd: CrowdSettings = Field(default_factory=CrowdSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    scale: ScaleSettings = Field(default_factory=ScaleSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)

    @classmethod
    def load(cls, data_dir: Path | None = None) -> Settings:
        """Read every component from the environment; `data_dir` overrides KERANI_DATA_DIR."""
        core = CoreSettings(data_dir=data_dir) if data_dir is not None else CoreSettings()
        return cls(core=core)

    @property
    def database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data directory."""
        url = self.database.url.get_secret_value()
        return url or f"sqlite:///{self.core.data_dir / 'kerani.db'}"

    @property
    def blob_url(self) -> str:
        """The blob store location, defaulting to a folder in the data directory."""
        return self.blobs.url or str(self.core.data_dir / "blobs")


def settings_environment(settings: Settings) -> dict[str, str]:
    """The KERANI_* variables that rebuild `settings` in a child process (secrets included:
    for processes Kerani starts itself, never for a log, a flow parameter or an artifact)."""
    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        component = getattr(settings, name)
        prefix = str(component.model_config.get("env_prefix", ""))
        for field, value in component:
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"{prefix}{field}".upper()] = str(value)
    return env


# The settings an entry point activated, as a ContextVar rather than a module global: a
# value is seen in the context that set it and in copies of it. Prefect runs flows, subflows
# and called tasks in the caller's context and submitted tasks in a copy of it
# (ThreadPoolTaskRunner.submit: copy_context().run); a plain threading.Thread starts without.
_active: ContextVar[Settings | None] = ContextVar("kerani_settings", default=None)


@contextmanager
def using_settings(settings: Settings) -> Iterator[Settings]:
    """Make `settings` what `current_settings()` returns in this context, until the end."""
    token = _active.set(settings)
    try:
        yield settings
    finally:
        _active.reset(token)


def current_settings() -> Settings:
    """The settings activated by `using_settings`, else read from KERANI_* (a deployment)."""
    active = _active.get()
    return active if active is not None else Settings.load()
