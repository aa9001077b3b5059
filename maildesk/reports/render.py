"""A Report as JSON, CSV, a table for people, or one self-contained HTML page."""
from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta
from typing import Any

from markupsafe import Markup

from ..notify.templates import Templates
from .charts import bar_chart, line_chart
from .metrics import ALL, Report

COLUMNS = ("created", "resolved", "reopened", "backlog", "backlog_age_median_h",
           "frt_business_median_h", "frt_business_p90_h", "frt_wall_median_h",
           "frt_wall_p90_h", "mttr_business_median_h", "mttr_business_p90_h",
           "mttr_wall_median_h", "mttr_wall_p90_h", "sla_first_response_pct",
           "sla_resolution_pct", "csat_pct", "csat_mean", "csat_responses",
           "survey_response_rate_pct", "fcr_pct", "reopen_rate_pct", "kb_searched",
           "kb_suggested", "kb_suggestions_per_ticket", "kb_solved", "kb_deflected",
           "kb_deflection_pct")
TABLE = ("created", "resolved", "backlog", "frt_business_median_h", "mttr_business_median_h",
         "sla_first_response_pct", "sla_resolution_pct", "csat_pct", "fcr_pct",
         "kb_deflection_pct")


# counts: 0 when nothing happened (a script sums them); the rest have no figure then (None)
COUNTS = ("created", "resolved", "reopened", "backlog", "csat_responses", "kb_searched",
          "kb_suggested", "kb_solved", "kb_deflected")


def rows(report: Report) -> list[dict[str, Any]]:
    """One row per group (the total last), every column, None where there is no figure."""
    groups = sorted(g for g in report.groups if g != ALL) if report.by else []
    return [{"group": g, **{c: _figure(report.groups.get(g, {}).get(c), c) for c in COLUMNS}}
            for g in [*groups, ALL]]


def _figure(value: Any, column: str) -> Any:
    return 0 if value is None and column in COUNTS else value


def last_day(report: Report) -> date:
    return report.end.date() - timedelta(days=1)


def as_json(report: Report) -> str:
    return json.dumps({
        "from": report.start.date().isoformat(), "to": last_day(report).isoformat(),
        "by": report.by, "rows": rows(report), "breaches": report.breaches,
        "comments": report.comments, "top_categories": report.top_categories,
        "top_requesters": report.top_requesters, "kb_articles": report.kb_articles,
        "kb_rewrite": report.kb_rewrite, "kb_gaps": report.kb_gaps,
        "series": {k: [list(p) for p in v] for k, v in report.series.items()},
    }, indent=2, ensure_ascii=False)


def as_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["group", *COLUMNS], lineterminator="\n")
    writer.writeheader()
    for r in rows(report):
        writer.writerow({k: "" if v is None else v for k, v in r.items()})
    return out.getvalue()


def as_html(report: Report, templates: Templates, desk: str) -> str:
    s = report.series
    charts = [
        line_chart("Backlog at the end of each day", s.get("backlog", [])),
        bar_chart("New tickets by category", s.get("volume_by_category", [])),
        line_chart("First response, weekly median (business hours)",
                   s.get("frt_median_h", []), " h"),
        line_chart("Resolution, weekly median (business hours)",
                   s.get("mttr_median_h", []), " h"),
        bar_chart("SLA met, by week", s.get("sla_met_pct", []), "%"),
    ]
    total = rows(report)[-1]       # every column, None where a quiet desk has no figure
    return templates.html_env.get_template("report.html.j2").render({
        "desk": desk, "report": report, "rows": rows(report), "total": total,
        "columns": COLUMNS, "charts": [Markup(c) for c in charts],
        "last_day": last_day(report),
    })
