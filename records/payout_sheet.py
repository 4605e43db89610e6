"""The payout sheet an operator hands to whoever pays the workers: one CSV row per worker."""

from __future__ import annotations

import csv
import io

from kerani.microtasks.statements import MALAYSIA, Payout, malaysian_days
from kerani.records.exports import neutralise_cell

COLUMNS = (
    "payout_id",
    "period_start",
    "period_end",
    "worker_number",
    "worker_name",
    "answers",
    "amount_sen",
    "amount_rm",
)


def payout_filename(payout: Payout) -> str:
    """The sheet's file name: payout-7-2026-12-07.csv (the day the period ends, Malaysia)."""
    _first, last_day = malaysian_days(payout.period_start, payout.period_end)
    return f"payout-{payout.id}-{last_day:%Y-%m-%d}.csv"


def payout_csv(payout: Payout) -> str:
    """A payout as CSV: amounts in sen and in ringgit, periods as Malaysian dates."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    start = (payout.period_start + MALAYSIA).strftime("%Y-%m-%d %H:%M")
    end = (payout.period_end + MALAYSIA).strftime("%Y-%m-%d %H:%M")
    for row in payout.rows:
        writer.writerow(
            (
                payout.id,
                start,
                end,
                row.worker_id,
                # A name is typed by a person: a spreadsheet must not run it as a formula.
                neutralise_cell(row.name),
                row.answers,
                row.amount_sen,
                f"{row.amount_sen // 100}.{row.amount_sen % 100:02d}",
            )
        )
    return out.getvalue()
