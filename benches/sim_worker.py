#!/usr/bin/env python3
"""K simulated inference workers in one process, for benches/orchestrator.

    sim_worker.py --workers K --service-ms S

One asyncio event loop (plain `asyncio.Protocol`s and `call_later`, no task per request)
listens on K ephemeral 127.0.0.1 ports and one control port, prints
{"ports": [...], "control": PORT} as one JSON line on stdout once listening, then serves
until SIGTERM/SIGINT. HTTP/1.1 with keep-alive (and pipelining, answered in order). Its
timer slack is set to 1 ns (/proc/self/timerslack_ns) so a 5 ms sleep ends on time. About
20-35 µs of CPU per request (one port served ~59,000 req/s with S = 0 and 8 connections),
far more than the K/S a bench asks of it.

Worker ports, like agent-worker's:
  POST /run_model  body empty or JSON with a string "text" (else 400, so a front door that
                   mangles the body shows up as non-2xx); answers after S ms with
                   {"input_text": "x", "probabilities": [0.5, 0.5]}
  GET /health      200 ok
Control port:
  GET /stats       {"service_ms", "in_flight", "served": [per port], "max_in_flight": [...],
                    "bad_bodies", "connections": [accepted per port]}
  POST /service    body: the new service time in ms (applies to requests arriving after it)
  GET /timing      {"gaps": SUMMARY, "conn_gaps": SUMMARY, "service": SUMMARY}, each {"count",
                   "mean_us", "p50_us", "p90_us", "p99_us", "max_us"}. gaps: how long a worker
                   port sat idle between writing an answer and receiving its next request
                   (under a full queue that is all the front door's doing: reading the answer,
                   freeing the slot, sending the next request). conn_gaps: the same per
                   connection (for a client with several connections to one port). service:
                   request received to answer written (S plus the event loop's lateness,
                   which grows when the cores are busy).
  POST /reset      zeroes served, max_in_flight, bad_bodies, connections and timings
"""

import argparse
import asyncio
import json
import math
import signal
import socket
import sys
import time

ANSWER = b'{"input_text": "x", "probabilities": [0.5, 0.5]}'
MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024


def response(status, body, ctype=b"application/json", close=False):
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 413: b"Payload Too Large"}.get(status, b"?")
    return b"".join((
        b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (status, reason, ctype, len(body)),
        b"Connection: close\r\n\r\n" if close else b"\r\n",
        body,
    ))


OK_ANSWER = response(200, ANSWER)


class Sim:
    def __init__(self, k, service_ms):
        self.service = service_ms / 1000.0
        self.in_flight = [0] * k
        self.reset()

    def timing(self):
        def summary(seconds):
            g = sorted(seconds)
            if not g:
                return {"count": 0}
            at = lambda q: g[min(len(g) - 1, max(0, math.ceil(q * len(g)) - 1))] * 1e6
            return {"count": len(g), "mean_us": sum(g) / len(g) * 1e6, "p50_us": at(0.5),
                    "p90_us": at(0.9), "p99_us": at(0.99), "max_us": g[-1] * 1e6}

        return {"gaps": summary(self.gaps), "conn_gaps": summary(self.conn_gaps),
                "service": summary(self.service_times)}

    def stats(self):
        return {
            "service_ms": self.service * 1000.0,
            "in_flight": sum(self.in_flight),
            "served": self.served,
            "max_in_flight": self.max_in_flight,
            "bad_bodies": self.bad_bodies,
            "connections": self.connections,
        }

    def reset(self):
        k = len(self.in_flight)
        self.served = [0] * k
        self.max_in_flight = list(self.in_flight)
        self.bad_bodies = 0
        self.connections = [0] * k
        self.last_answer = [None] * k
        self.gaps = []
        self.conn_gaps = []
        self.service_times = []
        self.reset_at = time.monotonic()


