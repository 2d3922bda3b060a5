#!/usr/bin/env python3
"""An HTTP proxy in front of the AWS emulator: as strict as AWS, and able to fake errors.

  aws_fault_proxy.py --upstream http://127.0.0.1:PORT [--fail N] [--strict] [--eventual]
                     [--deny ACTION]...

Listens on 127.0.0.1 (a free port, printed on the first line of stdout once
listening) and forwards every request unchanged (method, path, headers, body) to
the upstream, except:
- the first N requests whose form body has Action=DeleteSecurityGroup get EC2's
  400 DependencyViolation error instead, as real EC2 answers while instances
  still use the group (default N: 1);
- with --strict, every request is checked against the constraints of AWS's own
  service model (botocore's JSON models: pattern, min and max length, enum,
  range of each parameter), which moto does not check; a request that breaks one
  gets AWS's answer instead (EC2: 400 InvalidParameterValue; ELB, CloudWatch:
  400 ValidationError; SSM: ValidationException);
- with --eventual, AWS's eventual consistency: each instance, security group,
  target group and load balancer a create made is not found once, by the first
  later request of agent's (the Rust SDK's) that names it (EC2:
  InvalidInstanceID.NotFound, InvalidGroup.NotFound; ELB: TargetGroupNotFound,
  LoadBalancerNotFound), as AWS answers right after a create;
- with --deny ACTION (or '*' for every action), what an explicit deny in a
  policy answers, as the Learner Lab's does outside its regions and sizes (EC2:
  403 UnauthorizedOperation; the others: 403 AccessDenied).
Each faked failure and each violation is logged to stderr, one line each; with --actions,
every request's action too.
Needs botocore and regex (for the models' \\p{L} classes): run it with moto's venv.
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
    strict = None
    # --eventual: ids a create returned that no request has named yet -> (service, code, message).
    eventual = False
    fresh = {}
    deny = set()
    actions = False
    lock = threading.Lock()


# Create action -> (pattern of the new ids in its answer, service, NotFound code, message).
CREATES = {
    "RunInstances": (r"<instanceId>(i-[0-9a-f]+)</instanceId>", "ec2", "InvalidInstanceID.NotFound", "The instance ID '{id}' does not exist"),
    "CreateSecurityGroup": (r"<groupId>(sg-[0-9a-f]+)</groupId>", "ec2", "InvalidGroup.NotFound", "The security group '{id}' does not exist"),
    "CreateTargetGroup": (r"<TargetGroupArn>([^<]+)</TargetGroupArn>", "elb", "TargetGroupNotFound", "One or more target groups not found"),
    "CreateLoadBalancer": (r"<LoadBalancerArn>([^<]+)</LoadBalancerArn>", "elb", "LoadBalancerNotFound", "One or more load balancers not found"),
}


class Strict:
    """Checks Query/EC2 form requests and JSON requests against botocore's service models."""

    # Rules AWS documents that its models do not carry: (service, action, parameter) -> rule.
    DOCUMENTED = {
        (sign, action, "Name"): (
            r"^(?!internal-)[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?$",
            "1 to 32 letters, digits or hyphens, not starting or ending with a hyphen nor with internal-",
        )
        for sign in ["elasticloadbalancing"]
        for action in ["CreateLoadBalancer", "CreateTargetGroup"]
    }

    # Signing name (from the Authorization header) -> botocore's service name.
    SERVICES = {"ec2": "ec2", "elasticloadbalancing": "elbv2", "monitoring": "cloudwatch", "ssm": "ssm"}

    def __init__(self):
        import botocore.loaders
        import botocore.model
        import regex

        self.regex = regex
        loader = botocore.loaders.Loader()
        self.models = {
            sign: botocore.model.ServiceModel(loader.load_service_model(name, "service-2"), name)
            for sign, name in self.SERVICES.items()
        }
        self.patterns = {}

    def pattern(self, text):
        if text not in self.patterns:
            try:
                self.patterns[text] = self.regex.compile(text)
            except self.regex.error:
                self.patterns[text] = None  # a model pattern this engine cannot read: not checked
        return self.patterns[text]

    def check(self, headers, body):
        """(service, action, [violations]) for a request, or None when it is not one we know."""
        auth = headers.get("Authorization", "")
        sign = next((p.split("/")[3] for p in auth.split() if p.startswith("Credential=") and p.count("/") >= 4), None)
        model = self.models.get(sign)
        if model is None:
            return None
        target = headers.get("X-Amz-Target")
        if target:
            import json

            op = model.operation_model(target.split(".")[-1])
            try:
                params = json.loads(body or b"{}")
            except ValueError:
                return None
            out = []
            self.value(op.input_shape, params, op.name, out)
            return sign, op.name, out
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        action = (form.pop("Action", [None]))[0]
        form.pop("Version", None)
        if not action or action not in model.operation_names:
            return None
        op = model.operation_model(action)
        ec2 = model.protocol == "ec2"
        out = []
        for key, values in form.items():
            self.walk(op.input_shape, key.split("."), values[0], key, ec2, out)
            rule = self.DOCUMENTED.get((sign, action, key))
            if rule and not self.regex.search(rule[0], values[0]):
                out.append(f"{key}: {values[0]!r} is not {rule[1]} (AWS's documented limit)")
        return sign, action, out

    def walk(self, shape, segs, value, key, ec2, out):
        """Follows a flattened form key (Tags.member.1.Value) down the shape to its leaf."""
        if shape is None:
            return
        if not segs:
            self.scalar(shape, value, key, out, ec2)
            return
        if shape.type_name == "structure":
            for name, member in shape.members.items():
                ser = member.serialization
                wire = ser.get("queryName") or (ser.get("name", name)[:1].upper() + ser.get("name", name)[1:] if ec2 else ser.get("name", name))
                if wire == segs[0]:
                    self.walk(member, segs[1:], value, key, ec2, out)
                    return
            out.append(f"{key}: no such parameter of {shape.name}")
        elif shape.type_name == "list":
            flat = ec2 or shape.serialization.get("flattened")
            rest = segs if flat else segs[1:]  # Name.member.N (query) or Name.N (ec2)
            if rest and rest[0].isdigit():
                self.walk(shape.member, rest[1:], value, key, ec2, out)
        elif shape.type_name == "map":
            # Name.entry.N.key / Name.entry.N.value
            if len(segs) >= 3 and segs[2] in ("key", "value"):
                self.walk(shape.key if segs[2] == "key" else shape.value, segs[3:], value, key, ec2, out)

    def value(self, shape, v, key, out):
        """A JSON-protocol value against its shape."""
        if shape is None:
            return
        if shape.type_name == "structure" and isinstance(v, dict):
            for name, inner in v.items():
                if name not in shape.members:
                    out.append(f"{key}.{name}: no such parameter of {shape.name}")
                else:
                    self.value(shape.members[name], inner, f"{key}.{name}", out)
        elif shape.type_name == "list" and isinstance(v, list):
            self.length(shape, len(v), key, "items", out)
            for i, inner in enumerate(v):
                self.value(shape.member, inner, f"{key}[{i}]", out)
        elif shape.type_name == "map" and isinstance(v, dict):
            for k, inner in v.items():
                self.value(shape.key, k, f"{key} key", out)
                self.value(shape.value, inner, f"{key}.{k}", out)
        elif not isinstance(v, (dict, list)):
            self.scalar(shape, v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v), key, out)

    def length(self, shape, n, key, unit, out):
        lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
        if lo is not None and n < lo:
            out.append(f"{key}: {n} {unit}, fewer than the minimum {lo}")
        if hi is not None and n > hi:
            out.append(f"{key}: {n} {unit}, more than the maximum {hi}")

    def scalar(self, shape, v, key, out, ec2=False):
        t = shape.type_name
        if t == "string":
            self.length(shape, len(v), key, "characters", out)
            enum = shape.metadata.get("enum")
            # (EC2 answers an unknown instance type with its own InvalidInstanceType, and its
            # model's enums lag the service: only the other services' enums are checked)
            if enum and v not in enum and not ec2:
                out.append(f"{key}: {v!r} is not one of {', '.join(enum[:5])}{', …' if len(enum) > 5 else ''}")
            pat = shape.metadata.get("pattern")
            if pat and (rx := self.pattern(pat)) is not None and not rx.search(v):
                out.append(f"{key}: {v!r} does not match the pattern {pat}")
        elif t in ("integer", "long"):
            try:
                n = int(v)
            except ValueError:
                out.append(f"{key}: {v!r} is not an integer")
                return
            lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
            if (lo is not None and n < lo) or (hi is not None and n > hi):
                out.append(f"{key}: {n} is outside {lo}..{hi}")
        elif t == "boolean" and v not in ("true", "false"):
            out.append(f"{key}: {v!r} is not a boolean")


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

    def denied(self, body):
        """--deny: an explicit deny's answer, for the actions named."""
        if not State.deny:
            return None
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        action = (form.get("Action") or [None])[0] or self.headers.get("X-Amz-Target", "").split(".")[-1]
        if not action or ("*" not in State.deny and action not in State.deny):
            return None
        ec2 = "/ec2/" in self.headers.get("Authorization", "")
        code = "UnauthorizedOperation" if ec2 else "AccessDenied"
        message = (
            "You are not authorized to perform this operation. User: arn:aws:sts::123456789012:assumed-role/voclabs/user0 "
            f"is not authorized to perform: {'ec2' if ec2 else 'elasticloadbalancing'}:{action} with an explicit deny in a "
            "service control policy. Encoded authorization failure message: " + "Qk9HVVM" * 200
        )
        print(f"aws_fault_proxy: denied {action}", file=sys.stderr, flush=True)
        rid = uuid.uuid4()
        if ec2:
            return (
                f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
                f"<Message>{message}</Message></Error></Errors><RequestID>{rid}</RequestID></Response>"
            ).encode()
        return (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
            f"<Message>{message}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>"
        ).encode()

    def not_yet(self, body):
        """--eventual: AWS's NotFound for a request of agent's that names a resource just created."""
        agent = self.headers.get("User-Agent", "") + self.headers.get("X-Amz-User-Agent", "")
        if not State.eventual or "aws-sdk-rust" not in agent:
            return None
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        action = (form.get("Action") or [None])[0]
        if action in CREATES:
            return None
        values = {v for k, vs in form.items() for v in vs}
        with State.lock:
            named = [i for i in State.fresh if i in values]
            if not named:
                return None
            gone = [(i, State.fresh.pop(i)) for i in named]
        i, (service, code, message) = gone[0]
        print(f"aws_fault_proxy: eventual: {code} for {action} {' '.join(n for n, _ in gone)}", file=sys.stderr, flush=True)
        rid = uuid.uuid4()
        if service == "ec2":
            text = (
                f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
                f"<Message>{message.format(id=i)}</Message></Error></Errors><RequestID>{rid}</RequestID></Response>"
            )
        else:
            text = (
                f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
                f"<Message>{message}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>"
            )
        return text.encode()

    def created(self, body, status, data):
        """--eventual: remembers the ids a successful create returned."""
        if not State.eventual or status != 200:
            return
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        found = CREATES.get((form.get("Action") or [None])[0])
        if found is None:
            return
        pattern, service, code, message = found
        import re

        with State.lock:
            for i in re.findall(pattern, data.decode("utf-8", "replace")):
                State.fresh[i] = (service, code, message)

    def reply(self, status, headers, body):
        self.send_response_only(status)
        for k, v in headers:
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def refuse(self, service, action, problems):
        """AWS's own answer to a request that breaks its model's constraints."""
        message = f"{action}: " + "; ".join(problems)
        print(f"aws_fault_proxy: violation: {service} {message}", file=sys.stderr, flush=True)
        rid = uuid.uuid4()
        esc = message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        if service == "ssm":
            import json

            body = json.dumps({"__type": "ValidationException", "message": message}).encode()
            self.reply(400, [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", "ValidationException")], body)
        elif service == "ec2":
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>InvalidParameterValue</Code>'
                f"<Message>{esc}</Message></Error></Errors><RequestID>{rid}</RequestID></Response>"
            )
            self.reply(400, [("Content-Type", "text/xml;charset=UTF-8")], body.encode())
        else:
            body = (
                "<ErrorResponse><Error><Type>Sender</Type><Code>ValidationError</Code>"
                f"<Message>{esc}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>"
            )
            self.reply(400, [("Content-Type", "text/xml")], body.encode())

    def forward(self):
        body = self.read_body()
        if State.actions:
            form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
            action = (form.get("Action") or [None])[0] or self.headers.get("X-Amz-Target", "").split(".")[-1]
            if action:
                print(f"aws_fault_proxy: action: {action}", file=sys.stderr, flush=True)
        fake = self.fault(body)
        if fake is not None:
            self.reply(400, [("Content-Type", "text/xml;charset=UTF-8")], fake)
            return
        if State.strict is not None:
            verdict = State.strict.check(self.headers, body)
            if verdict is not None and verdict[2]:
                self.refuse(*verdict)
                return
        refused = self.denied(body)
        if refused is not None:
            self.reply(403, [("Content-Type", "text/xml;charset=UTF-8")], refused)
            return
        absent = self.not_yet(body)
        if absent is not None:
            self.reply(400, [("Content-Type", "text/xml;charset=UTF-8")], absent)
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
            self.created(body, r.status, data)
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
    p.add_argument("--strict", action="store_true", help="refuse what AWS's service models refuse")
    p.add_argument("--eventual", action="store_true", help="answer NotFound once for what was just created")
    p.add_argument("--deny", action="append", default=[], metavar="ACTION", help="answer an explicit deny to ACTION ('*': all)")
    p.add_argument("--actions", action="store_true", help="log every request's action")
    a = p.parse_args()
    State.actions = a.actions
    State.eventual = a.eventual
    State.deny = set(a.deny)
    if a.strict:
        State.strict = Strict()
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
