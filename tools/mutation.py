"""Mutation testing with mutmut 3 over the modules whose behaviour users rely on; prints a JSON summary.

    python tools/mutation.py                      # every module below (`make mutation`)
    python tools/mutation.py sync/quarantine.py   # one module (or several), with only its tests

mutmut reads its settings from the pyproject.toml of the folder it runs in, so each run gets a scratch
folder (.mutation/) holding links to the project and a pyproject.toml with the [tool.mutmut] section for
the modules asked for. mutmut runs the covering tests once with its trampolines on to learn which test
calls which function, then runs each mutant against only the tests that call the mutated function.
Results stay in .mutation/mutants/ (`cd .mutation && ../.venv/bin/mutmut results` / `show NAME`).
Not part of `make test` or CI: it takes long and its score is read, not asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# C360_MUTATION_DIR: another scratch folder, for a second run beside the first (e.g. under /tmp).
WORK = Path(os.environ.get("C360_MUTATION_DIR") or ROOT / ".mutation").resolve()

# Module (glob) -> the test files that exercise it. mutmut narrows each mutant to the tests that call
# the mutated function; these lists only bound the one instrumented run that finds them out.
IDENTITY_TESTS = ["tests/identity", "tests/api/test_cli.py"]
# Left out of the sync modules' runs: the simulator's own tests (it is not mutated) and the scheduling,
# serve and crash tests, which spend minutes (test_schedules alone 370 s) in the same flows that faster
# tests drive. In the recorded run every mutant would wait for them, and a surviving one run them all.
SYNC_TESTS = [
    "tests/sync",
    "--ignore=tests/sync/simulator",
    "--ignore=tests/sync/test_schedules.py",
    "--ignore=tests/sync/test_serve_prepare.py",
    "--ignore=tests/sync/test_crash_linking.py",
    "tests/infra/test_reference_checks.py",
]
MODULES: dict[str, list[str]] = {
    "identity/rules.py": IDENTITY_TESTS,
    "identity/survivorship.py": IDENTITY_TESTS,
    "identity/merge.py": [*IDENTITY_TESTS, "tests/api/test_mutations.py"],
    "identity/linking.py": [*IDENTITY_TESTS, "tests/sync/test_crash_linking.py"],
    "identity/engine.py": IDENTITY_TESTS,
    "sync/landing.py": SYNC_TESTS,
    "sync/quarantine.py": ["tests/sync/test_quarantine.py"],
    "sync/validation.py": SYNC_TESTS,
    "sync/connectors/*.py": SYNC_TESTS,
}
# Statuses as mutmut records them (exit code of the mutant's test run).
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no_tests", 33: "no_tests", 34: "skipped", 36: "timeout",
          24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", None: "not_checked"}  # fmt: skip


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def prepare(modules: list[str], tests: list[str]) -> None:
    """The scratch folder: links to the project's top-level entries and a pyproject with our section."""
    WORK.mkdir(exist_ok=True)
    for entry in ROOT.iterdir():
        if entry.name in {".mutation", ".git", ".venv", "mutants", "pyproject.toml"}:
            continue
        link = WORK / entry.name
        if not link.is_symlink() and not link.exists():
            link.symlink_to(entry)
    packages = sorted({m.split("/", 1)[0] + "/" for m in modules})
    section = "\n".join(
        [
            "[tool.mutmut]",
            f"source_paths = {_toml_list(packages)}",
            f"only_mutate = {_toml_list(modules)}",
            f"pytest_add_cli_args_test_selection = {_toml_list(tests)}",
            # What tests read beside the code (the committed schema, the rules files, the README).
            f"also_copy = {_toml_list(ALSO_COPY)}",
            # No cache or pytest-asyncio warnings from hundreds of runs; -x: the first failure kills.
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]',
        ]
    )
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    settings = WORK / "pyproject.toml"
    new = text + "\n" + section + "\n"
    if not settings.exists() or settings.read_text(encoding="utf-8") != new:
        settings.write_text(new, encoding="utf-8")
        # Other modules or tests: mutmut's cached mutants and stats no longer apply.
        shutil.rmtree(WORK / "mutants", ignore_errors=True)


