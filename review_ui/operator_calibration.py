"""The operator's calibration page: every refit of the auto-accept rules, and the rules now.

Only operators see it: the rules say which fields no person checks, and the refits how the
crowd's work moved them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from kerani.core.vocabulary import Role
from kerani.microtasks.refit import calibration_history, current_calibration, templates_with_pages
from kerani.review_ui.web import PageSession, db_of, need_role, render, settings_of

router = APIRouter()
HISTORY_SHOWN = 100  # the newest refits; `kerani calibration history` lists them all


@router.get("/operator/calibration", response_class=HTMLResponse)
def calibration_page(request: Request, session: PageSession) -> Response:
    """The refits (when, template, from how many fields, what changed) and each group's rule."""
    person, csrf = session
    need_role(person, Role.OPERATOR)
    db = db_of(request)
    folder = settings_of(request).ocr.calibration_dir
    refits = calibration_history(db, limit=HISTORY_SHOWN)
    refitted = {r.template for r in refits}
    current: list[dict[str, Any]] = []
    for template in sorted(set(templates_with_pages(db)) | refitted):
        calibration = current_calibration(db, template, folder)
        rules = sorted(calibration.rules.items()) if calibration else []
        current.append(
            {
                "template": template,
                "calibration": calibration,
                "refitted": template in refitted,
                "rules": [{"group": key, "rule": rule} for key, rule in rules],
            }
        )
    context = {"refits": refits, "current": current}
    return render(request, "operator_calibration.html", context, person, csrf)
