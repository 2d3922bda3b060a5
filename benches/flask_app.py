"""The course lab's web app, as benches/web runs it: Flask under gunicorn (sync workers).

    gunicorn --chdir benches -w $((2 * $(nproc))) -b 127.0.0.1:PORT flask_app:app

GET /, /cluster1 and /cluster2 answer `Instance {id} is responding now!`, the same body as
agent-web. The lab reads the id from the EC2 metadata service once at start; off EC2 the
benchmark fixes it with BENCH_INSTANCE (default `bench`, as `agent-web --name bench`).
"""

import os

from flask import Flask

INSTANCE = os.environ.get("BENCH_INSTANCE", "bench")
BODY = f"Instance {INSTANCE} is responding now!"

app = Flask(__name__)


@app.route("/")
def root():
    return BODY


@app.route("/cluster1")
def cluster1():
    return BODY


@app.route("/cluster2")
def cluster2():
    return BODY
