"""`doit status` rows and the HTML report: the page shows the figures in the audit DB, with no network."""
from __future__ import annotations

import re
import subprocess
import time
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest

from skillbuild.store.audit import AuditDB, Outcome
from skillbuild.ui.report import histogram, status_rows, write_html
from skillbuild.ui.status import Row, format_table

CHROMIUM = "/usr/bin/chromium"
R1, R2 = "20261101T000000Z-aaaa", "20261102T000000Z-bbbb"


def populate(path: Path) -> AuditDB:
    db = AuditDB(path)
    db.start_run(["doit"], run_id=R1)
    db.record(R1, "alpha", None, "analyse", "success", processing_time_seconds=3.0)
    db.record(R1, "alpha", None, "generate", "failure", processing_time_seconds=4.0, error_class="GateError",
              error_message="body <script>alert(1)</script> too short")
    db.record(R1, "beta", None, "analyse", "success", processing_time_seconds=2.0)
    db.record(R1, "beta", None, "generate", "success", processing_time_seconds=12.0, output_bytes=7000)
    db.end_run(R1, {"built": 1, "failed": 1}, 1)
    db.start_run(["doit"], run_id=R2)  # never ended: killed
    db.record(R2, "alpha", None, "analyse", "success", processing_time_seconds=1.0)
    db.record(R2, "alpha", None, "generate", "success", processing_time_seconds=2.0, output_bytes=9500)
    db.record(R2, "gamma", None, "analyse", "success", processing_time_seconds=30.0)
    db.record(R2, "gamma", None, "generate", "success", processing_time_seconds=45.0, output_bytes=15000)
    db.record(R2, "delta", None, "analyse", "failure", processing_time_seconds=0.5, error_class="ProviderError",
              error_message="403 permission denied for project demo")
    db.record(R2, "hand", None, "keep", "kept")
    db.record(R2, "ext", None, "skip", "skipped")
    now = time.time()
    db.record_api_calls(R1, "alpha", "generate", [{"time": now - 2 * 86400, "status": 200, "input_tokens": 10}] * 3)
    db.record_api_calls(R2, "alpha", "generate", [{"time": now, "status": 429, "error": "quota"}]
                        + [{"time": now, "status": 200, "input_tokens": 100, "output_tokens": 20}] * 6)
    return db


class Figures(HTMLParser):
    """Collects what the page states: elements by id, and table rows by their data attributes."""

    def __init__(self, page: str):
        super().__init__()
        self.ids: dict[str, dict] = {}
        self.rows: dict[str, list[dict]] = {}
        self.svgs: list[str] = []
        self.rects = 0
        self.links: list[str] = []
        self.scripts = 0
        self._open: list[str] = []
        self._table: str | None = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if key in a:
                self.links.append(a[key])
        if tag == "script":
            self.scripts += 1
        if tag == "svg" and "id" in a:  # charts; legend swatches have no id
            self.svgs.append(a["id"])
        if tag == "rect":
            self.rects += 1
        if tag == "table":
            self._table = a.get("id")
        if tag == "tr" and self._table and any(k.startswith("data-") for k in a):
            self.rows.setdefault(self._table, []).append({k[5:]: v for k, v in a.items() if k.startswith("data-")})
        if "id" in a:
            self.ids[a["id"]] = {"value": a.get("data-value"), "text": ""}
            self._open.append(a["id"])
        else:
            self._open.append("")

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        for el in self._open:
            if el:
                self.ids[el]["text"] += data


def check_figures(f: Figures) -> None:
    """The numbers populate() put in the DB, as the page must show them."""
    # final outcomes: R1 alpha failed, beta built; R2 alpha, gamma built, delta failed -> 3 of 5
    assert (f.ids["success-rate"]["value"], f.ids["success-rate"]["text"]) == ("60.0", "60%")
    assert f.ids["built"]["text"] == "3" and f.ids["failed"]["text"] == "2"
    assert f.ids["runs-count"]["text"] == "2"
    assert f.ids["calls-total"]["text"] == "10" and f.ids["calls-today"]["text"] == "7"
    assert f.ids["tokens-in"]["text"] == "630" and f.ids["tokens-out"]["text"] == "120"
    assert f.rows["outcomes-per-run"] == [
        {"run": R1, "success": "1", "failure": "1", "skipped": "0", "kept": "0"},
        {"run": R2, "success": "2", "failure": "1", "skipped": "1", "kept": "1"},
    ]
    # time per plugin, latest run that worked on it: alpha 3, beta 14, gamma 75, delta 0.5
    bins = {r["bin"]: int(r["count"]) for r in f.rows["time-histogram"]}
    assert bins["0-5"] == 2 and bins["10-20"] == 1 and bins["60-120"] == 1 and sum(bins.values()) == 4
    assert f.ids["time-max"]["value"] == "75.0" and f.ids["time-median"]["value"] == "8.5"
    # sizes, latest successful write: alpha 9500 (in), beta 7000 (below), gamma 15000 (above)
    assert [f.ids[k]["text"] for k in ("sizes-below", "sizes-in-target", "sizes-above")] == ["1", "1", "1"]
    days = f.rows["calls-per-day"]
    assert [(d["calls"], d["errors"], d["retried"]) for d in days] == [("3", "0", "2"), ("7", "1", "6")]
    assert f.ids["quota-rpd"]["value"] == "5"
    fails = f.rows["failures"]
    assert [(r["plugin"], r["phase"], r["run"]) for r in fails] == [("delta", "analyse", R2), ("alpha", "generate", R1)]
    assert f.svgs == ["chart-outcomes", "chart-time", "chart-sizes", "chart-calls"] and f.rects > 10
    assert f.links == [] and f.scripts == 0  # nothing to fetch, nothing to run


