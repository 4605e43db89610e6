"""Statements built once per process and dialect, then run with bound parameters.

Building a SQLAlchemy statement (coercing every column and clause) costs several times
the CPU of running a built one, and the hot paths of the queue run thousands of times a
second across threads that share one interpreter, so they reuse built statements.

On PostgreSQL, `run` goes one step further for the queue's hot statements: it compiles
them once to SQL text and hands that to psycopg as a server-side prepared statement, so a
claim or a submit spends its time in the database rather than in Python (the statement
cache key, parameter and result machinery of an ORM layer cost more than the statements'
own round trips). Statements whose parameters or results need converting in Python keep
the ordinary path.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import namedtuple
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, TextClause
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

_built: dict[tuple[Any, ...], Any] = {}
_lock = threading.Lock()
_log = logging.getLogger(__name__)


def prepared(conn: Connection, build: Callable[..., Any], *variant: Any) -> Any:
    """The statement `build(dialect_name, *variant)` returns, built once per dialect and variant.

    `variant` holds the few hashable choices that change a statement's shape (such as a
    worker's flags); values that change from call to call are bound parameters instead.
    """
    key = (conn.dialect.name, build, *variant)
    stmt = _built.get(key)
    if stmt is None:
        with _lock:
            stmt = _built.setdefault(key, build(conn.dialect.name, *variant))
    return stmt


@dataclass(frozen=True)
class _DriverStatement:
    """A statement compiled to the driver's SQL, with what a call must add to its parameters."""

    sql: str
    defaults: dict[str, Any]  # values of the statement's own literals
    required: frozenset[str]  # parameters each call must give
    converters: dict[str, Callable[[Any], Any]]  # Python-side conversion of some parameters
    row: Callable[..., Any] | None  # makes a row with named columns; None: returns no rows


def _for_driver(conn: Connection, stmt: Any) -> _DriverStatement | None:
    """Compile `stmt` once for psycopg, or None where that would change what it does.

    The ordinary path stays for: values rendered per call (IN lists, literal_execute),
    Python-side column defaults, parameters whose value is computed per call, results
    converted in Python, and statements other than Core ones with known result columns.
    It also stays when the compiled statement's SQLAlchemy internals read below are not
    there or not of the shape expected (a new SQLAlchemy release): slower, never wrong.
    tests/test_statements_internals.py names the internal that changed.
    """
    if isinstance(stmt, TextClause):  # its result columns are not known here
        return None
    try:
        return _compile_for_driver(conn.dialect, stmt)
    except (AttributeError, TypeError, KeyError, IndexError, ValueError) as error:
        _log.warning(
            "the ordinary path for a statement: SQLAlchemy's compiled form is not as "
            "kerani.storage.statements expects (%s: %s)",
            type(error).__name__,
            error,
        )
        return None


def _compile_for_driver(dialect: Any, stmt: Any) -> _DriverStatement | None:
    # Every private attribute of SQLAlchemy read here is checked, one by one, by
    # tests/test_statements_internals.py.
    compiled = stmt.compile(dialect=dialect)
    names: dict[Any, str] = compiled.bind_names  # each bind once, with its name in the SQL
    if (
        compiled.post_compile_params
        or compiled.literal_execute_params
        or compiled.insert_prefetch
        or compiled.update_prefetch
        or any(bind.callable is not None for bind in names)
    ):
        return None
    for column in compiled._result_columns:
        try:
            if column[3]._cached_result_processor(dialect, None) is not None:
                return None
        except TypeError:  # a processor that needs the driver's column type
            return None
    required = frozenset(name for bind, name in names.items() if bind.required)
    constants: dict[str, str] = {}  # name: the constant's SQL text
    defaults: dict[str, Any] = {}  # name: the value sent when a call does not give one
    for bind, name in names.items():
        if name in required:
            continue
        render = bind.type.literal_processor(dialect)
        if bind.unique and render is not None and bind.value is not None:
            # The statement's own constants ('open', 1, ...) go into its text: nothing to
            # send or convert per call, and the planner sees constants. (Named parameters
            # with a default stay parameters, so that a call can still give them.)
            constants[name] = render(bind.value)
        defaults[name] = bind.value
    sql, rendered = inline_constants(compiled.string, constants)
    for name in rendered:  # in the text now: nothing to send
        del defaults[name]
    columns = [column[0] for column in compiled._result_columns]
    # Rows are built from plain tuples with a class made once here, rather than by the
    # driver describing the columns again on every call.
    row_class: Any = namedtuple("Row", columns) if columns else None
    converters = {k: v for k, v in compiled._bind_processors.items() if k not in rendered}
    return _DriverStatement(
        sql, defaults, required, converters, row_class._make if row_class else None
    )


# A placeholder as psycopg reads one in pyformat SQL: "%%" is an escaped percent sign
# (SQLAlchemy doubles every literal "%", inside string constants too), so "%%(x)s" is
# the text "%(x)s" and no placeholder. Matching "%%" first keeps it whole.
_PLACEHOLDER = re.compile(r"%%|%\(([^)]+)\)s")


def inline_constants(sql: str, constants: dict[str, str]) -> tuple[str, set[str]]:
    """Put each constant's SQL text in place of its placeholder `%(name)s` in `sql`.

    Only what the driver itself would read as a placeholder is replaced, wherever it
    occurs (a constant used twice in a statement is one parameter written twice); the
    same characters inside a string constant, escaped as "%%(name)s", are left alone.
    Returns the new SQL and the names replaced.
    """
    found = {m.group(1) for m in _PLACEHOLDER.finditer(sql) if m.group(1)}
    inline = {name: text for name, text in constants.items() if name in found}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        return inline[name] if name in inline else match.group(0)

    # One pass: a constant's own text is never read again as SQL with placeholders.
    return _PLACEHOLDER.sub(replace, sql), set(inline)


def run(
    conn: Connection, build: Callable[..., Any], params: dict[str, Any], *variant: Any
) -> Sequence[Any]:
    """Run the statement `build` makes (see `prepared`) and return its rows.

    Rows have the statement's column names as attributes, on every dialect.
    """
    stmt = prepared(conn, build, *variant)
    driver = None
    if conn.dialect.name == "postgresql":
        key = ("driver", build, *variant)
        driver = _built.get(key)
        if driver is None:
            with _lock:
                driver = _built.setdefault(key, _for_driver(conn, stmt) or stmt)
    if not isinstance(driver, _DriverStatement):  # SQLite, or a statement kept ordinary
        result = conn.execute(stmt, params)
        return result.all() if result.returns_rows else ()
    missing = driver.required - params.keys()
    if missing:
        raise TypeError(f"{build.__name__} needs parameters {sorted(missing)}")
    values = {**driver.defaults, **params}
    for name, convert in driver.converters.items():
        values[name] = convert(values[name])
    # The pooled connection's psycopg connection, inside the transaction `conn` began.
    with conn.connection.dbapi_connection.cursor() as cursor:  # type: ignore[union-attr]
        cursor.execute(driver.sql, values, prepare=True)
        return [driver.row(r) for r in cursor.fetchall()] if driver.row else ()


def dialect_insert(dialect: str) -> Callable[[Table], Any]:
    """The dialect's insert(), which has ON CONFLICT (both PostgreSQL and SQLite)."""
    return pg_insert if dialect == "postgresql" else sqlite_insert
