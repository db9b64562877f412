"""A real 3-master Redis Cluster: producers on three lines, several workers, lines on shards."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest
from redis.cluster import RedisCluster

from daemon.line.embedded import EmbeddedCluster
from daemon.wire import keys
from daemon.wire.schema import Result
from tests.integration.procs import Proc, daemon_env, start_worker, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with EmbeddedCluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c


def _spread_lines(client: RedisCluster, n: int = 3) -> list[str]:
    """Line names whose keys land on as many different masters as possible."""
    tag = uuid.uuid4().hex[:6]
    chosen, nodes = [], set()
    for i in range(200):
        name = f"l{tag}{i}"
        node = client.get_node_from_key(keys.frames(name)).name
        if node not in nodes or len(nodes) == len(client.get_primaries()):
            chosen.append(name)
            nodes.add(node)
        if len(chosen) == n:
            return chosen
    raise AssertionError("could not spread lines over the shards")


def _results(client: RedisCluster, line: str) -> list[Result]:
    return [Result.from_fields(f) for _, f in client.xrange(keys.results(line))]


def test_three_lines_on_a_cluster_every_frame_scored_exactly_once(cluster, served_model,
                                                                  synthetic_root, tmp_path):
    client = RedisCluster.from_url(cluster.url)
    lines = _spread_lines(client)
    opts = {"redis_cluster": "true", "backlog_limit": 5000, "frames_maxlen": 20000}
    workers = [start_worker(cluster.url, ",".join(lines), served_model, f"cw{i}", tmp_path,
                            **opts) for i in range(3)]
    producers = []
    try:
        wait_for(lambda: all(client.get(keys.worker(f"cw{i}")) for i in range(3)), 120,
                 "workers ready", tuple(workers))
        for line in lines:
            env = daemon_env(cluster.url, line, **opts)
            producers.append(Proc(["produce", "--source", str(synthetic_root / "tile" / "test"),
                                   "--camera", f"cam-{line}", "--fps", "0", "--loop",
                                   "--limit", "40"], env, tmp_path / f"prod-{line}.log"))
        for p in producers:
            assert p.p.wait(120) == 0, p.log_path.read_text()[-2000:]
        pushed = {line: [f[b"frame_id"].decode() for _, f in
                         client.xrange(keys.frames(line))] for line in lines}
        assert all(len(ids) == 40 for ids in pushed.values())
        wait_for(lambda: all(len(_results(client, ln)) >= 40 for ln in lines), 180,
                 "every line scored", tuple(workers))
        time.sleep(1.0)
        by_worker: Counter = Counter()
        for line in lines:
            res = _results(client, line)
            counts = Counter(r.frame_id for r in res)
            assert set(counts) == set(pushed[line]) and max(counts.values()) == 1, line
            by_worker.update(r.worker for r in res)
        assert len(by_worker) >= 2, "the workers did not share the load"
        shards = {client.get_node_from_key(keys.results(line)).name for line in lines}
        assert len(shards) >= 2, "all lines ended up on one shard"
        for line in lines:  # a line's keys share its shard (hash tag {line})
            node = client.get_node_from_key(keys.frames(line)).name
            assert client.get_node_from_key(keys.results(line)).name == node
            assert client.get_node_from_key(keys.stats(line)).name == node
    finally:
        for p in producers:
            p.stop()
        for w in workers:
            assert w.stop() == 0
        client.close()


def test_registry_rollouts_and_jobs_work_on_a_cluster(cluster, served_model, synthetic_root):
    from daemon.jobs.queue import JobSpec, cancel, get_job, submit
    from daemon.models.registry import Registry

    client = RedisCluster.from_url(cluster.url)
    try:
        reg = Registry(client)
        version = reg.register_file(served_model, created_by="test")
        assert reg.fetch(version.id) == served_model.read_bytes()
        lines = _spread_lines(client, 2)
        for line in lines:
            reg.deploy(line, version.id, by="test", why="cluster")
            assert reg.rollout(line).production == version.id
            assert reg.history(line)[0]["action"] == "deploy"
        assert set(reg.rollouts()) >= set(lines)
        job_id = submit(client, JobSpec(data=str(synthetic_root), preset="tiny", epochs=1),
                        by="test")
        assert get_job(client, job_id).state == "queued"
        cancel(client, job_id, by="test")
        assert get_job(client, job_id).state == "cancelled"
    finally:
        client.close()
