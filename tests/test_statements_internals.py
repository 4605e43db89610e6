"""The SQLAlchemy internals kerani.storage.statements reads, checked on the installed release.

The driver path (`run` on PostgreSQL) reads private attributes of a compiled statement. A
SQLAlchemy release may rename them or change their shape; `_for_driver` then falls back to
the ordinary path, slower but right. These tests say which attribute changed, by name, so
that the fallback never goes unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, literal, select
from sqlalchemy.dialects.postgresql import psycopg
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.types import TypeDecorator, TypeEngine

from kerani.microtasks.answers import _answer_cte
from kerani.microtasks.leases import _claim_cte
from kerani.storage import statements
from kerani.storage.statements import _DriverStatement, _for_driver, inline_constants, run
from tests.conftest import POSTGRES_ADMIN_URL

DIALECT = psycopg.dialect()  # type: ignore[no-untyped-call]


class _Upper(TypeDecorator[str]):
    """A type converted in Python on the way in: it has a bind processor."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return value.upper() if value is not None else None


_meta = MetaData()
_things = Table(
    "things",
    _meta,
    Column("id", Integer, primary_key=True),
    Column("name", _Upper),
    Column("seen", Integer, default=lambda: 0, onupdate=lambda: 1),  # Python-side defaults
)


class _Conn:
    """Just what _for_driver reads of a connection."""

    dialect = DIALECT


def _queue_statement() -> Any:
    """A claim as the queue sends it: CTEs, constants, named and typed parameters."""
    return _claim_cte("postgresql", False, False, False)


def _compiled(stmt: Any) -> Any:
    return stmt.compile(dialect=DIALECT)


def _check_bind_names() -> None:
    compiled = _compiled(_queue_statement())
    names = getattr(compiled, "bind_names", None)
    assert isinstance(names, Mapping) and names, "compiled.bind_names is no longer a mapping"
    for bind, name in names.items():
        assert isinstance(bind, BindParameter) and isinstance(name, str), (
            "compiled.bind_names no longer maps BindParameter to its name"
        )
        assert f"%({name})s" in compiled.string, (
            f"compiled.bind_names: {name!r} is not a %(name)s placeholder of compiled.string"
        )
        for attribute in ("callable", "required", "unique", "value", "type"):
            assert hasattr(bind, attribute), f"BindParameter.{attribute} is gone"
    assert {"wid", "now", "lease_until"} <= set(names.values()), (
        "compiled.bind_names lacks the statement's named parameters"
    )


def _check_literal_processor() -> None:
    render = String().literal_processor(DIALECT)
    assert render is not None, "TypeEngine.literal_processor gives None for String"
    # Percent signs doubled: psycopg reads "%%" as "%", so a constant never makes a placeholder.
    assert render("50%") == "'50%%'", "String's literal_processor no longer doubles '%'"


def _check_post_compile_params() -> None:
    expanding = _compiled(select(_things.c.id).where(_things.c.id.in_([1, 2])))
    assert expanding.post_compile_params, (
        "compiled.post_compile_params no longer holds an IN list rendered per call"
    )
    assert not _compiled(_queue_statement()).post_compile_params, (
        "compiled.post_compile_params is not empty for a statement with no IN list"
    )


def _check_literal_execute_params() -> None:
    stmt = select(_things.c.id).limit(bindparam("n", 3, literal_execute=True))
    assert _compiled(stmt).literal_execute_params, (
        "compiled.literal_execute_params no longer holds a literal_execute parameter"
    )


def _check_insert_prefetch() -> None:
    prefetch = _compiled(_things.insert().values(id=bindparam("i"))).insert_prefetch
    assert isinstance(prefetch, list) and prefetch, (
        "compiled.insert_prefetch no longer lists columns with a Python-side default"
    )


def _check_update_prefetch() -> None:
    prefetch = _compiled(_things.update().values(name=bindparam("n"))).update_prefetch
    assert isinstance(prefetch, list) and prefetch, (
        "compiled.update_prefetch no longer lists columns with a Python-side onupdate"
    )


def _check_result_columns() -> None:
    compiled = _compiled(select(_things.c.id, literal("x").label("constant")))
    columns = getattr(compiled, "_result_columns", None)
    assert isinstance(columns, list), "compiled._result_columns is no longer a list"
    assert [column[0] for column in columns] == ["id", "constant"], (
        "compiled._result_columns: entry [0] is no longer the column's key name"
    )
    assert all(isinstance(column[3], TypeEngine) for column in columns), (
        "compiled._result_columns: entry [3] is no longer the column's type"
    )


def _check_cached_result_processor() -> None:
    processor = getattr(Integer(), "_cached_result_processor", None)
    assert callable(processor), "TypeEngine._cached_result_processor is gone"
    assert processor(DIALECT, None) is None, (
        "TypeEngine._cached_result_processor(dialect, None) converts psycopg's integers"
    )


