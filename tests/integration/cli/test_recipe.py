"""`rlrctl recipe` against a real Redis: a recipe file added once per content, listed and
shown; a switch printed with what it replaced; a refusal as one line with exit status 2; the
history with who and via what."""

from __future__ import annotations

import json

from click.testing import CliRunner

from daemon.cli import main
from tests.integration.recipes.conftest import number

FILE = """\
name = "{name}"
number = {number}
product = "BRK-100-A"
class = "{cls}"
model = "production"
threshold = 0.82
deadline_ms = 1500

[[views]]
name = "top"
camera = "cam1"
[[views]]
name = "side"
camera = "cam1"
threshold = 0.9
"""


def _run(redis_url: str, *args: str):
    return CliRunner().invoke(main, ["recipe", *args, "--redis-url", redis_url],
                              env={"RLR_CONFIG": None, "RLR_REDIS_URL": None})


def _file(tmp_path, name: str, cls: str = "tile", n: int | None = None):
    path = tmp_path / f"{name}.toml"
    path.write_text(FILE.format(name=name, cls=cls, number=n or number()))
    return str(path)


def test_add_list_show_a_recipe_file(redis_url, tmp_path, names):
    name = names("bracket")
    path = _file(tmp_path, name)
    out = _run(redis_url, "add", path, "--by", "ann")
    assert out.exit_code == 0 and f"added {name}@1" in out.output, out.output
    again = _run(redis_url, "add", path)
    assert f"unchanged {name}@1" in again.output
    listed = _run(redis_url, "list")
    row = next(ln for ln in listed.output.splitlines() if ln.startswith(name))
    assert "BRK-100-A" in row and "tile" in row and "top,side" in row and "ann" in row
    shown = _run(redis_url, "show", name)
    assert f"{name}@1" in shown.output and "camera cam1, threshold 0.9" in shown.output
    as_json = json.loads(_run(redis_url, "show", name, "--json").output)
    assert as_json["class"] == "tile" and as_json["revision"] == 1
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nproduct = "p"\nclass = "c"\nviews = []\n')
    refused = _run(redis_url, "add", str(bad))
    assert refused.exit_code == 2 and "views" in refused.output


def test_activate_and_history_show_who_via_and_refusals(redis_url, tmp_path, names, deployed,
                                                        line):
    good, bad, n = names("tile"), names("bracket"), number()
    _run(redis_url, "add", _file(tmp_path, good, "tile", n))
    _run(redis_url, "add", _file(tmp_path, bad, "bracket"))
    out = _run(redis_url, "activate", "--number", str(n), "--line", line, "--by", "ann")
    assert out.exit_code == 0 and f"{good}@1 active since" in out.output, out.output
    assert "by ann via cli; was none" in out.output
    refused = _run(redis_url, "activate", bad, "--line", line, "--by", "bob")
    assert refused.exit_code == 2, refused.output
    lines = refused.output.strip().splitlines()
    assert len(lines) == 1 and f"names class 'bracket', but {deployed}" in lines[0]
    assert lines[0].endswith(f"the active recipe stays {good}@1")
    history = _run(redis_url, "history", "--line", line).output.splitlines()
    assert f"{good}@1 active since" in history[0]
    assert "refused" in history[1] and bad in history[1] and "bob" in history[1]
    assert "activated" in history[2] and "cli" in history[2] and "ann" in history[2]
    usage = _run(redis_url, "activate", "--line", line)
    assert usage.exit_code == 2 and "NAME or --number" in usage.output
