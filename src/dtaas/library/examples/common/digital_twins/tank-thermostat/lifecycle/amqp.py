"""A small AMQP 0-9-1 client in standard-library Python: enough to declare queues, publish
JSON messages to them and consume them, which is all this DT needs (a job's sandbox has no
pip packages and no network beyond the platform's services).

AMQP 0-9-1 runs over one TCP connection as a stream of frames:

    type (1 octet) | channel (2 octets) | payload size (4 octets) | payload | 0xCE

A *method* frame (type 1) carries one command, e.g. queue.declare, as its class id, method
id and arguments. A message published or delivered follows its method as a *content header*
frame (type 2: the body's size and properties) and *body* frames (type 3). Type 8 is a
heartbeat. Channel 0 is the connection itself; this client opens one channel, number 1.

Arguments are packed in a fixed order per method: octets and integers in network byte
order, a short string as one length octet and its bytes, a long string (and a table) as a
4-octet length and its bytes, and consecutive bit flags packed into one octet.

The specification: https://www.rabbitmq.com/resources/specs/amqp0-9-1.pdf
"""

import collections
import json
import socket
import struct
from urllib.parse import unquote, urlsplit

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"  # "AMQP", then protocol 0, version 0-9-1
FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
CHANNEL = 1
MAX_FRAME = 131072

# (class id, method id) of the methods this client sends or expects.
CONNECTION_START, CONNECTION_START_OK = (10, 10), (10, 11)
CONNECTION_TUNE, CONNECTION_TUNE_OK = (10, 30), (10, 31)
CONNECTION_OPEN, CONNECTION_OPEN_OK = (10, 40), (10, 41)
CONNECTION_CLOSE, CONNECTION_CLOSE_OK = (10, 50), (10, 51)
CHANNEL_OPEN, CHANNEL_OPEN_OK = (20, 10), (20, 11)
CHANNEL_CLOSE, CHANNEL_CLOSE_OK = (20, 40), (20, 41)
QUEUE_DECLARE, QUEUE_DECLARE_OK = (50, 10), (50, 11)
BASIC_CONSUME, BASIC_CONSUME_OK = (60, 20), (60, 21)
BASIC_PUBLISH, BASIC_DELIVER = (60, 40), (60, 60)
BASIC_CLASS = 60


class AmqpError(Exception):
    """The broker refused something (e.g. 403 ACCESS_REFUSED) or the connection broke."""


# --- encoding -------------------------------------------------------------------------------


def short_string(text):
    data = text.encode()
    return struct.pack("!B", len(data)) + data


def long_string(data):
    return struct.pack("!I", len(data)) + data


def string_table(values):
    """A field table of string values (type "S": a long string)."""
    fields = b"".join(
        short_string(name) + b"S" + long_string(value.encode()) for name, value in values.items()
    )
    return long_string(fields)


class Reader:
    """Reads a method's arguments in order."""

    def __init__(self, data):
        self.data, self.position = data, 0

    def unpack(self, layout):
        values = struct.unpack_from(layout, self.data, self.position)
        self.position += struct.calcsize(layout)
        return values if len(values) > 1 else values[0]

    def short_string(self):
        size = self.unpack("!B")
        self.position += size
        return self.data[self.position - size : self.position].decode()


# --- the connection -------------------------------------------------------------------------


