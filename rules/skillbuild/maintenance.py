"""Actions of the maintenance tasks (backup, off-site restore, listings): thin glue that prints.

Each returns None on success or `TaskFailed` with a reason; secrets never reach what they print.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from doit.exceptions import TaskFailed

from skillbuild import __version__
from skillbuild.config import KEYS
from skillbuild.safety import archive, offsite


def turso(settings) -> tuple[str | None, str | None]:
    return os.environ.get(settings.turso_url_env) or None, os.environ.get(settings.turso_token_env) or None


def _names(settings) -> dict[str, str]:
    return {"url_var": settings.turso_url_env, "token_var": settings.turso_token_env}


def _record_backup(settings, market, run_id: str, status: str, started: float, **fields) -> None:
    """One audit row per backup (phase `backup`), so a failed off-site copy is on record too."""
    from skillbuild.build import open_audit

    open_audit(settings).record(run_id, market.name, str(settings.marketplace), "backup", status,
                                enhancement_type="archive", processing_time_seconds=round(time.monotonic() - started, 3),
                                **fields)


def backup(settings, market, run_id: str) -> TaskFailed | None:
    """Local hashed archive, verified; then the off-site copy when Turso is configured."""
    started = time.monotonic()
    url, token = turso(settings)
    plugins = archive.plugins_for_backup(market)
    made = _resumable_archive(settings, plugins) if url and token else None
    if made is not None:
        print(f"resuming the off-site copy of {made.folder} (the marketplace has not changed since)", flush=True)
    else:
        try:
            made = archive.make_archive(settings.marketplace, settings.archives_dir, settings.audit_db,
                                        plugins, __version__)
        except archive.ArchiveError as exc:
            _record_backup(settings, market, run_id, "failure", started, error_class="archive",
                           error_message=str(exc))
            return TaskFailed(f"backup failed: {exc}")
        print("\n".join(made.lines()), flush=True)
    # The full archive hash and the file list's digest are the local anchors an off-site restore checks.
    _info, manifest, _inventory = archive.load_backup(made.folder)
    done = {"backup_path": str(made.folder), "output_bytes": made.archive_size, "output_hash": made.archive_sha256,
            "input_hash": archive.files_digest(manifest["files"])}
    try:
        sent = offsite.upload(made.folder, url, token, settings.backup_chunk_size, **_names(settings))
    except offsite.OffsiteError as exc:
        _record_backup(settings, market, run_id, "failure", started, error_class="offsite", error_message=str(exc),
                       **done)
        return TaskFailed(f"off-site copy failed: {exc}; the local backup is kept at {made.folder}")
    print("\n".join(sent.lines()), flush=True)
    _record_backup(settings, market, run_id, "success", started, **done)
    return None


def _resumable_archive(settings, plugins: list[dict]) -> archive.ArchiveResult | None:
    """The local archive whose off-site copy the last `doit backup` could not finish, when the marketplace still
    holds exactly its files: uploading it again resumes the same off-site backup instead of starting another."""
    if not settings.audit_db.is_file():
        return None
    from skillbuild.build import open_audit

    last = open_audit(settings).last_backup()
    if not last or last["status"] != "failure" or last["error_class"] != "offsite" or not last["backup_path"]:
        return None
    folder = Path(last["backup_path"])
    if not folder.is_dir() or archive.verify_archive(folder) or not archive.matches_tree(folder, settings.marketplace,
                                                                                       plugins):
        return None
    return archive.open_result(folder)


def _anchors(settings) -> dict[str, tuple[str, str]] | None:
    """Archive name -> (sha256, files digest) from the local audit DB; None when this machine has none."""
    if not settings.audit_db.is_file():
        return None
    from skillbuild.build import open_audit

    return {archive.archive_name(stamp): hashes for stamp, hashes in open_audit(settings).backup_anchors().items()}


def _backup_before_live_restore(settings, market) -> Path:
    """`restore_offsite live=1` overwrites the marketplace: a verified local archive of it comes first."""
    made = archive.make_archive(settings.marketplace, settings.archives_dir, settings.audit_db,
                                archive.plugins_for_backup(market), __version__)
    print(f"local backup of the live marketplace before overwriting it: {made.folder}", flush=True)
    return made.folder


def restore_offsite(settings, market, backup_id: str | None, dest: str | None,
                    live: bool) -> TaskFailed | None:
    url, token = turso(settings)
    target = Path(dest).resolve() if dest else settings.restored_dir / time.strftime("%Y%m%dT%H%M%SZ",
                                                                                             time.gmtime())
    try:
        if live and target == settings.marketplace and url and token:
            _backup_before_live_restore(settings, market)
        result = offsite.restore(url, token, int(backup_id) if backup_id else None, target, allow_live=live,
                                 live_root=settings.marketplace, marketplace=market.name, anchors=_anchors(settings),
                                 journal=settings.journal(),
                                 **_names(settings))
    except (offsite.OffsiteError, archive.ArchiveError, ValueError) as exc:
        return TaskFailed(f"restore from Turso failed: {exc}")
    print("\n".join(result.lines()), flush=True)
    return None


def list_backups(settings, verify: bool) -> TaskFailed | None:
    print(f"local backups in {settings.archives_dir}:")
    local = archive.list_local(settings.archives_dir, verify=verify)
    print("\n".join(b.line() for b in local) or "  none yet: run `doit -n 1 backup`")
    url, token = turso(settings)
    try:
        listing = offsite.list_offsite(url, token, verify=verify, **_names(settings))
    except offsite.OffsiteError as exc:
        return TaskFailed(f"listing the off-site backups failed: {exc}")
    print("\n".join(listing.lines()), flush=True)
    if not verify:
        return None
    bad_local = [b for b in local if b.problems or b.state != "complete"]
    bad_remote = [b for b in listing.backups if b.problems]
    if bad_local or bad_remote:
        return TaskFailed(f"verification found problems: {len(bad_local)} local and {len(bad_remote)} off-site "
                          "backup(s); the lines above say which and how to fix them")
    print(f"verified: {len(local)} local and {len(listing.backups)} off-site backup(s), every hash matches",
          flush=True)
    return None


def check(settings) -> TaskFailed | None:
    """`doit check`: with Vertex, one cheap call through the throttle proves credentials, project,
    location and model; what failed is printed with its fix."""
    print("\n".join(settings_lines(settings)), flush=True)
    if settings.provider == "offline":
        print("provider: offline: no account is needed; it makes no API calls. To use Gemini on Vertex AI, set "
              "provider=vertex and GOOGLE_CLOUD_PROJECT, then run `doit check` again.", flush=True)
        return None
    from skillbuild import calls
    from skillbuild.calls.throttle import QuotaExhausted
    from skillbuild.providers import ProviderError

    print("\n".join(_vertex_setting_lines(settings)), flush=True)
    try:
        ok, message = calls.preflight(settings)
    except (ProviderError, QuotaExhausted, ValueError) as exc:  # bad setup or today's budget spent
        ok, message = False, f"Vertex AI preflight could not run: {exc}"
    print(message, flush=True)
    if ok:
        return None
    return TaskFailed("Vertex AI is not usable with these settings; fix what the line above names and run "
                      "`doit check` again")


def settings_lines(settings) -> list[str]:
    """Where the marketplace and state are, and every setting not at its default with where it came from."""
    lines = [f"marketplace: {settings.marketplace}  [{settings.sources['marketplace']}]",
             f"state: {settings.cache_dir.parent} and {settings.build_root}"]
    lines += [f"  {key}: {'***' if KEYS[key].secret else settings.values[key]}  [{source}]"
              for key, source in settings.sources.items() if source != "default" and key != "marketplace"]
    return lines


def _vertex_setting_lines(settings) -> list[str]:
    """What the preflight will use and where each value came from (the token is never shown)."""
    def shown(key: str, value) -> str:
        return f"  {key}: {value or '(not set)'}  [{settings.sources.get(key, 'default')}]"

    lines = ["provider: vertex", shown("model", settings.model), shown("project", settings.project or
                                                                        "(from Application Default Credentials)"),
             shown("location", settings.location)]
    if settings.vertex_endpoint:
        token = "set" if settings.vertex_token else "NOT SET (set SKILLBUILD_VERTEX_TOKEN)"
        lines.append(shown("vertex_endpoint", settings.vertex_endpoint) + f"; static token {token}")
    else:
        lines.append("  credentials: Application Default Credentials (`gcloud auth application-default login`)")
    return lines


def print_status(settings, market) -> None:
    """`doit status`: every plugin's state from discovery and provenance, with its last audit outcome."""
    from skillbuild import build
    from skillbuild.ui import lint, status

    rows = status.rows(settings, market, build.expected_provenance(settings))
    outcomes = build.open_audit(settings).last_outcomes() if settings.audit_db.exists() else {}
    scores = {s.key: s.points for s in lint.scores(settings, market)}
    print(f"marketplace: {market.name} ({settings.marketplace}); provider: {settings.provider}")
    print(status.format_table(rows, outcomes, scores), flush=True)


