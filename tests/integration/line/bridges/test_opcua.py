"""`rlrctl bridge opcua` against a real Redis, a real worker and a real OPC UA client (asyncua):
browse the tree, subscribe to values and alert events, acknowledge as a user (anonymous
clients may only read), and alerts raised while the client was away, or across a bridge
restart, are still listed; the Parts folder, part events, Trigger and SelectRecipe."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from asyncua import Client, ua

from daemon.line.producer import push_images
from daemon.recipes.recipe import parse
from daemon.wire import keys
from daemon.wire.schema import Alert, HealthEvent
from tests.integration.line.bridges.helpers import add_part, has_group
from tests.integration.procs import Proc, daemon_env, results, start_worker, wait_for, wait_ready

USER, PASSWORD = "scada", "test-secret"


def _endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"opc.tcp://127.0.0.1:{s.getsockname()[1]}/rlr/"


def _start_bridge(redis_url: str, line: str, endpoint: str, tmp_path, name: str) -> Proc:
    env = daemon_env(redis_url, line, consumer="opcua-bridge", opcua_endpoint=endpoint,
                     opcua_username=USER, opcua_password=PASSWORD, plc_cameras="camA")
    return Proc(["bridge", "opcua"], env, tmp_path / f"{name}.log")


class _Handler:
    def __init__(self) -> None:
        self.values: list = []
        self.events: list = []

    def datachange_notification(self, node, val, data) -> None:
        self.values.append(val)

    def event_notification(self, event) -> None:
        self.events.append(event)


async def _until(pred, timeout: float, what: str) -> None:
    for _ in range(int(timeout / 0.05)):
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _connect(endpoint: str, user: bool = False) -> Client:
    client = Client(endpoint, timeout=5)
    if user:
        client.set_user(USER)
        client.set_password(PASSWORD)
    for _ in range(300):  # the bridge process is starting
        try:
            await client.connect()
            return client
        except (OSError, asyncio.TimeoutError):
            await asyncio.sleep(0.1)
    raise AssertionError(f"no OPC UA server at {endpoint}")


async def _unacked(client: Client, idx: int, line: str) -> list[str]:
    return await client.get_node(ua.NodeId(f"{line}.camA.UnacknowledgedAlerts", idx)).read_value()


@pytest.mark.slow
def test_tree_values_events_acknowledge_with_real_worker(redis_url, line, rclient,
                                                           alarming_model, frame_jpegs,
                                                           tmp_path):
    endpoint = _endpoint()
    worker = start_worker(redis_url, line, alarming_model, "w-opcua", tmp_path,
                          alert_k=1, alert_n=1, alert_cooldown_s=0)
    bridge = _start_bridge(redis_url, line, endpoint, tmp_path, "bridge1")
    try:
        wait_ready(rclient, worker, names=("w-opcua",))
        bridge = asyncio.run(_scenario(endpoint, redis_url, line, rclient, frame_jpegs,
                                       bridge, worker, tmp_path))
    finally:
        bridge.stop()
        worker.stop()


async def _scenario(endpoint, redis_url, line, rclient, jpegs, bridge, worker, tmp_path):
    client = await _connect(endpoint)  # anonymous, loopback
    idx = await client.get_namespace_index("urn:rlr")
    rlr = await client.nodes.objects.get_child(f"{idx}:RLR")
    line_obj = await rlr.get_child(f"{idx}:{line}")
    cam = await line_obj.get_child(f"{idx}:camA")
    names = {(await n.read_browse_name()).Name for n in await cam.get_children()}
    assert {"LastScore", "Threshold", "Verdict", "FrameId", "CaptureTime", "ModelVersion",
            "Frames", "Alerts", "UnacknowledgedAlerts", "CameraHealth",
            "Acknowledge"} <= names
    handler = _Handler()
    sub = await client.create_subscription(20, handler)
    score = client.get_node(ua.NodeId(f"{line}.camA.LastScore", idx))
    await sub.subscribe_data_change(score)
    etype = await client.nodes.root.get_child(
        ["0:Types", "0:EventTypes", "0:BaseEventType", f"{idx}:RlrAlertEventType"])
    await sub.subscribe_events(client.nodes.server, etype)

    push_images(rclient, line, "camA", jpegs[:2])
    await _until(lambda: len(handler.events) >= 2, 30, "two alert events")
    got = [r for r in results(rclient, line) if r.camera == "camA"]
    assert len(got) == 2 and all(r.is_anomaly for r in got)
    await _until(lambda: any(abs(v - got[-1].score) < 1e-4 for v in handler.values), 10,
                 "the last score as a data change")
    assert await client.get_node(ua.NodeId(f"{line}.camA.Verdict", idx)).read_value() == \
        "anomalous"
    assert await client.get_node(ua.NodeId(f"{line}.camA.Frames", idx)).read_value() == 2
    alerts = [Alert.from_fields(f) for _, f in rclient.xrange(keys.alerts(line))]
    assert [e.AlertId for e in handler.events] == [a.alert_id for a in alerts]
    assert handler.events[0].Camera == "camA"
    # Anonymous clients read only.
    with pytest.raises(ua.UaStatusCodeError):
        await cam.call_method(f"{idx}:Acknowledge", "")
    await client.disconnect()

    # An alert raised while the client is away is still listed when it comes back.
    push_images(rclient, line, "camA", jpegs[2:3])
    wait_for(lambda: rclient.xlen(keys.alerts(line)) == 3, 30, "third alert", (worker,))
    alerts = [Alert.from_fields(f) for _, f in rclient.xrange(keys.alerts(line))]
    ids = [a.alert_id for a in alerts]
    client = await _connect(endpoint, user=True)
    await _until_async(lambda: _unacked(client, idx, line), ids, 10)
    cam = client.get_node(ua.NodeId(f"{line}.camA", idx))
    assert await cam.call_method(f"{idx}:Acknowledge", ids[0]) == 1
    assert await _unacked(client, idx, line) == ids[1:]
    record = json.loads(rclient.hget(keys.alert_acks(line), ids[0]))
    assert record["via"] == "opcua"
    with pytest.raises(ua.UaStatusCodeError):
        await cam.call_method(f"{idx}:Acknowledge", "no-such-alert")
    # Camera health, from an event as the worker writes it.
    now = time.time()
    rclient.xadd(keys.health(line), HealthEvent(line, "camA", "blur", "raised", now, now)
                 .to_fields())
    await _until_async(lambda: client.get_node(
        ua.NodeId(f"{line}.camA.CameraHealth", idx)).read_value(), ["blur"], 10)
    assert await client.get_node(ua.NodeId(f"{line}.camA.CameraHealthy", idx)).read_value() \
        is False
    await client.disconnect()

    # The bridge restarts: the unacknowledged alerts are listed again, the acknowledged not.
    assert bridge.stop() == 0
    bridge = _start_bridge(redis_url, line, endpoint, tmp_path, "bridge2")
    client = await _connect(endpoint, user=True)
    await _until_async(lambda: _unacked(client, idx, line), ids[1:], 15)
    cam = client.get_node(ua.NodeId(f"{line}.camA", idx))
    assert await cam.call_method(f"{idx}:Acknowledge", "") == 2
    assert await _unacked(client, idx, line) == []
    await client.disconnect()
    assert rclient.xpending(keys.alerts(line), "rlr-bridge-opcua")["pending"] == 0
    return bridge


async def _until_async(read, expected, timeout: float) -> None:
    value = None
    for _ in range(int(timeout / 0.1)):
        try:
            value = await read()
        except ua.UaStatusCodeError:  # the node is not there yet
            value = None
        if value == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{value!r} != {expected!r}")


def _certificate(tmp_path, name: str, uri: str, use) -> tuple[str, str]:
    from asyncua.crypto import cert_gen
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key, name, {}, [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")], [use])
    cert_path, key_path = tmp_path / f"{name}.der", tmp_path / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return str(cert_path), str(key_path)


def test_basic256sha256_with_a_user_and_no_anonymous_access_off_loopback(
        redis_url, line, rclient, tmp_path):
    from cryptography.x509.oid import ExtendedKeyUsageOID

    endpoint = _endpoint()
    cert, key = _certificate(tmp_path, "server", "urn:rlr:test:server",
                             ExtendedKeyUsageOID.SERVER_AUTH)
    client_cert, client_key = _certificate(tmp_path, "client", "urn:rlr:test:client",
                                           ExtendedKeyUsageOID.CLIENT_AUTH)
    env = daemon_env(redis_url, line, consumer="opcua-sec", opcua_endpoint=endpoint,
                     opcua_username=USER, opcua_password=PASSWORD, plc_cameras="camA",
                     opcua_cert=cert, opcua_key=key)
    bridge = Proc(["bridge", "opcua"], env, tmp_path / "sec.log")

    async def scenario() -> None:
        anonymous = await _connect(endpoint)
        policies = {(e.SecurityPolicyUri.rsplit("#", 1)[-1], e.SecurityMode.name)
                    for e in await anonymous.get_endpoints()}
        assert {("Basic256Sha256", "Sign"), ("Basic256Sha256", "SignAndEncrypt"),
                ("None", "None_")} <= policies
        await anonymous.disconnect()
        client = Client(endpoint, timeout=5)
        client.application_uri = "urn:rlr:test:client"
        await client.set_security_string(
            f"Basic256Sha256,SignAndEncrypt,{client_cert},{client_key},{cert}")
        client.set_user(USER)
        client.set_password(PASSWORD)
        await client.connect()
        idx = await client.get_namespace_index("urn:rlr")
        cam = client.get_node(ua.NodeId(f"{line}.camA", idx))
        assert await cam.call_method(f"{idx}:Acknowledge", "") == 0
        await client.disconnect()
        wrong = Client(endpoint, timeout=5)
        wrong.set_user(USER)
        wrong.set_password("not-the-password")
        with pytest.raises(ua.UaStatusCodeError):
            await wrong.connect()

    try:
        asyncio.run(scenario())
    finally:
        bridge.stop()
    # Off loopback without a user the bridge refuses to start, saying why.
    off = daemon_env(redis_url, line, opcua_endpoint="opc.tcp://0.0.0.0:48999/rlr/")
    proc = Proc(["bridge", "opcua"], off, tmp_path / "off.log")
    assert proc.p.wait(60) == 2
    assert "RLR_OPCUA_USERNAME" in proc.log_path.read_text()
    proc.stop()


# ----------------------------------------------------------------------------- parts


async def _raw_call(client: Client, idx: int, line: str, method: str, arg: str):
    """A method call's whole result: status, and the reason in the diagnostic info."""
    (result,) = await client.uaclient.call([ua.CallMethodRequest(
        ObjectId=ua.NodeId(line, idx), MethodId=ua.NodeId(f"{line}.{method}", idx),
        InputArguments=[ua.Variant(arg, ua.VariantType.String)])])
    infos = result.InputArgumentDiagnosticInfos
    return result.StatusCode, (infos[0].AdditionalInfo if infos else None), \
        result.OutputArguments


