#!/usr/bin/env python3
"""User-space round-trip latency for SSH benchmarks (tc netem is not available here).

    rtt_proxy.py --rtt SECONDS HOST [HOST...]

One asyncio process. For host i it listens on 127.0.0.1:PORT_i (ephemeral) and forwards
each accepted connection to HOST_i:22, prints {"ports": [...]} as one JSON line on stdout
once listening, then serves until SIGTERM/SIGINT.

Model of a path with one-way delay d = rtt/2 in each direction:
  * the client's connect() completes at once locally, so the proxy emulates the TCP
    handshake: it dials upstream only after d (the SYN's trip), and bytes the client sends
    before a real handshake would have finished (t0 + rtt) are held until then;
  * every chunk is stamped when read and written out when its stamp + d is reached, by a
    per-direction writer task fed through a FIFO queue: order is preserved and reading never
    waits for the delay, so throughput is not reduced (pipelining, like a real link).
So the server's banner reaches the client about one rtt after connect, as over a real link.
"""

import argparse
import asyncio
import json
import signal
import socket
import sys
import time

CHUNK = 65536


async def pump(reader, writer_ready, writer_box, delay, not_before):
    """Read chunks from `reader`, forward each to writer_box[0] at max(read, not_before)+delay."""
    q: asyncio.Queue = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def reader_task():
        try:
            while True:
                data = await reader.read(CHUNK)
                now = loop.time()
                q.put_nowait((max(now, not_before) + delay, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            q.put_nowait((loop.time() + delay, b""))

    async def writer_task():
        await writer_ready.wait()
        w = writer_box[0]
        while True:
            due, data = await q.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if w is None:
                return
            try:
                if not data:
                    if w.can_write_eof():
                        w.write_eof()
                    await w.drain()
                    return
                w.write(data)
                await w.drain()
            except (ConnectionError, OSError):
                return

    rt = asyncio.ensure_future(reader_task())
    try:
        await writer_task()
    finally:
        rt.cancel()


ACTIVE: set = set()


async def handle(creader, cwriter, host, port, half):
    task = asyncio.current_task()
    ACTIVE.add(task)
    try:
        await relay(creader, cwriter, host, port, half)
    except asyncio.CancelledError:
        pass  # shutdown: no traceback for connections still closing
    finally:
        ACTIVE.discard(task)


async def relay(creader, cwriter, host, port, half):
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    sock = cwriter.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    up_ready = asyncio.Event()
    down_ready = asyncio.Event()
    down_ready.set()
    up_box = [None]
    # client -> server: nothing the client sends may arrive before t0 + rtt + d
    c2s = asyncio.ensure_future(pump(creader, up_ready, up_box, half, t0 + 2 * half))
    try:
        await asyncio.sleep(half)  # the SYN's trip
        ureader, uwriter = await asyncio.open_connection(host, port)
        usock = uwriter.get_extra_info("socket")
        if usock is not None:
            usock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        c2s.cancel()
        cwriter.close()
        return
    up_box[0] = uwriter
    up_ready.set()
    # server -> client: each chunk one-way delay d after the proxy read it
    s2c = asyncio.ensure_future(pump(ureader, down_ready, [cwriter], half, 0.0))
    try:
        await asyncio.wait({c2s, s2c}, return_when=asyncio.ALL_COMPLETED)
    finally:
        for t in (c2s, s2c):
            t.cancel()
        for w in (cwriter, uwriter):
            try:
                w.close()
            except Exception:
                pass


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rtt", type=float, required=True, help="round-trip time in seconds")
    ap.add_argument("--port", type=int, default=22, help="upstream port (default 22)")
    ap.add_argument("hosts", nargs="+")
    a = ap.parse_args()
    half = a.rtt / 2
    servers = []
    ports = []
    for h in a.hosts:
        srv = await asyncio.start_server(
            lambda r, w, h=h: handle(r, w, h, a.port, half), "127.0.0.1", 0, backlog=512
        )
        servers.append(srv)
        ports.append(srv.sockets[0].getsockname()[1])
    print(json.dumps({"ports": ports, "pid_started": time.time()}), flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, done.set)
    await done.wait()
    for srv in servers:
        srv.close()
    # let connections that are still closing (delayed FINs) finish, briefly
    if ACTIVE:
        await asyncio.wait(set(ACTIVE), timeout=4 * half + 0.5)
    for t in list(ACTIVE):
        t.cancel()
    await asyncio.sleep(0)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
