"""The test tree's own rules: unit tests mirror the code, and the root conftest stays light.

A module `<pkg>/<part>/<module>.py` with logic has its unit tests in
`tests/unit/<pkg>/<part>/test_<module>.py` (or `test_<module>_<aspect>.py` when one file would be
too long), or is listed in TESTED_ELSEWHERE with the test file that covers it. The tree is read
when the test runs, so a module added, moved or renamed is checked as it stands.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("rlr", "daemon")

# Modules without a mirrored unit test file, and the test that covers them instead. One line per
# module, grouped by why: add yours to its group, remove it when it gets its own tests/unit file
# (the test says so).
TESTED_ELSEWHERE = {
    # commands: driven end to end (click, real Redis) by the integration tests of their part
    "daemon/cli/alerts.py": "tests/integration/line/bridges/test_alertfeed.py",
    "daemon/cli/bridge.py": "tests/integration/line/bridges/test_modbus.py",
    "daemon/cli/calibrate.py": "tests/integration/cli/test_cli.py",
    "daemon/cli/camera_health.py": "tests/integration/serve/test_camera_health.py",
    "daemon/cli/camera_options.py": "tests/integration/line/test_cameras.py",
    "daemon/cli/check.py": "tests/integration/serve/test_worker.py",
    "daemon/cli/collect.py": "tests/integration/line/test_capture.py",
    "daemon/cli/console.py": "tests/integration/console/test_console_browser.py",
    "daemon/cli/demo.py": "tests/integration/line/test_demo.py",
    "daemon/cli/engines.py": "tests/integration/cli/test_engines_cli.py",
    "daemon/cli/evaluate.py": "tests/integration/cli/test_cli.py",
    "daemon/cli/import_official.py": "tests/integration/cli/test_cli.py",
    "daemon/cli/jobs.py": "tests/integration/jobs/test_jobs.py",
    "daemon/cli/models.py": "tests/integration/models/test_registry.py",
    "daemon/cli/options.py": "tests/integration/cli/test_errors.py",
    "daemon/cli/produce.py": "tests/integration/line/test_producer.py",
    "daemon/cli/recipe.py": "tests/integration/cli/test_recipe.py",
    "daemon/cli/records.py": "tests/integration/records/test_pictures.py",
    "daemon/cli/rollout.py": "tests/integration/models/test_registry.py",
    "daemon/cli/score.py": "tests/integration/cli/test_cli.py",
    "daemon/cli/status.py": "tests/integration/deploy/test_acl.py",
    "daemon/cli/train.py": "tests/integration/cli/test_cli.py",
    "daemon/cli/trigger.py": "tests/integration/line/test_producer.py",
    "daemon/cli/worker.py": "tests/integration/serve/test_worker.py",
    # the console: its security and rendering in one unit file, its live feed against Redis
    "daemon/console/app.py": "tests/unit/daemon/console/test_security.py",
    "daemon/console/pages.py": "tests/unit/daemon/console/test_security.py",
    "daemon/console/views.py": "tests/unit/daemon/console/test_security.py",
    # Redis-backed by nature: tested against a real server
    "daemon/jobs/queue.py": "tests/integration/jobs/test_jobs.py",
    "daemon/recipes/store.py": "tests/integration/recipes/test_store.py",
    "daemon/records/frame_source.py": "tests/integration/records/test_pictures.py",
    "daemon/records/keeper.py": "tests/integration/records/test_pictures.py",
    "daemon/records/recorder.py": "tests/integration/records/test_recorder.py",
    # migrations: run up from empty and compared with the tables on both databases
    "daemon/records/migrations/versions/0001_frames_and_parts.py":
        "tests/unit/daemon/records/test_schema.py",
    "daemon/records/migrations/versions/0002_hourly_rollups.py":
        "tests/unit/daemon/records/test_schema.py",
    "daemon/records/migrations/versions/0003_part_instances_and_recipes.py":
        "tests/integration/records/test_store.py",
    "daemon/jobs/runner.py": "tests/integration/jobs/test_jobs.py",
    "daemon/jobs/trainer.py": "tests/integration/jobs/test_jobs.py",
    "daemon/line/capture.py": "tests/integration/line/test_capture.py",
    "daemon/line/demo.py": "tests/integration/line/test_demo.py",
    "daemon/line/embedded.py": "tests/integration/wire/test_cluster.py",
    "daemon/line/triggers.py": "tests/integration/line/test_cameras.py",
    # a GigE Vision camera (Aravis's fake one) is a server process: not in tests/unit
    "daemon/line/sources/gige.py": "tests/integration/line/test_cameras.py",
    "daemon/models/status.py": "tests/integration/serve/test_worker.py",
    "daemon/serve/redis_io.py": "tests/integration/serve/test_worker.py",
    "daemon/wire/groups.py": "tests/integration/wire/test_groups.py",
    # a bridge's pure parts in its unit file; OPC UA only against its real peer
    "daemon/line/bridges/opcua.py": "tests/integration/line/bridges/test_opcua.py",
    "daemon/line/bridges/plcwrites.py": "tests/integration/line/bridges/test_plcwrites.py",
    # per-part settings classes: checked together where they are composed (cli/settings.py)
    "daemon/line/settings.py": "tests/unit/daemon/cli/test_settings.py",
    "daemon/models/settings.py": "tests/unit/daemon/cli/test_settings.py",
    "daemon/records/settings.py": "tests/unit/daemon/cli/test_settings.py",
    "daemon/serve/settings.py": "tests/unit/daemon/cli/test_settings.py",
    "daemon/wire/settings.py": "tests/unit/daemon/cli/test_settings.py",
    # the worker's parts, tested through the worker over the in-memory ports
    "daemon/serve/camera_measures.py": "tests/unit/daemon/serve/rules/test_camera_health.py",
    "daemon/serve/cameras.py": "tests/unit/daemon/serve/rules/test_camera_health.py",
    "daemon/serve/decode.py": "tests/unit/daemon/serve/test_feed.py",
    "daemon/serve/liveness.py": "tests/unit/daemon/serve/test_worker_supervision.py",
    "daemon/serve/memory_io.py": "tests/unit/daemon/serve/test_worker.py",
    "daemon/serve/outage.py": "tests/unit/daemon/serve/test_worker.py",
    "daemon/serve/ports.py": "tests/unit/daemon/serve/test_worker.py",
    "daemon/serve/prometheus.py": "tests/unit/deploy/test_grafana.py",
    "daemon/serve/served_model.py": "tests/unit/daemon/serve/test_feed.py",
    "daemon/serve/serving.py": "tests/unit/daemon/serve/test_worker_supervision.py",
    "daemon/serve/verdicts.py": "tests/unit/daemon/serve/test_worker.py",
    # small wire pieces, tested with their users
    "daemon/wire/backoff.py": "tests/unit/daemon/line/test_producer.py",
    "daemon/wire/codec.py": "tests/unit/daemon/wire/test_schema.py",
    "daemon/wire/text.py": "tests/unit/daemon/wire/test_schema.py",
    # the model library: parts tested through the module that uses them
    "rlr/features.py": "tests/unit/rlr/test_train.py",
    "rlr/inference.py": "tests/unit/rlr/test_train.py",
    "rlr/model.py": "tests/unit/rlr/test_layers.py",
    "rlr/pipeline.py": "tests/unit/rlr/test_train.py",
    "rlr/report.py": "tests/unit/rlr/test_evaluate.py",
    "rlr/state.py": "tests/unit/rlr/test_compat.py",
    "rlr/visualize.py": "tests/integration/cli/test_cli.py",
}


def _has_logic(path: Path) -> bool:
    """A function or method with a body beyond a docstring, `...` or `pass` (a dunder alone,
    e.g. an exception's `__init__`, is not logic)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if node.name.startswith("__") and node.name.endswith("__"):
            continue
        body = [b for b in node.body
                if not (isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant))]
        if any(not isinstance(b, ast.Pass) for b in body):
            return True
    return False