def test_report_page_states_the_db_figures(tmp_path):
    db = populate(tmp_path / "audit.sqlite3")
    out = write_html(db, tmp_path / "site" / "report.html", quota_rpd=5)
    page = out.read_text()
    check_figures(Figures(page))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert "interrupted" in page  # R2 never ended
    assert 'class=over' in page  # today's 7 calls exceed the quota of 5


@pytest.mark.parametrize("cli, budget, basis", [({}, "1500", "rpd 1500 / safety factor 1"),
                                                ({"rpd": "900", "safety_factor": "2"}, "450", "rpd 900 / safety factor 2")])
def test_doit_report_quota_is_the_budget_the_throttle_enforces(tmp_path, cli, budget, basis):
    from types import SimpleNamespace

    from skillbuild.calls.throttle import limits_from_settings
    from skillbuild.config import load_settings
    from skillbuild.maintenance import write_report

    settings = load_settings(cli={"marketplace": str(tmp_path / "m"), **cli}, env={}, pyproject=tmp_path / "n.toml",
                             project_root=tmp_path)
    assert write_report(settings, SimpleNamespace(plugins=[])) is None
    f = Figures(settings.report_file.read_text())
    assert f.ids["quota-rpd"]["value"] == budget == str(limits_from_settings(settings).rpd_effective)
    assert f"{basis}: the daily budget the throttle allows" in settings.latest_report_file.read_text()


def test_report_of_an_empty_db(tmp_path):
    out = write_html(tmp_path / "audit.sqlite3", tmp_path / "report.html", quota_rpd=1500)
    f = Figures(out.read_text())
    assert f.ids["success-rate"]["text"] == "n/a" and f.ids["calls-total"]["text"] == "0"
    assert "failures-none" in f.ids


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install -y chromium")
def test_report_renders_in_headless_chromium(tmp_path):
    db = populate(tmp_path / "audit.sqlite3")
    out = write_html(db, tmp_path / "report.html", quota_rpd=5)
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--dump-dom", out.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert "<svg" in dom
    check_figures(Figures(dom))


def test_histogram_bins():
    assert histogram([0, 4.9, 5, 300, 1000], (0, 5, 10, 300)) == [("0-5", 2), ("5-10", 1), ("10-300", 0),
                                                                   ("300+", 2)]


def test_status_rows_join_discovery_with_the_audit(tmp_path):
    db = populate(tmp_path / "audit.sqlite3")
    now = datetime.now(timezone.utc)
    rows = status_rows([("alpha", "fresh", 9500), ("delta", "stale", None), ("hand", "kept", 12000),
                        ("ext", "skipped", None), ("new", "stale", None)], db.last_outcomes(), now=now)
    by = {r.plugin: r for r in rows}
    assert (by["alpha"].state, by["alpha"].last_outcome) == ("fresh", "generate success")
    assert (by["delta"].state, by["delta"].error) == ("failed", "403 permission denied for project demo")
    assert by["hand"].last_outcome == "keep kept" and by["ext"].state == "skipped"
    assert (by["new"].state, by["new"].last_outcome, by["new"].when) == ("stale", "-", "-")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\dZ \(\d+s ago\)", by["alpha"].when)
    # `doit status` prints the same join through status.format_table
    table = format_table([Row(name, name, state, size, "") for name, state, size in (
        ("alpha", "fresh", 9500), ("delta", "stale", None), ("hand", "kept", 12000), ("ext", "skipped", None),
        ("new", "stale", None))], db.last_outcomes())
    lines = table.splitlines()
    assert lines[0].split() == ["plugin", "state", "bytes", "last", "outcome", "when", "detail"]
    assert lines[2].split()[:2] == ["delta", "failed"] and "last error: 403 permission denied" in lines[2]
    assert lines[-1] == "total: 1 failed, 1 fresh, 1 kept, 1 skipped, 1 stale"


def test_status_ago_and_bad_state():
    out = Outcome("p", "r", "generate", "success", "2026-11-29T10:00:00.000Z", None, None, 9000)
    (row,) = status_rows([("p", "fresh", 9000)], {"p": out}, now=datetime(2026, 11, 29, 13, 0, tzinfo=timezone.utc))
    assert row.when == "2026-11-29 10:00Z (3h ago)"
    with pytest.raises(ValueError, match="fresh, stale, kept, skipped, failed"):
        status_rows([("p", "done", None)], {})

