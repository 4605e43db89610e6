"""Every error Kerani raises on purpose, each with its CLI exit code and its HTTP status.

The CLI's one error boundary (kerani.cli) turns them into exit codes, the web app's one
exception handler (kerani.review_ui.app) into status codes; an error a worker may meet also
carries the key of its message in the page catalogues (review_ui/locales), so that it is
shown in their language without matching English text.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of the `kerani` command."""

    ok = 0
    bad_args = 1
    input_file = 2
    missing_dependency = 3
    external_program = 4
    template = 5
    not_found = 6
    conflict = 7
    forbidden = 8
    unreachable = 9
    other = 15


class KeraniError(Exception):
    """Base class: a message meant for the user and the exit code that goes with it."""

    exit_code = ExitCode.other
    http_status = 500

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key  # the message's key in the page catalogues, where workers meet it


class BadInputError(KeraniError):
    """An input file or value is unusable; the message names it and says what is wrong."""

    exit_code = ExitCode.input_file
    http_status = 400


class MissingDependencyError(KeraniError):
    """A program Kerani needs (tesseract, pdftoppm) is not installed."""

    exit_code = ExitCode.missing_dependency
    http_status = 500


class ExternalProgramError(KeraniError):
    """An external program failed, timed out, or produced unusable output."""

    exit_code = ExitCode.external_program
    http_status = 500


class UnreachableError(KeraniError):
    """A service Kerani works with (the Prefect server, the blob store) does not answer."""

    exit_code = ExitCode.unreachable
    http_status = 503


class TemplateError(KeraniError):
    """A form template is invalid; the message names the field and the rule."""

    exit_code = ExitCode.template
    http_status = 500  # a template on the server is broken: not the caller's fault


class TemplateMismatchError(BadInputError):
    """A page is not the form its batch's template describes (its anchors are not there)."""


class NotFoundError(KeraniError):
    """A batch, page, task or worker that was asked for does not exist."""

    exit_code = ExitCode.not_found
    http_status = 404


class ConflictError(KeraniError):
    """The request clashes with the current state (a lease held by another worker, say)."""

    exit_code = ExitCode.conflict
    http_status = 409


class ForbiddenError(KeraniError):
    """The caller's role or lease does not allow this."""

    exit_code = ExitCode.forbidden
    http_status = 403
