"""Publish simulated readings to MQTT with nothing but the standard library (MQTT 3.1.1, QoS 0)."""

import json
import math
import os
import random
import socket
import struct
import sys
import time
from urllib.parse import urlsplit


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _text(value: str) -> bytes:
    data = value.encode()
    return struct.pack("!H", len(data)) + data


def connect(url: str, client_id: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 1883), timeout=10)
    flags, payload = 0x02, _text(client_id)
    if parts.username:
        flags |= 0x80
        payload += _text(parts.username)
    if parts.password:
        flags |= 0x40
        payload += _text(parts.password)
    body = _text("MQTT") + bytes([4, flags]) + struct.pack("!H", 60) + payload
    sock.sendall(bytes([0x10]) + _length(len(body)) + body)
    ack = sock.recv(4)
    if len(ack) < 4 or ack[0] != 0x20 or ack[3] != 0:
        raise SystemExit(f"the broker refused the connection: {ack!r}")
    return sock


def publish(sock: socket.socket, topic: str, message: bytes) -> None:
    body = _text(topic) + message
    sock.sendall(bytes([0x30]) + _length(len(body)) + body)


def main() -> int:
    url = os.environ.get("DTAAS_MQTT_URL")
    if not url:
        sys.stderr.write("DTAAS_MQTT_URL is not set: declare `services: [mqtt]` in dt.yaml\n")
        return 1
    params = json.load(open("params.json")) if os.path.exists("params.json") else {}
    interval = float(params.get("interval_s", 1.0))
    count = int(params.get("count", 60))
    sensor = str(params.get("sensor", "sensor-1"))
    prefix = os.environ.get("DTAAS_TOPIC_PREFIX", "dtaas/local").rstrip("/")
    topic = f"{prefix}/telemetry/{sensor}"
    sock = connect(url, f"dtaas-{sensor}-{os.getpid()}")
    for k in range(count):
        reading = {
            "temperature_c": round(21 + 2 * math.sin(k / 10) + random.gauss(0, 0.1), 3),
            "humidity_pct": round(45 + 5 * math.cos(k / 15) + random.gauss(0, 0.3), 3),
            "time": time.time(),
        }
        publish(sock, topic, json.dumps(reading).encode())
        sys.stdout.write(f"{topic} {json.dumps(reading)}\n")
        sys.stdout.flush()
        time.sleep(interval)
    sock.sendall(bytes([0xE0, 0]))
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