def write_report(settings, market) -> TaskFailed | None:
    """`doit report`: the page for this marketplace, copied to build/report.html as the latest report.
    Its quota line is the daily budget the throttle enforces, from the throttle's own limits."""
    from skillbuild import build
    from skillbuild.calls.throttle import limits_from_settings
    from skillbuild.ui import report

    try:
        limits = limits_from_settings(settings)
    except ValueError as exc:
        return TaskFailed(f"report: {exc}")
    from skillbuild.ui import lint

    sizes = {p.key: p.target.stat().st_size for p in market.plugins if p.target and p.target.is_file()}
    out = report.write_html(build.open_audit(settings), settings.report_file, limits.rpd_effective,
                            skill_sizes=sizes, quota_basis=f"rpd {limits.rpd} / safety factor {limits.safety_factor:g}",
                            scores={s.key: s.points for s in lint.scores(settings, market)},
                            routing=lint.read_saved(settings))
    latest = report.copy_latest(out, settings.latest_report_file)
    print(f"report written to {out} (latest report: {latest})", flush=True)
    return None


def print_plan(settings, market, mode: str | None = None) -> TaskFailed | None:
    """`doit plan [mode=batch]`: computed from files and recorded data only; a bad setting fails with its name."""
    from skillbuild import build, calls, planning
    from skillbuild.providers import ProviderError

    try:
        throttle = calls.throttle_for(settings) if settings.provider != "offline" else None
        plan = planning.make_plan(settings, market, build.expected_provenance(settings), settings.model_id,
                                  throttle)
    except (ValueError, RuntimeError, ProviderError, FileNotFoundError) as exc:
        return TaskFailed(f"plan: {exc}")
    print(planning.format_plan(plan), flush=True)
    if plan.plugins and settings.provider != "offline":
        from skillbuild.calls.spend import plan_line

        print(plan_line(settings, plan.cost), flush=True)
    if mode == "batch":
        from skillbuild.calls.batch import format_batch_plan

        print("\n" + format_batch_plan(settings, plan), flush=True)
    return None


def print_quota(settings) -> TaskFailed | None:
    """`doit quota`: today's calls, budget left, 429s, pace and a recommendation."""
    from skillbuild import calls, planning

    try:
        text = planning.format_quota(settings, calls.throttle_for(settings))
    except (ValueError, RuntimeError) as exc:
        return TaskFailed(f"quota: {exc}")
    print(text, flush=True)
    return None