def test_parts_folder_part_events_and_the_plcs_trigger(redis_url, line, rclient, tmp_path):
    endpoint = _endpoint()
    bridge = _start_bridge(redis_url, line, endpoint, tmp_path, "parts")
    try:
        asyncio.run(_parts_scenario(endpoint, line, rclient, bridge))
    finally:
        bridge.stop()


async def _parts_scenario(endpoint, line, rclient, bridge):
    client = await _connect(endpoint)  # anonymous, loopback
    idx = await client.get_namespace_index("urn:rlr")
    line_obj = client.get_node(ua.NodeId(line, idx))
    names = {(await n.read_browse_name()).Name for n in await line_obj.get_children()}
    assert {"Parts", "Trigger", "SelectRecipe", "camA"} <= names
    folder = await line_obj.get_child(f"{idx}:Parts")
    assert {(await n.read_browse_name()).Name for n in await folder.get_children()} == {
        "LastPartId", "LastVerdict", "LastOutcome", "LastTotalMs", "LastRecipe",
        "LastPartTime", "PartCount"}
    handler = _Handler()
    sub = await client.create_subscription(20, handler)
    etype = await client.nodes.root.get_child(
        ["0:Types", "0:EventTypes", "0:BaseEventType", f"{idx}:RlrPartEventType"])
    await sub.subscribe_events(client.nodes.server, etype)
    wait_for(lambda: has_group(rclient, keys.parts(line), "rlr-bridge-opcua"), 20,
             "the bridge reads parts", (bridge,))
    parts = [add_part(rclient, line, "SN-40122"), add_part(rclient, line, "SN-40122", "pass")]
    await _until(lambda: len(handler.events) >= 2, 15, "two part events")
    assert [(e.PartId, e.Verdict, e.Outcome) for e in handler.events] == \
        [("SN-40122", "reject", "reject"), ("SN-40122", "pass", "pass")]
    assert handler.events[0].Recipe == "washer@2" and handler.events[0].Product == "WSH-1"

    def var(name: str):
        return client.get_node(ua.NodeId(f"{line}.Parts.{name}", idx)).read_value()

    assert await var("PartCount") == 2 and await var("LastPartId") == "SN-40122"
    assert await var("LastVerdict") == "pass" and await var("LastRecipe") == "washer@2"
    assert await var("LastTotalMs") == pytest.approx(parts[-1].total_ms)
    # Anonymous clients may not trigger.
    with pytest.raises(ua.UaStatusCodeError) as err:
        await line_obj.call_method(f"{idx}:Trigger", "SN-1")
    assert err.value.code == ua.StatusCodes.BadUserAccessDenied
    assert not rclient.exists(keys.triggers(line))
    await client.disconnect()

    client = await _connect(endpoint, user=True)
    line_obj = client.get_node(ua.NodeId(line, idx))
    entry = await line_obj.call_method(f"{idx}:Trigger", "SN-40123")
    (entry_id, trig), = rclient.xrange(keys.triggers(line))
    assert entry == entry_id.decode() and trig[b"via"] == b"opcua"
    assert rclient.get(keys.next_part(line)) == b"SN-40123"
    status, why, _ = await _raw_call(client, idx, line, "Trigger", "SN 40124")
    assert status.value == ua.StatusCodes.BadInvalidArgument and "whitespace" in why
    status, why, _ = await _raw_call(client, idx, line, "SelectRecipe", "")
    assert status.value == ua.StatusCodes.BadInvalidArgument and "empty" in why
    status, why, _ = await _raw_call(client, idx, line, "SelectRecipe", f"no-such-{line}")
    assert status.value == ua.StatusCodes.BadRequestNotAllowed and why
    assert rclient.xlen(keys.triggers(line)) == 1
    await _select_a_recipe(client, idx, line, rclient)
    await client.disconnect()


async def _select_a_recipe(client, idx, line, rclient):
    from daemon.recipes.store import RecipeStore

    name = f"r{line}"
    RecipeStore(rclient).add(parse({"name": name, "product": "P-1", "class": "washer",
                                    "views": [{"name": "top"}]}), by="test")
    try:
        label = await client.get_node(ua.NodeId(line, idx)).call_method(
            f"{idx}:SelectRecipe", name)
        active = RecipeStore(rclient).active(line)
        assert label == f"{name}@1" and (active.by, active.via) == ("scada", "opcua")
    finally:
        rclient.hdel(keys.RECIPES, name)
        rclient.delete(keys.recipe_revisions(name))
