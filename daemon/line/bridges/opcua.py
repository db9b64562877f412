"""OPC UA server for SCADA (`rlrctl bridge opcua`): the line state of `linestate` as a
node tree, one object per line and camera (`Objects/RLR/<line>/<camera>/<variable>`, string
node ids `ns=<urn:rlr>;s=<line>.<camera>.<variable>`), and an `RlrAlertEventType` event for
every alert, emitted by the Server object.

Alerts stay listed in the camera's `UnacknowledgedAlerts` until a client calls the camera's
`Acknowledge(AlertId)` method ("" for all); the acknowledgement is written to
`rlr:alertack:{line}`. A client that was away reads the latest values and every alert it
missed from that list.

Each line object also holds a `Parts` folder (the last part verdict, `s=<line>.Parts.<variable>`;
an `RlrPartEventType` event per verdict) and two methods (`plcwrites`): `Trigger(PartId)` and
`SelectRecipe(Name)`. Bad input answers BadInvalidArgument, a refused recipe
BadRequestNotAllowed, Redis away BadResourceUnavailable, each with the reason in the input
argument's diagnostic info (`AdditionalInfo`). Cameras named like a line-level node (`Parts`,
`Trigger`, `SelectRecipe`) are not served here.

Security: anonymous clients may browse, read and subscribe, and only on a loopback endpoint;
acknowledging needs a user (`RLR_OPCUA_USERNAME` / `RLR_OPCUA_PASSWORD`). With
`RLR_OPCUA_CERT` / `RLR_OPCUA_KEY` the endpoint offers Basic256Sha256 Sign and
SignAndEncrypt (and no unencrypted endpoint unless it is loopback).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from urllib.parse import urlsplit

from asyncua import Server, ua, uamethod
from asyncua.crypto.permission_rules import USER_TYPES, PermissionRuleset, User, UserRole

from daemon import logs
from daemon.errors import SettingsError
from daemon.line.bridges.base import (
    CAMERA,
    LINE,
    BridgeSpec,
    Option,
    afeed_forever,
    run_line_bridge,
)
from daemon.line.bridges.linestate import (
    CameraState,
    LineFeed,
    Listener,
    PartState,
    mapped_cameras,
)
from daemon.line.bridges.plcwrites import PlcActions, Refused
from daemon.line.settings import PlcBridgeSettings
from daemon.wire.clients import connect
from daemon.wire.ids import BadId
from daemon.wire.schema import Alert

log = logs.get(__name__)

NAMESPACE = "urn:rlr"
EVENT_TYPE = "RlrAlertEventType"
# (variable, OPC UA type, initial value) of every camera object
VARIABLES = (
    ("LastScore", ua.VariantType.Double, 0.0),
    ("Threshold", ua.VariantType.Double, 0.0),
    ("Verdict", ua.VariantType.String, "none"),
    ("IsAnomaly", ua.VariantType.Boolean, False),
    ("FrameId", ua.VariantType.String, ""),
    ("CaptureTime", ua.VariantType.DateTime, datetime(1970, 1, 1, tzinfo=timezone.utc)),
    ("ModelVersion", ua.VariantType.String, ""),
    ("Frames", ua.VariantType.UInt64, 0),
    ("Alerts", ua.VariantType.UInt64, 0),
    ("AlertLatched", ua.VariantType.Boolean, False),
    ("UnacknowledgedAlerts", ua.VariantType.String, []),
    ("CameraHealth", ua.VariantType.String, []),
    ("CameraHealthy", ua.VariantType.Boolean, True),
)
EVENT_FIELDS = (
    ("AlertId", ua.VariantType.String), ("Line", ua.VariantType.String),
    ("Camera", ua.VariantType.String), ("Rule", ua.VariantType.String),
    ("MaxScore", ua.VariantType.Double), ("Threshold", ua.VariantType.Double),
    ("FrameIds", ua.VariantType.String), ("ModelVersion", ua.VariantType.String),
)
# (variable, OPC UA type, initial value) of every line's Parts folder
PART_VARIABLES = (
    ("LastPartId", ua.VariantType.String, ""),
    ("LastVerdict", ua.VariantType.String, "none"),
    ("LastOutcome", ua.VariantType.String, "none"),
    ("LastTotalMs", ua.VariantType.Double, 0.0),
    ("LastRecipe", ua.VariantType.String, ""),
    ("LastPartTime", ua.VariantType.DateTime, datetime(1970, 1, 1, tzinfo=timezone.utc)),
    ("PartCount", ua.VariantType.UInt64, 0),
)
PART_EVENT_TYPE = "RlrPartEventType"
PART_EVENT_FIELDS = (
    ("PartId", ua.VariantType.String), ("Line", ua.VariantType.String),
    ("Verdict", ua.VariantType.String), ("Outcome", ua.VariantType.String),
    ("TotalMs", ua.VariantType.Double), ("Recipe", ua.VariantType.String),
    ("Product", ua.VariantType.String),
)
RESERVED = ("Parts", "Trigger", "SelectRecipe")  # line-level nodes: no camera may take them
_USER = {ua.NodeId(t) for t in USER_TYPES}
_READ_ONLY = _USER - {
    ua.NodeId(ua.ObjectIds.WriteRequest_Encoding_DefaultBinary),
    ua.NodeId(ua.ObjectIds.CallRequest_Encoding_DefaultBinary)}


def is_loopback(endpoint: str) -> bool:
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Rules(PermissionRuleset):
    """Users may call methods; anonymous clients only read, browse and subscribe."""

    def check_validity(self, user, action_type_id, body) -> bool:
        if user is not None and user.role in (UserRole.User, UserRole.Admin):
            return action_type_id in _USER
        return action_type_id in _READ_ONLY


class _Users:
    def __init__(self, settings: PlcBridgeSettings) -> None:
        self.anonymous = is_loopback(settings.opcua_endpoint)
        self.username = settings.opcua_username
        self.password = settings.opcua_password.get_secret_value() \
            if settings.opcua_password is not None else None

    def get_user(self, iserver, username=None, password=None, certificate=None) -> User | None:
        if username is None:
            return User(role=UserRole.Anonymous) if self.anonymous else None
        if self.username is None or self.password is None:
            return None
        ok = hmac.compare_digest(username.encode(), self.username.encode()) and \
            hmac.compare_digest((password or "").encode(), self.password.encode())
        return User(role=UserRole.User, name=username) if ok else None


class OpcUaState(Listener):
    """Keeps the node tree current; creates a camera's nodes when it first appears."""

    def __init__(self, server: Server, idx: int, root, event_gen, part_events=None) -> None:
        self.server, self.idx, self.root, self.event_gen = server, idx, root, event_gen
        self.part_events = part_events
        self.feed: LineFeed | None = None
        self.actions: PlcActions | None = None
        self.lines: dict[str, object] = {}
        self.parts: dict[str, dict[str, object]] = {}  # line -> Parts variables
        self.by_line: dict[ua.NodeId, str] = {}
        self.nodes: dict[tuple[str, str], dict[str, object]] = {}
        self.by_object: dict[ua.NodeId, tuple[str, str]] = {}
        self._lock = asyncio.Lock()

    async def line_object(self, line: str):
        """The line's object, with its Parts folder and methods (created on first use)."""
        async with self._lock:
            return await self._line_object(line)

    async def _line_object(self, line: str):
        if line in self.lines:
            return self.lines[line]
        obj = await self.root.add_object(ua.NodeId(line, self.idx),
                                         ua.QualifiedName(line, self.idx))
        folder = await obj.add_folder(ua.NodeId(f"{line}.Parts", self.idx),
                                      ua.QualifiedName("Parts", self.idx))
        self.parts[line] = {name: await folder.add_variable(
            ua.NodeId(f"{line}.Parts.{name}", self.idx), ua.QualifiedName(name, self.idx),
            ua.Variant(value, vtype)) for name, vtype, value in PART_VARIABLES}
        await obj.add_method(ua.NodeId(f"{line}.Trigger", self.idx),
                             ua.QualifiedName("Trigger", self.idx), self._trigger,
                             [ua.VariantType.String], [ua.VariantType.String])
        await obj.add_method(ua.NodeId(f"{line}.SelectRecipe", self.idx),
                             ua.QualifiedName("SelectRecipe", self.idx), self._select_recipe,
                             [ua.VariantType.String], [ua.VariantType.String])
        self.lines[line] = obj
        self.by_line[obj.nodeid] = line
        return obj

    async def camera_nodes(self, line: str, camera: str) -> dict[str, object] | None:
        if camera in RESERVED:
            if (line, camera) not in self.nodes:
                log.warning("camera_not_served", line=line, camera=camera,
                            why="the name of a line-level OPC UA node; rename the camera")
                self.nodes[(line, camera)] = {}
            return None
        async with self._lock:
            if (line, camera) in self.nodes:
                return self.nodes[(line, camera)]
            obj = await (await self._line_object(line)).add_object(
                ua.NodeId(f"{line}.{camera}", self.idx), ua.QualifiedName(camera, self.idx))
            nodes: dict[str, object] = {"": obj}
            for name, vtype, value in VARIABLES:
                nodes[name] = await obj.add_variable(
                    ua.NodeId(f"{line}.{camera}.{name}", self.idx),
                    ua.QualifiedName(name, self.idx), ua.Variant(value, vtype))
            await obj.add_method(ua.NodeId(f"{line}.{camera}.Acknowledge", self.idx),
                                 ua.QualifiedName("Acknowledge", self.idx), self._acknowledge,
                                 [ua.VariantType.String], [ua.VariantType.UInt32])
            self.nodes[(line, camera)] = nodes
            self.by_object[obj.nodeid] = (line, camera)
            return nodes

    async def _write(self, cam: CameraState, values: dict) -> None:
        nodes = await self.camera_nodes(cam.line, cam.camera)
        if nodes is None:
            return
        for name, value in values.items():
            vtype = next(t for n, t, _ in VARIABLES if n == name)
            await nodes[name].write_value(ua.Variant(value, vtype))

    async def result(self, cam: CameraState, fresh: bool) -> None:
        await self._write(cam, {
            "LastScore": float(cam.score or 0.0), "Threshold": float(cam.threshold or 0.0),
            "Verdict": cam.verdict, "IsAnomaly": bool(cam.is_anomaly),
            "FrameId": cam.frame_id, "ModelVersion": cam.model_version,
            "CaptureTime": datetime.fromtimestamp(cam.capture_ts, timezone.utc),
            "Frames": cam.frames})

    async def alert(self, cam: CameraState, alert: Alert) -> None:
        await self._latch(cam)
        nodes = await self.camera_nodes(cam.line, cam.camera)
        if nodes is None:
            return
        event = self.event_gen.event
        event.SourceNode = nodes[""].nodeid
        event.SourceName = f"{cam.line}/{cam.camera}"
        event.Severity = 800
        event.AlertId, event.Line, event.Camera = alert.alert_id, alert.line, alert.camera
        event.Rule, event.ModelVersion = alert.rule, alert.model_version
        event.MaxScore = float(max(alert.scores, default=0.0))
        event.Threshold = float(alert.threshold or 0.0)
        event.FrameIds = ",".join(alert.frame_ids)
        await self.event_gen.trigger(message=f"anomaly alert on {cam.line}/{cam.camera} "
                                     f"(rule {alert.rule})")

    async def cleared(self, cam: CameraState, alert_ids: Sequence[str]) -> None:
        await self._latch(cam)

    async def _latch(self, cam: CameraState) -> None:
        await self._write(cam, {"Alerts": cam.alerts, "AlertLatched": bool(cam.latched),
                                "UnacknowledgedAlerts": list(cam.latched)})

    async def health(self, cam: CameraState) -> None:
        await self._write(cam, {"CameraHealth": list(cam.health),
                                "CameraHealthy": not cam.health})

    async def part(self, state: PartState, fresh: bool) -> None:
        await self.line_object(state.line)
        last, nodes = state.last, self.parts[state.line]
        if last is None:
            return
        values = {"LastPartId": last.part_id, "LastVerdict": last.verdict,
                  "LastOutcome": last.outcome, "LastTotalMs": float(last.total_ms),
                  "LastRecipe": last.recipe, "PartCount": state.count,
                  "LastPartTime": datetime.fromtimestamp(last.ts, timezone.utc)}
        for name, value in values.items():
            vtype = next(t for n, t, _ in PART_VARIABLES if n == name)
            await nodes[name].write_value(ua.Variant(value, vtype))
        if self.part_events is None or state.count == 0:
            return  # the verdict loaded at start is not an event
        event = self.part_events.event
        event.SourceNode, event.SourceName = self.lines[state.line].nodeid, state.line
        event.Severity = 600 if last.rejected else 100
        event.PartId, event.Line, event.Verdict = last.part_id, last.line, last.verdict
        event.Outcome, event.TotalMs = last.outcome, float(last.total_ms)
        event.Recipe, event.Product = last.recipe, last.product
        await self.part_events.trigger(message=f"part {last.part_id} on {state.line}: "
                                       f"{last.verdict}")

    @uamethod
    async def _trigger(self, parent: ua.NodeId, part_id: str):
        line = self.by_line.get(parent)
        if line is None or self.actions is None:
            return _bad(ua.StatusCodes.BadNodeIdUnknown, "not a line object")
        try:
            return await self.actions.trigger(line, part_id)
        except BadId as exc:
            return _bad(ua.StatusCodes.BadInvalidArgument, str(exc))
        except Exception as exc:  # Redis away: the client may call again
            log.warning("trigger_failed", line=line, error=str(exc))
            return _bad(ua.StatusCodes.BadResourceUnavailable, f"not stored: {exc}")

    @uamethod
    async def _select_recipe(self, parent: ua.NodeId, name: str):
        line = self.by_line.get(parent)
        if line is None or self.actions is None:
            return _bad(ua.StatusCodes.BadNodeIdUnknown, "not a line object")
        if not name:
            return _bad(ua.StatusCodes.BadInvalidArgument, "the recipe name is empty")
        try:
            return await self.actions.select_recipe(line, name=name, by="scada")
        except Refused as exc:
            return _bad(ua.StatusCodes.BadRequestNotAllowed, str(exc))
        except Exception as exc:  # Redis away, no recipe store
            log.warning("recipe_select_failed", line=line, recipe=name, error=str(exc))
            return _bad(ua.StatusCodes.BadResourceUnavailable, f"not switched: {exc}")

    @uamethod
    async def _acknowledge(self, parent: ua.NodeId, alert_id: str) -> int:
        where = self.by_object.get(parent)
        if where is None or self.feed is None:
            raise ua.UaStatusCodeError(ua.StatusCodes.BadNodeIdUnknown)
        cleared = await self.feed.acknowledge(where[0], where[1], [alert_id] if alert_id else None,
                                              by="opcua")
        if alert_id and not cleared:
            raise ua.UaStatusCodeError(ua.StatusCodes.BadEventIdUnknown)
        return len(cleared)