class Http(asyncio.Protocol):
    """One connection; `index` is the worker's index, None for the control port."""

    def __init__(self, sim, index, loop):
        self.sim, self.index, self.loop = sim, index, loop
        self.buf = bytearray()
        self.busy = False  # a /run_model answer is pending: later requests wait (in order)
        self.transport = None
        self.closing = False
        self.received = 0.0  # when the pending /run_model request was received
        self.answered = None  # when this connection's last /run_model answer was written

    def connection_made(self, transport):
        self.transport = transport
        if self.index is not None:
            self.sim.connections[self.index] += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc):
        self.transport = None

    def data_received(self, data):
        self.buf += data
        self.process()

    def process(self):
        while not self.busy and self.transport is not None and not self.closing:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self.send(response(413, b"head too large", b"text/plain", close=True), True)
                return
            lines = bytes(self.buf[:end]).split(b"\r\n")
            try:
                method, target, version = lines[0].split(b" ", 2)
            except ValueError:
                self.send(response(400, b"bad request line", b"text/plain", close=True), True)
                return
            length, close = 0, version == b"HTTP/1.0"
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    try:
                        length = int(value)
                    except ValueError:
                        length = -1
                elif name == b"connection":
                    v = value.strip().lower()
                    close = v == b"close" or (close and v != b"keep-alive")
            if length < 0:
                self.send(response(400, b"bad content-length", b"text/plain", close=True), True)
                return
            if length > MAX_BODY:
                self.send(response(413, b"body too large", b"text/plain", close=True), True)
                return
            need = end + 4 + length
            if len(self.buf) < need:
                return
            body = bytes(self.buf[end + 4:need])
            del self.buf[:need]
            self.handle(method, target.split(b"?", 1)[0], body, close)

    def send(self, data, close=False):
        if self.transport is None:
            return
        self.transport.write(data)
        if close:
            self.closing = True
            self.transport.close()

    def handle(self, method, path, body, close):
        sim = self.sim
        if self.index is None:
            return self.control(method, path, body, close)
        if path == b"/run_model" and method == b"POST":
            if body:
                try:
                    ok = isinstance(json.loads(body).get("text"), str)
                except (ValueError, AttributeError):
                    ok = False
                if not ok:
                    sim.bad_bodies += 1
                    return self.send(response(400, b'{"error": "send {\\"text\\": \\"...\\"}"}', close=close), close)
            i = self.index
            self.received = self.loop.time()
            if sim.in_flight[i] == 0 and sim.last_answer[i] is not None:
                sim.gaps.append(self.received - sim.last_answer[i])
            if self.answered is not None and self.answered >= sim.reset_at:
                sim.conn_gaps.append(self.received - self.answered)
            sim.in_flight[i] += 1
            if sim.in_flight[i] > sim.max_in_flight[i]:
                sim.max_in_flight[i] = sim.in_flight[i]
            self.busy = True
            self.loop.call_later(sim.service, self.answer, close)
        elif path == b"/health" and method == b"GET":
            self.send(response(200, b"ok", b"text/plain", close), close)
        else:
            self.send(response(404, b'{"error": "no such route"}', close=close), close)

    def answer(self, close):
        sim, i = self.sim, self.index
        sim.in_flight[i] -= 1
        sim.served[i] += 1
        self.busy = False
        if close:
            self.send(response(200, ANSWER, close=True), True)
        else:
            self.send(OK_ANSWER)
            now = sim.last_answer[i] = self.answered = self.loop.time()
            sim.service_times.append(now - self.received)
            self.process()

    def control(self, method, path, body, close):
        sim = self.sim
        if path == b"/stats" and method == b"GET":
            out = json.dumps(sim.stats()).encode()
        elif path == b"/service" and method == b"POST":
            try:
                ms = float(body)
                assert ms >= 0
            except (ValueError, AssertionError):
                return self.send(response(400, b'{"error": "body: milliseconds"}', close=close), close)
            sim.service = ms / 1000.0
            out = json.dumps(sim.stats()).encode()
        elif path == b"/timing" and method == b"GET":
            out = json.dumps(sim.timing()).encode()
        elif path == b"/reset" and method == b"POST":
            sim.reset()
            out = json.dumps(sim.stats()).encode()
        else:
            return self.send(response(404, b'{"error": "no such route"}', close=close), close)
        self.send(response(200, out, close=close), close)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--service-ms", type=float, default=50.0)
    args = ap.parse_args()
    loop = asyncio.get_running_loop()
    try:  # the default 50 µs timer slack is 1 % of a 5 ms service time: wake on time instead
        with open("/proc/self/timerslack_ns", "w") as f:
            f.write("1")
    except OSError:
        pass
    sim = Sim(args.workers, args.service_ms)
    servers, ports = [], []
    for index in list(range(args.workers)) + [None]:
        server = await loop.create_server(lambda i=index: Http(sim, i, loop), "127.0.0.1", 0, backlog=1024)
        servers.append(server)
        ports.append(server.sockets[0].getsockname()[1])
    print(json.dumps({"ports": ports[:-1], "control": ports[-1]}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
