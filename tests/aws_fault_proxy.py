#!/usr/bin/env python3
"""An HTTP proxy in front of the AWS emulator that fakes EC2 DependencyViolation errors.

  aws_fault_proxy.py --upstream http://127.0.0.1:PORT [--fail N]

Listens on 127.0.0.1 (a free port, printed on the first line of stdout once
listening) and forwards every request unchanged (method, path, headers, body) to
the upstream, except that the first N requests whose form body has
Action=DeleteSecurityGroup get EC2's 400 DependencyViolation error instead, as
real EC2 answers while instances still use the group.  Each faked failure is
logged to stderr.  Stdlib only.
"""

import argparse
import http.client
import sys
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "expect"}
ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Response><Errors><Error><Code>DependencyViolation</Code>"
    "<Message>resource {group} has a dependent object</Message></Error></Errors>"
    "<RequestID>{request_id}</RequestID></Response>"
)


class State:
    upstream = None
    left = 0
    faked = 0
    lock = threading.Lock()


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as SDK connection pools expect

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def fault(self, body):
        if b"DeleteSecurityGroup" not in body:
            return None
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        if form.get("Action") != ["DeleteSecurityGroup"]:
            return None
        with State.lock:
            if State.left <= 0:
                return None
            State.left -= 1
            State.faked += 1
            n = State.faked
        group = (form.get("GroupId") or form.get("GroupName") or ["sg-unknown"])[0]
        print(f"aws_fault_proxy: faked DependencyViolation #{n} for DeleteSecurityGroup {group}", file=sys.stderr, flush=True)
        return ERROR.format(group=group, request_id=uuid.uuid4()).encode()

    def reply(self, status, headers, body):
        self.send_response_only(status)
        for k, v in headers:
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def forward(self):
        body = self.read_body()
        fake = self.fault(body)
        if fake is not None:
            self.reply(400, [("Content-Type", "text/xml;charset=UTF-8")], fake)
            return
        u = State.upstream
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=120)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() not in HOP and k.lower() != "content-length":
                    conn.putheader(k, v)
            if body or self.command in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            r = conn.getresponse()
            data = r.read()
            self.reply(r.status, r.getheaders(), data)
        except OSError as e:
            self.reply(502, [("Content-Type", "text/plain")], f"aws_fault_proxy: upstream: {e}\n".encode())
        finally:
            conn.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = forward

    def log_message(self, *args):
        pass


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", required=True, help="http://HOST:PORT of the emulator")
    p.add_argument("--fail", type=int, default=1, help="how many DeleteSecurityGroup calls to fail (default 1)")
    a = p.parse_args()
    State.upstream = urllib.parse.urlsplit(a.upstream)
    if State.upstream.scheme != "http" or not State.upstream.hostname:
        p.error(f"--upstream must be http://HOST:PORT, not {a.upstream!r}")
    State.left = a.fail
    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