def _modules() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
                  if p.name not in ("__init__.py", "__main__.py") and _has_logic(p))


def _mirrored(module: str) -> bool:
    path = Path(module)
    folder = ROOT / "tests" / "unit" / path.parent
    return (folder / f"test_{path.stem}.py").exists() or any(folder.glob(f"test_{path.stem}_*.py"))


def test_every_module_with_logic_has_its_unit_tests_or_says_where_it_is_tested():
    missing = [m for m in _modules() if not _mirrored(m) and m not in TESTED_ELSEWHERE]
    assert missing == [], (
        "modules without tests/unit/<pkg>/<part>/test_<module>.py; write it, or add the module to "
        f"TESTED_ELSEWHERE in {Path(__file__).name} with the test that covers it: {missing}")


def test_the_tested_elsewhere_list_is_current():
    modules = set(_modules())
    gone = sorted(m for m in TESTED_ELSEWHERE if m not in modules)
    mirrored = sorted(m for m in TESTED_ELSEWHERE if m in modules and _mirrored(m))
    no_test = sorted(t for t in TESTED_ELSEWHERE.values() if not (ROOT / t).is_file())
    assert gone == [], f"no longer modules with logic, remove them from TESTED_ELSEWHERE: {gone}"
    assert mirrored == [], f"they have their own unit tests now, remove them: {mirrored}"
    assert no_test == [], f"TESTED_ELSEWHERE names test files that do not exist: {no_test}"


def test_the_pure_tests_load_without_cv2_or_torch():
    """The root conftest imports neither: the import-rule test is collected (conftests, plugins
    and the test module imported) with both made unimportable, and neither is loaded after."""
    code = (
        "import sys\n"
        "sys.modules['cv2'] = None; sys.modules['torch'] = None\n"
        "import pytest\n"
        "args = ['-q', '-p', 'no:cacheprovider', '--collect-only',"
        " 'tests/unit/test_import_boundary.py']\n"
        "code = pytest.main(args)\n"
        "heavy = [m for m in ('cv2', 'torch') if sys.modules.get(m) is not None]\n"
        "print('heavy:', heavy)\n"
        "sys.exit(code or len(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "heavy: []" in out.stdout