def _check_bind_processors() -> None:
    compiled = _compiled(_things.update().values(name=bindparam("n")))
    processors = getattr(compiled, "_bind_processors", None)
    assert isinstance(processors, Mapping), "compiled._bind_processors is no longer a mapping"
    assert callable(processors.get("n")), (
        "compiled._bind_processors no longer maps a parameter's name to its converter"
    )


def _check_string() -> None:
    assert isinstance(_compiled(_queue_statement()).string, str), "compiled.string is not text"


CHECKS: dict[str, Callable[[], None]] = {
    "bind_names": _check_bind_names,
    "literal_processor": _check_literal_processor,
    "post_compile_params": _check_post_compile_params,
    "literal_execute_params": _check_literal_execute_params,
    "insert_prefetch": _check_insert_prefetch,
    "update_prefetch": _check_update_prefetch,
    "_result_columns": _check_result_columns,
    "_cached_result_processor": _check_cached_result_processor,
    "_bind_processors": _check_bind_processors,
    "string": _check_string,
}


@pytest.mark.parametrize("internal", sorted(CHECKS))
def test_each_sqlalchemy_internal_the_driver_path_reads_is_there_in_its_shape(
    internal: str,
) -> None:
    try:
        CHECKS[internal]()
    except AttributeError as error:
        pytest.fail(f"SQLAlchemy {sa.__version__}: {internal} is gone ({error})")


@pytest.mark.parametrize("build", [_claim_cte, _answer_cte], ids=lambda b: b.__name__)
def test_the_queue_hot_statements_take_the_driver_path(build: Callable[..., Any]) -> None:
    variant = (False, False, False) if build is _claim_cte else ()
    driver = _for_driver(_Conn(), build("postgresql", *variant))  # type: ignore[arg-type]
    assert isinstance(driver, _DriverStatement), (
        f"{build.__name__} fell back to the ordinary path: see the warning logged"
    )
    # The audit row's action, a constant, is in the text rather than sent per call.
    action = "'claim'" if build is _claim_cte else "'answer'"
    assert action in driver.sql


class _Without:
    """A compiled statement with one attribute missing, as a later SQLAlchemy might have."""

    def __init__(self, compiled: Any, missing: str) -> None:
        self._compiled, self._missing = compiled, missing

    def __getattr__(self, name: str) -> Any:
        if name == self._missing:
            raise AttributeError(name)
        return getattr(self._compiled, name)


class _Compiles:
    def __init__(self, stmt: Any, missing: str) -> None:
        self._stmt, self._missing = stmt, missing

    def compile(self, dialect: Any) -> Any:
        return _Without(self._stmt.compile(dialect=dialect), self._missing)


@pytest.mark.parametrize(
    "missing",
    [
        "bind_names",
        "post_compile_params",
        "literal_execute_params",
        "insert_prefetch",
        "update_prefetch",
        "_result_columns",
        "_bind_processors",
        "string",
    ],
)
def test_a_missing_internal_falls_back_to_the_ordinary_path(
    missing: str, caplog: pytest.LogCaptureFixture
) -> None:
    stmt = _Compiles(_queue_statement(), missing)
    assert _for_driver(_Conn(), stmt) is None  # type: ignore[arg-type]
    assert missing in caplog.text


def test_constants_replace_only_the_placeholders_the_driver_reads() -> None:
    # "%%(a)s" is the escaped text "%(a)s" inside a string constant: no placeholder.
    sql = "SELECT %(a)s, '%%(a)s', %(b)s, %(b)s, %(c)s, %(d)s, '%%(e)s'"
    constants = {"a": "'x'", "b": "1", "c": "'%%(d)s'", "e": "'y'"}
    out, rendered = inline_constants(sql, constants)
    # b, one constant used twice, is written twice; c's own text (the string "%(d)s") and
    # "%%(e)s" (the text "%(e)s" in a string constant) hold no placeholder; d is a parameter.
    assert out == "SELECT 'x', '%%(a)s', 1, 1, '%%(d)s', %(d)s, '%%(e)s'"
    assert rendered == {"a", "b", "c"}


def _percent_text(_dialect: str) -> Any:
    # literal("open") is named param_1; the text constant spells that placeholder.
    return select(
        literal("open").label("status"),
        sa.literal_column("'%(param_1)s'").label("text"),
        bindparam("n", type_=Integer).label("n"),
    )


def test_a_constant_spelling_a_placeholder_runs_as_written(postgres_available: bool) -> None:
    if not postgres_available:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (outside CI)")
    engine = sa.create_engine(POSTGRES_ADMIN_URL)
    try:
        with engine.begin() as conn:
            rows = run(conn, _percent_text, {"n": 7})
        driver = statements._built[("driver", _percent_text)]
        assert isinstance(driver, _DriverStatement)  # the driver path ran it
        assert [tuple(r) for r in rows] == [("open", "%(param_1)s", 7)]
    finally:
        engine.dispose()
