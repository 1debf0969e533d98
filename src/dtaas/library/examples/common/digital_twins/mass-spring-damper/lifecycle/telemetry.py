"""Publishes telemetry to the platform's MQTT broker: MQTT 3.1.1, QoS 0, standard library only.

The job gets the broker as DTAAS_MQTT_URL (mqtt://[user:password@]host:port) and its topic
prefix as DTAAS_TOPIC_PREFIX; without them nothing is published.
"""

import json
import os
import socket
import struct
from urllib.parse import urlsplit


def _length(value):
    encoded = bytearray()
    while True:
        byte, value = value % 128, value // 128
        encoded.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(encoded)


def _text(value):
    data = value.encode()
    return struct.pack("!H", len(data)) + data


class Publisher:
    def __init__(self):
        self.sock = None
        self.topic = os.environ.get("DTAAS_TOPIC_PREFIX", "") + "telemetry"
        url = os.environ.get("DTAAS_MQTT_URL")
        if not url or not os.environ.get("DTAAS_TOPIC_PREFIX"):
            return
        parts = urlsplit(url)
        try:
            self.sock = socket.create_connection((parts.hostname, parts.port or 1883), timeout=5)
            flags, payload = 0x02, _text(f"dtaas-job-{os.environ.get('DTAAS_JOB_ID', '0')}")
            if parts.username:
                flags |= 0x80
                payload += _text(parts.username)
                if parts.password:
                    flags |= 0x40
                    payload += _text(parts.password)
            body = _text("MQTT") + bytes([4, flags]) + struct.pack("!H", 60) + payload
            self.sock.sendall(b"\x10" + _length(len(body)) + body)
            if self.sock.recv(4)[:1] != b"\x20":
                raise OSError("the broker did not accept the connection")
            print(f"telemetry: publishing to {self.topic}", flush=True)
        except OSError as exc:
            print(f"telemetry: not published ({exc})", flush=True)
            self.sock = None

    def publish(self, values):
        if self.sock is None:
            return
        body = _text(self.topic) + json.dumps(values).encode()
        try:
            self.sock.sendall(b"\x30" + _length(len(body)) + body)
        except OSError as exc:
            print(f"telemetry: stopped ({exc})", flush=True)
            self.sock = None

    def close(self):
        if self.sock is not None:
            self.sock.sendall(b"\xe0\x00")
            self.sock.close()