ALSO_COPY = ["docs/", "config/", "README.md", "alembic.ini", "infra/migrations/"]


def summary(modules: list[str]) -> dict[str, Any]:
    """Per module: mutants by status, the score (killed or timed out, of those checked) and survivors."""
    out: dict[str, Any] = {}
    for meta in sorted((WORK / "mutants").rglob("*.py.meta")):
        module = str(meta.relative_to(WORK / "mutants")).removesuffix(".meta")
        data = json.loads(meta.read_text(encoding="utf-8"))
        codes: dict[str, int | None] = data["exit_code_by_key"]
        # Wall time of each mutant's forked test run, as mutmut timed it.
        seconds = [float(v) for v in data.get("durations_by_key", {}).values()]
        counts = dict.fromkeys(("killed", "survived", "timeout", "no_tests", "skipped", "not_checked"), 0)
        survivors = []
        for name, code in sorted(codes.items()):
            status = STATUS.get(code, "suspicious")
            counts[status] = counts.get(status, 0) + 1
            if status in ("survived", "no_tests"):
                survivors.append(name)
        checked = sum(v for k, v in counts.items() if k not in ("skipped", "not_checked"))
        score = round((counts["killed"] + counts["timeout"]) / checked, 4) if checked else None
        mean = round(sum(seconds) / len(seconds), 2) if seconds else None
        out[module] = {
            **counts,
            "total": len(codes),
            "score": score,
            "seconds_per_mutant": mean,
            "survivors": survivors,
        }
    return out


def drop_template(name: str) -> None:
    """Drop the run's template database (tests/conftest.py made it on the test server)."""
    sys.path.insert(0, str(ROOT))
    from sqlalchemy.engine import make_url

    from tests.conftest import drop_database, server_url

    asyncio.run(
        drop_database(make_url(server_url()).set(database=name).render_as_string(hide_password=False))
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("modules", nargs="*", help="modules to mutate (default: all of MODULES)")
    parser.add_argument("--tests", nargs="*", help="test files or folders instead of the modules' own")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--only",
        nargs="*",
        default=[],
        help="mutant names or globs to run (e.g. '*__mutmut_*0': every tenth, a sample); the rest wait",
    )
    parser.add_argument(
        "--template-db",
        action="store_true",
        help="sessions copy one migrated template database instead of migrating their own (measured slower "
        "here: docs/testing.md)",
    )
    parser.add_argument(
        "--summary", action="store_true", help="print the summary of the results kept so far; run nothing"
    )
    args = parser.parse_args()
    if args.summary:
        print(json.dumps({"tool": "mutmut", "per_module": summary([])}, indent=2, ensure_ascii=False))
        return 0
    modules = args.modules or list(MODULES)
    unknown = [m for m in modules if m not in MODULES and not (ROOT / m).is_file()]
    if unknown:
        parser.error(f"no such module: {', '.join(unknown)}")
    tests = args.tests or sorted({t for m in modules for t in MODULES.get(m, ["tests"])})
    prepare(modules, tests)
    started = time.monotonic()
    mutmut = Path(sys.executable).with_name("mutmut")
    # --template-db: every mutant's pytest session copies one database migrated once (tests/conftest.py).
    template = f"c360_mutation_{uuid.uuid4().hex[:10]}"
    env = dict(os.environ)
    env.pop("C360_TEST_TEMPLATE_DB", None)
    if args.template_db:
        env["C360_TEST_TEMPLATE_DB"] = template
    try:
        run = subprocess.run(
            [str(mutmut), "run", "--max-children", str(args.max_children), *args.only],
            cwd=WORK,
            env=env,
            stdout=subprocess.DEVNULL,  # its progress line redraws itself thousands of times
            check=False,
        )
    finally:
        if args.template_db:
            drop_template(template)
    report = {
        "tool": "mutmut",
        "modules": modules,
        "tests": tests,
        "seconds": round(time.monotonic() - started),
        "exit_code": run.returncode,
        "per_module": summary(modules),
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return run.returncode


if __name__ == "__main__":
    raise SystemExit(main())
