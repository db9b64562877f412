"""The MQTT bridge without a broker: topics, their template, TLS."""

from __future__ import annotations

import pytest

from daemon.cli.settings import load_settings
from daemon.errors import DeliveryError, SettingsError
from daemon.line.bridges.mqtt import MqttSink, check_topic_template, mqtt_topic
from daemon.wire.parts import PartVerdict
from daemon.wire.schema import Alert


def _alert(camera: str = "cam-1") -> Alert:
    return Alert("a-17", "line1", camera, 1714550000.5, "3/5", ["f1", "f2", "f3"],
                 [0.71, 0.93, 0.88], ["1-0", "2-0", "3-0"], "v3", 0.6, "washer")


def test_mqtt_topic_is_formatted_per_line_and_camera():
    assert mqtt_topic("rlr/{line}/alerts/{camera}", _alert()) == "rlr/line1/alerts/cam-1"
    assert mqtt_topic("plant7/{camera}", _alert("c9")) == "plant7/c9"


def test_mqtt_topic_refuses_wildcards():
    with pytest.raises(DeliveryError) as err:
        mqtt_topic("rlr/{line}/{camera}", _alert("cam+1"))
    assert err.value.permanent


def test_bad_topic_template_names_the_setting(monkeypatch):
    with pytest.raises(SettingsError, match="RLR_MQTT_TOPIC"):
        check_topic_template("rlr/{site}/{camera}")
    monkeypatch.setenv("RLR_MQTT_TOPIC", "rlr/{line")
    with pytest.raises(SettingsError, match="RLR_MQTT_TOPIC"):
        MqttSink(load_settings())


def test_mqtts_url_selects_tls_and_port_8883():
    sink = MqttSink(load_settings(mqtt_url="mqtts://broker.example"))
    assert (sink.host, sink.port) == ("broker.example", 8883)
    assert sink.client._ssl_context is not None  # tls_set() ran; nothing connects yet


def test_part_verdicts_go_to_the_parts_topic_of_their_line():
    part = PartVerdict("line1", "SN-1", "reject", "reject", 1.0, 0.9, 80.0, {})
    assert mqtt_topic("rlr/{line}/parts", part) == "rlr/line1/parts"
    with pytest.raises(DeliveryError):
        mqtt_topic("rlr/{line}/parts", PartVerdict("l#1", "SN-1", "pass", "pass", 1.0, 0.9,
                                                   80.0, {}))
    with pytest.raises(SettingsError, match="RLR_MQTT_PARTS_TOPIC"):
        MqttSink(load_settings(mqtt_parts_topic="rlr/{line}/parts/{camera}"))
    assert MqttSink(load_settings()).parts_template == "rlr/{line}/parts"
