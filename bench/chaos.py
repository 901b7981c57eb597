"""Chaos run: SIGKILL the whole doit process tree at random moments, restart, then prove nothing was lost.

    python bench/chaos.py [--kills 20] [--corpus PATH | --synthetic N] [--seed S] [--latency 0.05-0.3]
                          [--workers 2] [--markdown] [--with-tests] [--keep DIR]
                          [--backup-kills 5] [--restore-kills 5] [--no-sqld-upload] [--tmpfs-plugins 40]

The check itself (what is killed, what is checked after every kill and at the end) is
skillbuild/testing/chaos.py; the kills around the build (during `doit backup`, `doit restore`, an off-site
upload whose sqld is killed and restarted, a cache on a 200 KiB tmpfs, which needs root) are
skillbuild/testing/chaos_ops.py. `--markdown` prints docs/reliability.md (with `--with-tests`, the fault matrix
and bad-input tables, skillbuild/testing/matrix.py, get their verdicts from running tests/test_faults.py and
tests/test_bad_input.py in a pytest subprocess).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "rules") not in sys.path:
    sys.path.insert(0, str(ROOT / "rules"))

from skillbuild.testing.chaos import Report, chaos, rows, synthetic_marketplace  # noqa: E402
from skillbuild.testing.matrix import BAD_INPUTS, FAULTS, OTHER_FAULTS  # noqa: E402

# The shared corpus sits beside the checkout (../shared/corpus/...); pass another path as an argument.
CORPUS = ROOT.parent / "shared" / "corpus" / "claude-code-plugins"


def plain(report: Report) -> str:
    width = max(len(k) for k, _ in rows(report))
    lines = [f"{k:<{width}}  {v}" for k, v in rows(report)]
    lines.append(f"{'result':<{width}}  {'PASS' if report.ok else 'FAIL'} in {report.seconds:.0f} s")
    for label, items in (("partial", report.partial), ("rows lost", report.ledger.rows_lost),
                         ("paid twice", report.ledger.paid_twice), ("differs", report.differences),
                         ("temp left", report.temps_at_end),
                         ("operations", report.ops.problems() if report.ops else [])):
        lines += [f"  {label}: {item}" for item in items[:10]]
    return "\n".join(lines)


def markdown_table(report: Report) -> str:
    lines = ["| Figure | Value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows(report)]
    return "\n".join(lines)


def run_tests(files: list[str]) -> dict[str, str]:
    """Run pytest on `files`; test id (name[param]) -> passed | failed | skipped."""
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                        *files], cwd=ROOT, capture_output=True, text=True)
        results = {}
        for case in ET.parse(junit).getroot().iter("testcase"):
            outcome = "passed"
            for child in case:
                outcome = {"failure": "failed", "error": "failed", "skipped": "skipped"}.get(child.tag, outcome)
            results[case.get("name")] = outcome
    return results


def _verdict(results: dict[str, str], prefix: str) -> str:
    found = [v for k, v in results.items() if k.startswith(prefix)]
    if not found:
        return "not run"
    return "passed" if all(v == "passed" for v in found) else ", ".join(sorted(set(found)))


def verdict_tables(results: dict[str, str] | None) -> str:
    show = (lambda prefix: _verdict(results, prefix)) if results is not None else (lambda prefix: "see tests")
    lines = ["## Fault matrix", "",
             "`pytest tests/test_faults.py` runs each row through the real `doit provider=vertex` on a copy of "
             "examples/ (three plugins to build, `deploy-checker` starting with a hand-written stub) with "
             "`request_timeout=1`, `max_attempts=3` and short backoff. A failure row passes only if the stub is "
             "byte-for-byte unchanged, every plugin has an audit row with the named error class, and the run "
             "summary has a `FAILED <plugin> (<phase>): <reason>` line for each; a retry row only if an "
             "`api_calls` row records the fault and all three plugins were built.", "",
             "| Fault | Scripted as | Outcome | Evidence in the audit DB | Test |", "|---|---|---|---|---|"]
    for f in FAULTS:
        lines.append(f"| {f.name} | `--fault {f.spec}` | {f.expect}: {f.outcome} | `{f.evidence}` | "
                     f"{show('test_fault_ends_in_retry_or_clean_failure[' + f.name + ']')} |")
    for name, outcome, evidence, test in OTHER_FAULTS:
        lines.append(f"| {name} | real process | {outcome} | {evidence} | {show(test)} |")
    lines += ["", "## Bad input", "",
              "`pytest tests/test_bad_input.py` builds one hostile marketplace (examples/ plus every bad input "
              "below) with `doit -n 2 provider=vertex`, recording every request body the fake server receives; "
              "the model obeys the injection once (its first SKILL.md for the injected plugin is named "
              "`../../pwned`, its repair echoes the injected sentence).", "",
              "| Bad input | Outcome | Test |", "|---|---|---|"]
    lines += [f"| {what} | {outcome} | {show(test)} |" for what, outcome, test in BAD_INPUTS]
    return "\n".join(lines)


def document(report: Report, command: str, source: Path, with_tests: bool) -> str:
    results = run_tests(["tests/test_faults.py", "tests/test_bad_input.py"]) if with_tests else None
    led = report.ledger
    parts = [
        "# Reliability: what a kill, a fault or bad input can do to a build",
        "",
        f"Generated by `{command}` (the fault and bad-input verdicts come from running their tests; "
        "`pytest tests/test_chaos.py tests/test_faults.py tests/test_bad_input.py` checks the same claims in "
        "about two minutes).",
        "",
        "## Kills",
        "",
        f"A temp copy of `{source}` ({report.plugins} plugins with a SKILL.md target) was built with "
        f"`{report.command}` against the fake Vertex server (0.05-0.3 s latency, no faults). The whole process "
        f"group (doit and its workers) got SIGKILL {report.kills} times at random moments, restarting after "
        "each: most kills come a random 0-4 s after the run printed its first event, one in four during "
        "start-up. After every kill the targets, the temp files and the audit DB were checked; then the build "
        "ran to the end, a second run checked that nothing was left to pay for, and the result was "
        "byte-compared with an uninterrupted build of a fresh copy against a fresh server.",
        "",
        markdown_table(report),
        "",
        f"Result: **{'PASS' if report.ok else 'FAIL'}** in {report.seconds:.0f} s.",
        "",
        "How to read it:",
        "",
        "- *Partial files*: a target must hold its old bytes or a complete file that passes the gates and "
        "carries `generator: skillbuild-vertex` provenance. Writes go through a temp file, fsync and "
        "`os.replace`, so a kill leaves the old file or the new one.",
        "- *Temp files*: a kill between creating the temp file and renaming it leaves `.skillbuild-*.tmp`. The "
        "next build removes them as soon as it holds the run lock (nothing else can be writing then).",
        f"- *Rows lost*: each of the {led.completed} completed phases (answers in the response cache) must have "
        "its row in `enhancements`: a success, or a failure of class `gate` or `schema` when the gates refused the "
        "answer. A kill between an answer and its row is healed by the restart: "
        "doit forgot the task (its state is saved only when a run ends), reruns it, the answer comes from the "
        "cache free of charge, and the row is written then.",
        "- *Paid twice*: the fake server logs a digest of each prompt; a request that arrives after its answer "
        "was already stored in the response cache would be a second payment for finished work. Requests cut "
        "by a kill before their answer was stored must be sent again: they are counted apart, at most one per "
        "worker per kill.",
        "- *Runs left open*: the kills that came after the run was opened in the audit DB leave a run without "
        "an end time, which is the honest record of a killed run.",
        "",
        "## Kills around the build",
        "",
        "On the same sandbox, after the build's kills: `doit -a backup` (local archive, then Turso on a real "
        "sqld) SIGKILLed at random moments of an uninterrupted backup's length, then run to the end and "
        "`doit backups verify=1`; an 8 MiB incompressible file added (so the archive is new) and sqld SIGKILLed "
        "while `doit backup` uploads 16 KiB chunks (up to three tries, should one upload finish first), "
        "restarted on its data, and `doit backup` run again (it must "
        "resume: chunks already there are not sent again); `doit restore plugin=K` SIGKILLed at random moments "
        "of an uninterrupted restore's length, each followed by a restore run to the end (the plugin folder must "
        "then be whole: as built or as the backup holds it); a synthetic build with its `cache_root` on a "
        "200 KiB tmpfs (its own fake server), then the tmpfs grown to 64 MiB and the build rerun. Last, one more "
        "build (which reaps what killed runs left) and the counts of what is left. *Billed calls missing* compares "
        "the requests the fake server answered with the rows of `api_calls`.",
        "",
        "## Two builds at once",
        "",
        "A build takes `cache/<marketplace>/run.lock` (`fcntl.flock`, released by the kernel however the "
        "process ends, SIGKILL included) before it touches anything. A second build exits at once with status "
        "**75** (EX_TEMPFAIL) and names the holder (pid, run id, start time, command); with `lock_wait=SECONDS` "
        "(`SKILLBUILD_LOCK_WAIT`) it waits that long first. `doit list`, `doit status` and other runs that "
        "cannot touch plugins never take the lock. Tested with two real doit processes in tests/test_chaos.py.",
        "",
        verdict_tables(results),
    ]
    return "\n".join(parts) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs to survive (default 20)")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="marketplace to copy (default: the corpus)")
    parser.add_argument("--synthetic", type=int, help="build N synthetic plugins instead of --corpus")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--latency", default="0.05-0.3", help="fake server seconds per request, A-B")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-delay", type=float, default=4.0,
                        help="longest wait after the first event before a kill, seconds")
    parser.add_argument("--markdown", action="store_true", help="print docs/reliability.md")
    parser.add_argument("--with-tests", action="store_true",
                        help="with --markdown: run the fault and bad-input tests and add their tables")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--backup-kills", type=int, default=5, help="SIGKILLs during `doit backup` (default 5)")
    parser.add_argument("--restore-kills", type=int, default=5, help="SIGKILLs during `doit restore` (default 5)")
    parser.add_argument("--no-sqld-upload", action="store_true",
                        help="skip the off-site upload whose sqld is killed and restarted")
    parser.add_argument("--tmpfs-plugins", type=int, default=40,
                        help="plugins of the build whose cache is on a 200 KiB tmpfs (0: skip; needs root)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="skillbuild-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    source = args.corpus
    if args.synthetic:
        source = synthetic_marketplace(work / "source", args.synthetic)
    say = (lambda text: print(text, file=sys.stderr, flush=True))
    report = chaos(source, work, args.kills, seed=args.seed, latency=args.latency, workers=args.workers,
                   max_delay=args.max_delay, backup_kills=args.backup_kills, restore_kills=args.restore_kills,
                   sqld_upload=not args.no_sqld_upload, tmpfs_plugins=args.tmpfs_plugins, say=say)
    command = (f"python bench/chaos.py --kills {args.kills}" + (f" --synthetic {args.synthetic}" if args.synthetic
               else "" if args.corpus == CORPUS else f" --corpus {args.corpus}")
               + (" --markdown" if args.markdown else "") + (" --with-tests" if args.with_tests else ""))
    if args.markdown:
        print(document(report, command, source, args.with_tests))
    else:
        print(plain(report))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