class Connection:
    """One connection with one channel, opened on the vhost that ``url`` names.

    Use it as a context manager: ``with Connection(url) as broker: ...`` closes it politely.
    """

    def __init__(self, url, *, timeout=30.0):
        parts = urlsplit(url)
        # amqp://host/ is the vhost "/"; amqp://host/x is "x" (a "/" in it is written %2F).
        self.vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        self.user = unquote(parts.username or "guest")
        password = unquote(parts.password or "guest")
        self.timeout = timeout
        self.deliveries = collections.deque()  # messages that arrived while we waited
        self.sock = socket.create_connection((parts.hostname, parts.port or 5672), timeout)
        # Small frames go out at once, not held back until the last one is acknowledged.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(PROTOCOL_HEADER)
        # The server names its version and login mechanisms; we log in with PLAIN.
        self.expect(0, CONNECTION_START)
        login = b"\x00" + self.user.encode() + b"\x00" + password.encode()
        self.send_method(
            0,
            CONNECTION_START_OK,
            string_table({"product": "dtaas tank-thermostat"})
            + short_string("PLAIN")
            + long_string(login)
            + short_string("en_US"),
        )
        # The server proposes limits; we take its frame size (up to ours), no heartbeats.
        tune = self.expect(0, CONNECTION_TUNE)
        _channel_max, frame_max, _heartbeat = tune.unpack("!HIH")
        self.frame_max = min(frame_max or MAX_FRAME, MAX_FRAME)
        self.send_method(0, CONNECTION_TUNE_OK, struct.pack("!HIH", 1, self.frame_max, 0))
        # Open the vhost (two reserved fields follow its name), then our channel.
        self.send_method(0, CONNECTION_OPEN, short_string(self.vhost) + short_string("") + b"\0")
        self.expect(0, CONNECTION_OPEN_OK)
        self.send_method(CHANNEL, CHANNEL_OPEN, short_string(""))
        self.expect(CHANNEL, CHANNEL_OPEN_OK)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # --- frames ---

    @staticmethod
    def frame(kind, channel, payload):
        return struct.pack("!BHI", kind, channel, len(payload)) + payload + bytes([FRAME_END])

    def send_method(self, channel, method, arguments=b""):
        self.sock.sendall(
            self.frame(FRAME_METHOD, channel, struct.pack("!HH", *method) + arguments)
        )

    def receive_exactly(self, size):
        data = b""
        while len(data) < size:
            try:
                chunk = self.sock.recv(size - len(data))
            except TimeoutError:
                raise AmqpError(f"the broker sent nothing for {self.timeout:g} s") from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                # RabbitMQ closes the socket on a failed login (after PLAIN).
                raise AmqpError("the broker closed the connection (wrong user or password?)")
            data += chunk
        return data

    def receive_frame(self):
        """The next frame other than a heartbeat: (type, channel, payload)."""
        while True:
            kind, channel, size = struct.unpack("!BHI", self.receive_exactly(7))
            payload = self.receive_exactly(size + 1)
            if payload[-1] != FRAME_END:
                raise AmqpError("malformed frame from the broker")
            if kind != FRAME_HEARTBEAT:
                return kind, channel, payload[:-1]

    def receive_content(self):
        """The body of a message: a content header frame, then body frames up to its size."""
        _kind, _channel, header = self.receive_frame()
        _class, _weight, size = struct.unpack_from("!HHQ", header)
        body = b""
        while len(body) < size:
            _kind, _channel, chunk = self.receive_frame()
            body += chunk
        return body

    def receive_method(self):
        """The next method from the broker: (channel, (class id, method id), its arguments).

        A delivered message is read whole and kept in ``deliveries``. A close from the
        broker is answered and raised as an AmqpError with its reply code and text.
        """
        kind, channel, payload = self.receive_frame()
        if kind != FRAME_METHOD:
            raise AmqpError(f"expected a method frame, the broker sent one of type {kind}")
        method = struct.unpack_from("!HH", payload)
        arguments = Reader(payload[4:])
        if method == BASIC_DELIVER:
            self.deliveries.append(self.receive_content())
        elif method in (CONNECTION_CLOSE, CHANNEL_CLOSE):
            code, text = arguments.unpack("!H"), arguments.short_string()
            is_connection = method == CONNECTION_CLOSE
            self.send_method(channel, CONNECTION_CLOSE_OK if is_connection else CHANNEL_CLOSE_OK)
            raise AmqpError(
                f"the broker closed the {'connection' if is_connection else 'channel'}: "
                f"{code} {text}"
            )
        return channel, method, arguments

    def expect(self, channel, method):
        """Wait for the broker's reply ``method`` on ``channel``; returns its arguments."""
        while True:
            on_channel, received, arguments = self.receive_method()
            if (on_channel, received) == (channel, method):
                return arguments
            if received != BASIC_DELIVER:  # a delivery may come first; it is kept
                raise AmqpError(f"expected method {method}, the broker sent {received}")

    # --- what the DT uses ---

    def declare_queue(self, name):
        """Make the queue if it does not exist (not durable, kept when unused)."""
        flags = 0  # passive, durable, exclusive, auto-delete, no-wait: all off
        self.send_method(
            CHANNEL,
            QUEUE_DECLARE,
            struct.pack("!H", 0) + short_string(name) + bytes([flags]) + long_string(b""),
        )
        self.expect(CHANNEL, QUEUE_DECLARE_OK)

    def publish(self, queue, value):
        """Send ``value`` as JSON to ``queue`` (through the default exchange)."""
        body = json.dumps(value).encode()
        exchange, mandatory_immediate = "", 0
        method = struct.pack("!HH", *BASIC_PUBLISH) + (
            struct.pack("!H", 0)
            + short_string(exchange)
            + short_string(queue)
            + bytes([mandatory_immediate])
        )
        frames = [self.frame(FRAME_METHOD, CHANNEL, method)]
        # Content header: class, weight, body size, property flags (bit 15: content-type).
        properties = struct.pack("!HHQH", BASIC_CLASS, 0, len(body), 0x8000)
        frames.append(
            self.frame(FRAME_HEADER, CHANNEL, properties + short_string("application/json"))
        )
        room = self.frame_max - 8  # a frame's header and end octet count against its size
        for start in range(0, len(body), room):
            frames.append(self.frame(FRAME_BODY, CHANNEL, body[start : start + room]))
        self.sock.sendall(b"".join(frames))  # one write: the three parts travel together

    def consume(self, queue):
        """Have the broker push the queue's messages to us, acknowledged as they are sent."""
        no_ack = 0b10  # bits: no-local, no-ack, exclusive, no-wait
        self.send_method(
            CHANNEL,
            BASIC_CONSUME,
            struct.pack("!H", 0)
            + short_string(queue)
            + short_string("")  # the broker names the consumer
            + bytes([no_ack])
            + long_string(b""),
        )
        self.expect(CHANNEL, BASIC_CONSUME_OK)

    def next_message(self):
        """The next message pushed by ``consume``, decoded from JSON; waits up to the timeout."""
        while not self.deliveries:
            _channel, method, _arguments = self.receive_method()
            if method != BASIC_DELIVER:
                raise AmqpError(f"expected a message, the broker sent method {method}")
        return json.loads(self.deliveries.popleft())

    def close(self):
        """Close the connection (which closes the channel) and wait for the broker's reply."""
        try:
            reply = struct.pack("!H", 200) + short_string("bye") + struct.pack("!HH", 0, 0)
            self.send_method(0, CONNECTION_CLOSE, reply)
            self.expect(0, CONNECTION_CLOSE_OK)
        except (OSError, AmqpError):
            pass  # closing anyway
        finally:
            self.sock.close()