def _bad(code: int, reason: str) -> ua.CallMethodResult:
    """A failed call whose reason a client can read: the input argument's diagnostic info."""
    return ua.CallMethodResult(
        StatusCode=ua.StatusCode(code), InputArgumentResults=[ua.StatusCode(code)],
        InputArgumentDiagnosticInfos=[ua.DiagnosticInfo(AdditionalInfo=reason)])


def _certificate_uri(cert) -> str | None:
    from cryptography import x509

    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


async def build_server(settings: PlcBridgeSettings) -> tuple[Server, OpcUaState]:
    """A configured (not yet started) server with its event type and root folder."""
    loopback = is_loopback(settings.opcua_endpoint)
    if not loopback and settings.opcua_username is None:
        raise SettingsError(f"RLR_OPCUA_ENDPOINT={settings.opcua_endpoint} is not loopback: "
                            "set RLR_OPCUA_USERNAME and RLR_OPCUA_PASSWORD (anonymous access is "
                            "for opc.tcp://127.0.0.1 only)")
    logging.getLogger("asyncua").setLevel(logging.WARNING)
    server = Server(user_manager=_Users(settings))
    await server.init()
    server.set_endpoint(settings.opcua_endpoint)
    server.set_server_name("rlr line state")
    policies = [ua.SecurityPolicyType.NoSecurity] if loopback or settings.opcua_cert is None \
        else []
    if settings.opcua_cert is not None:
        await server.load_certificate(str(settings.opcua_cert))
        await server.load_private_key(str(settings.opcua_key))
        uri = _certificate_uri(server.iserver.certificate)
        if uri:  # clients check that the server's application URI is the certificate's
            await server.set_application_uri(uri)
        policies += [ua.SecurityPolicyType.Basic256Sha256_Sign,
                     ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
    server.set_security_policy(policies, permission_ruleset=_Rules())
    tokens = [ua.AnonymousIdentityToken] if loopback else []
    if settings.opcua_username is not None:
        tokens.append(ua.UserNameIdentityToken)
    server.set_identity_tokens(tokens)
    idx = await server.register_namespace(NAMESPACE)
    etype = await server.create_custom_event_type(
        idx, EVENT_TYPE, ua.ObjectIds.BaseEventType, list(EVENT_FIELDS))
    ptype = await server.create_custom_event_type(
        idx, PART_EVENT_TYPE, ua.ObjectIds.BaseEventType, list(PART_EVENT_FIELDS))
    root = await server.nodes.objects.add_folder(ua.NodeId("RLR", idx),
                                                 ua.QualifiedName("RLR", idx))
    event_gen = await server.get_event_generator(etype)
    part_events = await server.get_event_generator(ptype)
    return server, OpcUaState(server, idx, root, event_gen, part_events)


async def serve(settings: PlcBridgeSettings, client, lines: Sequence[str],
                cameras: Sequence[tuple[str, str]], stop: asyncio.Event) -> None:
    """Serve the line state over OPC UA until `stop` is set."""
    server, state = await build_server(settings)
    for line in lines:
        await state.line_object(line)
    for line, cam in cameras:
        await state.camera_nodes(line, cam)
    feed = LineFeed(client, settings, "opcua", lines, state)
    state.feed, state.actions = feed, PlcActions(connect(settings), "opcua")
    try:
        async with server:
            log.info("opcua_listening", endpoint=settings.opcua_endpoint, cameras=len(cameras))
            await afeed_forever(feed, stop.is_set, settings.block_ms)
    finally:
        state.actions.close()
    log.info("opcua_stopped")


def run(settings: PlcBridgeSettings, cameras: Sequence[str] = ()) -> None:
    """Serve the line state over OPC UA until SIGTERM / Ctrl-C."""
    logs.configure(settings.log_format, settings.log_level, bridge="opcua")
    # cameras appear in the tree as results arrive; these are there from the start
    known = mapped_cameras(settings, cameras, required=False)
    run_line_bridge(settings, "opcua",
                    lambda client, stop: serve(settings, client, settings.lines, known, stop))


BRIDGE = BridgeSpec(
    name="opcua",
    help="Serve the line state as an OPC UA server (node tree, alert events, acknowledge).",
    run=run,
    options=(
        LINE, CAMERA,
        Option("--endpoint", "endpoint", "opc.tcp:// URL to bind (default RLR_OPCUA_ENDPOINT).",
               setting="opcua_endpoint"),
    ),
)
