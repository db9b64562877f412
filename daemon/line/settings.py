"""Settings of what runs beside the workers: one class per protocol of the alert and PLC /
SCADA bridges, and the compositions of the bridge and producer processes."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from daemon.logs import LogSettings
from daemon.settings import PartSettings
from daemon.supervisor import SupervisorSettings
from daemon.wire.settings import StreamCapSettings, WireSettings


class MqttSettings(PartSettings):
    """The MQTT broker alerts, health events and part verdicts go to (also Sparkplug B's)."""

    mqtt_url: str = Field("mqtt://127.0.0.1:1883", description="mqtt:// or mqtts:// broker")
    mqtt_topic: str = Field("rlr/{line}/alerts/{camera}", description="topic template")
    mqtt_health_topic: str = Field("rlr/{line}/health/{camera}", description="topic template "
                                   "of camera health events")
    mqtt_parts_topic: str = Field("rlr/{line}/parts", description="topic template of part "
                                  "verdicts")
    mqtt_qos: int = Field(1, ge=0, le=2, description="MQTT QoS of alert messages and part "
                          "verdicts")
    mqtt_username: str | None = Field(None, description="MQTT user")
    mqtt_password: SecretStr | None = Field(None, description="MQTT password")

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt(cls, value: str) -> str:
        if not value.startswith(("mqtt://", "mqtts://")):
            raise ValueError(f"{value!r}: use mqtt://host:port or mqtts://host:port")
        return value


class WebhookSettings(PartSettings):
    """The HTTP endpoint alerts are POSTed to."""

    webhook_url: str | None = Field(None, description="http(s) URL alerts are POSTed to")
    webhook_timeout_s: float = Field(5.0, gt=0, description="HTTP timeout per webhook call")

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r}: use an http:// or https:// URL")
        return value


class BridgeSettings(PartSettings):
    """How often an alert bridge retries a message before dead-lettering it."""

    bridge_max_attempts: int = Field(8, ge=1, description="tries before an alert is "
                                     "dead-lettered")


class PlcSettings(PartSettings):
    """The cameras the PLC and SCADA bridges publish the line state of."""

    plc_cameras: str = Field("", description="comma-separated cameras the Modbus map and OPC UA "
                             "tree are built for (empty: the cameras seen in recent results)")


class ModbusSettings(PartSettings):
    """The Modbus TCP server of the PLC bridge."""

    modbus_host: str = Field("127.0.0.1", description="address the Modbus TCP server binds")
    modbus_port: int = Field(5020, ge=0, le=65535, description="Modbus TCP port (502 needs "
                             "root or CAP_NET_BIND_SERVICE)")
    modbus_pulse_ms: float = Field(500.0, gt=0, le=60_000, description="how long the reject "
                                   "coil stays 1 after an anomalous frame")


class OpcuaSettings(PartSettings):
    """The OPC UA server of the SCADA bridge: endpoint, user and certificate."""

    opcua_endpoint: str = Field("opc.tcp://127.0.0.1:4840/rlr/", description="OPC UA endpoint "
                                "the server binds")
    opcua_username: str | None = Field(None, description="OPC UA user (required, with the "
                                       "password, when the endpoint is not loopback)")
    opcua_password: SecretStr | None = Field(None, description="OPC UA password")
    opcua_cert: Path | None = Field(None, description="server certificate (DER or PEM): "
                                    "enables Basic256Sha256 Sign and SignAndEncrypt")
    opcua_key: Path | None = Field(None, description="private key of RLR_OPCUA_CERT (PEM)")

    @model_validator(mode="after")
    def _check_opcua(self) -> OpcuaSettings:
        if (self.opcua_username is None) != (self.opcua_password is None):
            raise ValueError("set both RLR_OPCUA_USERNAME and RLR_OPCUA_PASSWORD, or neither")
        if self.opcua_password is not None and not self.opcua_password.get_secret_value():
            raise ValueError("RLR_OPCUA_PASSWORD is empty: set a password for "
                             "RLR_OPCUA_USERNAME")
        if (self.opcua_cert is None) != (self.opcua_key is None):
            raise ValueError("set both RLR_OPCUA_CERT and RLR_OPCUA_KEY, or neither")
        return self


class SparkplugSettings(PartSettings):
    """The Sparkplug B ids the MQTT bridge publishes the line state under."""

    sparkplug_group: str = Field("rlr", description="Sparkplug B group id (rlrctl bridge mqtt "
                                 "--format sparkplug)")
    sparkplug_node: str = Field("", description="Sparkplug B edge node id (empty: the line "
                                "name, or rlr when serving several lines)")


class AlertBridgeSettings(WireSettings, StreamCapSettings, SupervisorSettings, LogSettings,
                          BridgeSettings, MqttSettings, WebhookSettings):
    """An alert bridge process (`rlrctl bridge mqtt` / `webhook`)."""


class PlcBridgeSettings(WireSettings, LogSettings, PlcSettings, ModbusSettings, OpcuaSettings,
                        SparkplugSettings, MqttSettings):
    """A PLC or SCADA bridge process (`rlrctl bridge modbus` / `opcua` / `mqtt --format
    sparkplug`)."""


class ProducerSettings(WireSettings, StreamCapSettings, LogSettings):
    """A camera producer process (`rlrctl produce`)."""
