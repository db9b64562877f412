"""Training-job specs: what `rlrctl train --submit` refuses before anything reaches Redis."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from daemon.cli import main
from daemon.errors import JobError
from daemon.jobs.queue import Job
from daemon.jobs.spec import JobSpec


def _spec(**changes) -> JobSpec:
    base = {"data": "/data/mvtec", "preset": "tiny", "epochs": 3, "far": 0.01}
    return JobSpec(**{**base, **changes})


def _problem(**changes) -> str:
    with pytest.raises(JobError) as err:
        _spec(**changes).validate()
    return str(err.value)


def test_a_valid_spec_survives_the_trip_through_json():
    spec = _spec(classes=["tile", "fabric"], deploy_line="line1", canary_cameras=("cam1",),
                 max_minutes=30, batch_size=4, seed=3)
    assert spec.validate() is spec
    back = JobSpec.from_json(spec.to_json())
    assert back == spec
    assert back.classes == ("tile", "fabric") and back.canary_cameras == ("cam1",)


def test_overrides_reach_the_model_config_as_local_training_would_apply_them():
    cfg = _spec(epochs=7, max_minutes=2, batch_size=5, lr=0.01, image_size=96, seed=4).config()
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.seed) == (7, 5, 0.01, 4)
    assert cfg.train.max_seconds == 120 and cfg.backbone.image_size == 96
    assert _spec(epochs=None).config().train.epochs == JobSpec(data="/d", preset="tiny") \
        .config().train.epochs  # None keeps the preset's value


def test_unknown_preset_is_named_with_the_choices():
    msg = _problem(preset="huge")
    assert "'huge'" in msg and "lite" in msg and "tiny" in msg


@pytest.mark.parametrize("far", [0, 1, -0.1, 1.5])
def test_false_alarm_rate_must_be_strictly_between_0_and_1(far):
    assert "far" in _problem(far=far) and "(0, 1)" in _problem(far=far)


@pytest.mark.parametrize("epochs", [0, -3])
def test_epochs_must_be_at_least_one(epochs):
    assert f"epochs {epochs} must be at least 1" in _problem(epochs=epochs)


def test_data_path_is_the_trainers_so_it_must_be_absolute_but_is_not_checked_here():
    assert "relative" in _problem(data="data/mvtec")
    assert "needs a data path" in _problem(data=None)
    _spec(data="/nowhere/on/this/laptop").validate()  # the trainer checks it
    _spec(data=r"D:\plant\data").validate()
    _spec(data=None, dataset="elpv").validate()  # read from the installed package


def test_library_checks_run_too():
    assert "batch_size" in _problem(batch_size=0)
    assert "image_size" in _problem(image_size=8)
    assert "dataset 'coco' unknown" in _problem(dataset="coco")


def test_every_problem_is_reported_at_once():
    msg = _problem(preset="huge", far=2, epochs=0)
    assert "huge" in msg and "far 2" in msg and "epochs 0" in msg


@pytest.mark.parametrize(("changes", "expected"), [
    ({"canary_cameras": ("cam1",)}, "need a line to deploy to"),
    ({"deploy_line": "line1"}, "is a canary"),
    ({"deploy_line": "line1", "canary_cameras": ("a",), "canary_percent": 5}, "not both"),
    ({"deploy_line": "line1", "canary_percent": 0}, "(0, 100]"),
    ({"deploy_line": "line1", "canary_percent": 150}, "(0, 100]"),
    ({"deploy_line": "line 1", "canary_percent": 10}, "not a valid name"),
    ({"deploy_line": "line1", "canary_cameras": ("cam/1",)}, "camera 'cam/1'"),
])
def test_deploy_targets_are_checked(changes, expected):
    assert expected in _problem(**changes)


def test_a_spec_from_another_version_is_refused():
    with pytest.raises(JobError, match="version"):
        JobSpec.from_json('{"v": 99, "data": "/d"}')


def test_job_records_parse_with_missing_and_bad_fields():
    spec = _spec()
    job = Job.from_hash("j1", {b"state": b"running", b"spec": spec.to_json().encode(),
                               b"epoch": b"2", b"epochs": b"10", b"loss": b"0.5",
                               b"eta_s": b"", b"heartbeat_at": b"1700000000.5",
                               b"metrics": b"not json"})
    assert (job.state, job.epoch, job.epochs, job.loss) == ("running", 2, 10, 0.5)
    assert job.eta_s is None and job.metrics == {} and job.spec == spec
    assert job.heartbeat_at == 1700000000.5 and not job.finished


def test_submit_refuses_bad_specs_and_local_only_options_before_touching_redis():
    # The Redis URL points nowhere: every refusal below must come before any connection.
    env = {"RLR_REDIS_URL": "redis://127.0.0.1:1/0"}
    run = CliRunner().invoke
    res = run(main, ["train", "--submit", "--data", "/d", "--preset", "tiny", "--far", "1"],
              env=env)
    assert res.exit_code == 2 and "far 1.0 must be in (0, 1)" in res.output
    res = run(main, ["train", "--submit", "--data", "/d", "--out", "m.rlr"], env=env)
    assert res.exit_code == 2 and "--out: not with --submit" in res.output
    res = run(main, ["train", "--submit", "--data", "/d", "--device", "cuda"], env=env)
    assert res.exit_code == 2 and "--device" in res.output
    res = run(main, ["train", "--data", "/d", "--far", "0.01", "--out", "m.rlr"], env=env)
    assert res.exit_code == 2 and "only with --submit" in res.output
    res = run(main, ["train", "--data", "/d"], env=env)
    assert res.exit_code == 2 and "--out" in res.output
