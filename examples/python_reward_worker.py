#!/usr/bin/python3
"""python_reward_worker.py: an rlx reward worker in Python, speaking the wire protocol directly.

It shows everything a worker in any language needs (proto/rlx.proto is the contract):
  - one ZeroMQ DEALER socket to the hub; every message is ONE frame holding ONE Envelope,
    with protocol_version = 2 stamped on it;
  - join: Hello(role REWARD_WORKER, scorers, credits) -> Welcome(worker_id, heartbeat);
  - a Heartbeat every heartbeat_interval_ms when nothing else was sent; a hub silent for
    heartbeat_liveness intervals is presumed gone: new socket, Hello again with our id and
    the Welcome's session_key (the proof that the rejoin is us; a new id brings a new key);
  - ScoreRequest -> ScoreReply (same request_id, one ScoreResult per item);
  - Error NOT_JOINED -> Hello again; SIGINT/SIGTERM -> Bye, exit 0.

Its scorers (--scorer, default "py_exact,py_symmetry"):
  py_exact     text items: reward 1 if the response equals the target, else 0, component
               "exact" (any other served name means this too, e.g. --scorer exact);
  py_symmetry  image items (a diffusion x_0 in ScoreItem.payload, shape payload_shape [H, W]
               or [C, H, W]): -mean |x[c][i][j] - x[c][i][W-1-j]|, component "symmetry"; an
               item without a payload gets an error result.
Items naming a scorer not served get an error result.

Needs Debian's python3-zmq and python3-protobuf (run it with /usr/bin/python3) and protoc
(protobuf-compiler): the Python code for rlx.proto is generated at start into a cache dir.

    /usr/bin/python3 examples/python_reward_worker.py --hub tcp://127.0.0.1:5555
"""
import argparse
import hashlib
import importlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import zmq

PROTOCOL_VERSION = 2
SCORERS = "py_exact,py_symmetry"
SYMMETRY = "py_symmetry"  # the served name that means the image scorer; others: exact match
GENERATOR = "rlx-python-worker 2"  # part of the code cache key: bump when load_proto changes
HERE = os.path.dirname(os.path.abspath(__file__))


def load_proto(proto_path, cache_dir):
    """Generates Python code for rlx.proto with protoc --python_out into cache_dir/<hash>/
    (once per schema version) and imports it. Returns (strict, lenient) modules: `strict` is
    rlx.proto as is, for what we send; `lenient` is a copy in package rlx_lenient whose string
    fields are bytes (same wire encoding), for what we receive: a response that is not valid
    UTF-8 must not make a whole ScoreRequest unreadable (Python's protobuf refuses such
    strings). Text fields read through it are bytes: decode them with text() below."""
    with open(proto_path, "rb") as f:
        source = f.read().decode("utf-8")
    digest = hashlib.sha256((GENERATOR + source).encode("utf-8")).hexdigest()[:16]
    out = os.path.join(cache_dir, digest)
    if not os.path.exists(os.path.join(out, "rlx_lenient_pb2.py")):
        tmp = out + ".tmp.%d" % os.getpid()
        os.makedirs(tmp, exist_ok=True)
        lenient = re.sub(r"^package rlx;", "package rlx_lenient;", source, flags=re.M)
        lenient = re.sub(r"^(\s+)string(\s+\w+\s*=)", r"\1bytes\2", lenient, flags=re.M)
        with open(os.path.join(tmp, "rlx_lenient.proto"), "w") as f:
            f.write(lenient)
        with open(os.path.join(tmp, "rlx.proto"), "w") as f:
            f.write(source)
        for name in ("rlx.proto", "rlx_lenient.proto"):
            subprocess.run(["protoc", "--python_out=" + tmp, "--proto_path=" + tmp, name],
                           check=True)
        try:
            os.rename(tmp, out)  # atomic: concurrent workers never see half a module
        except OSError:  # another worker got there first, or out is unusable: use ours
            if os.path.exists(os.path.join(out, "rlx_lenient_pb2.py")):
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                out = tmp
    sys.path.insert(0, out)
    return importlib.import_module("rlx_pb2"), importlib.import_module("rlx_lenient_pb2")


def text(b):
    """A string field read through the lenient schema, as text (bad UTF-8 -> U+FFFD)."""
    return b.decode("utf-8", "replace")


def symmetry(x, shape):
    """-mean |x[c][i][j] - x[c][i][W-1-j]| of a flattened image of shape [H, W] or [C, H, W]
    (a flat [64] is read as 8x8): 0 for a mirror image. Raises ValueError if it is none."""
    n = 1
    for d in shape:
        n *= d
    if not x or n != len(x):
        raise ValueError("needs an image payload; got %d floats of shape %s" % (len(x), shape))
    if len(shape) == 3:
        C, H, W = shape
    elif len(shape) == 2:
        (H, W), C = shape, 1
    elif len(x) == 64:
        C, H, W = 1, 8, 8
    else:
        raise ValueError("needs an image [H, W] or [C, H, W], got shape %s" % list(shape))
    total = 0.0
    for row in range(0, C * H * W, W):
        for j in range(W):
            total += abs(x[row + j] - x[row + W - 1 - j])
    return -total / len(x)


class Worker:
    def __init__(self, args, pb, pb_in):
        self.args, self.pb, self.pb_in = args, pb, pb_in
        self.ctx = zmq.Context.instance()
        self.sock = None
        self.seq = 0
        self.worker_id = 0
        self.session_key = 0  # Welcome.session_key for worker_id: proves a rejoin is us
        self.run_id = args.run_id or ""
        self.joined = False
        self.hb_s = args.heartbeat_ms / 1000.0
        self.liveness = 5
        self.backoff = self.hb_s
        self.hello_due = 0.0
        self.last_recv = self.last_send = time.monotonic()
        self.stop = False
        self.hub_left = False
        self.requests = 0
        self.scorers = [n for n in args.scorer.split(",") if n]

    # ---- sending -----------------------------------------------------------------------
    def send(self, **body):
        env = self.pb.Envelope()
        env.protocol_version = PROTOCOL_VERSION
        self.seq += 1
        env.seq = self.seq
        env.run_id = self.run_id
        env.sender_id = self.worker_id
        (name, msg), = body.items()
        getattr(env, name).CopyFrom(msg)
        try:
            self.sock.send(env.SerializeToString(), zmq.DONTWAIT)
            self.last_send = time.monotonic()
        except zmq.Again:
            pass  # queue full: the heartbeat/liveness logic recovers

    def hello(self):
        # A fresh socket per Hello: Hellos queued to an absent hub would each become a worker.
        if self.sock is not None:
            self.sock.close(linger=0)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.args.hub)
        h = self.pb.Hello(role=self.pb.ROLE_REWARD_WORKER, worker_id=self.worker_id,
                          session_key=self.session_key, name=self.args.name,
                          agent="python-example 1",
                          scorers=self.scorers,
                          trajectory_kinds=[self.pb.TRAJECTORY_KIND_TEXT,
                                            self.pb.TRAJECTORY_KIND_DIFFUSION,
                                            self.pb.TRAJECTORY_KIND_GFLOW],
                          credits=self.args.credits, pid=os.getpid())
        self.joined = False
        self.send(hello=h)

    def heartbeat(self):
        self.send(heartbeat=self.pb.Heartbeat(worker_id=self.worker_id,
                                              credits=self.args.credits))

    def bye(self, reason):
        if self.sock is None:
            return
        if self.worker_id:
            self.send(bye=self.pb.Bye(worker_id=self.worker_id, reason=reason))
        self.sock.close(linger=1000)
        self.sock = None

    # ---- scoring -----------------------------------------------------------------------
    def score(self, req):
        reply = self.pb.ScoreReply(request_id=req.request_id)
        for item in req.items:
            res = reply.results.add()
            res.id.actor_id, res.id.seq = item.id.actor_id, item.id.seq
            scorer = text(item.scorer)
            if scorer not in self.scorers:
                res.error = "unknown scorer %r: this worker serves %s" % (scorer,
                                                                         self.args.scorer)
                continue
            if scorer == SYMMETRY:
                try:  # payload: float32 values, exact as Python floats
                    r = symmetry(list(item.payload), list(item.payload_shape))
                except ValueError as e:
                    res.error = "%s: %s" % (scorer, e)
                    continue
                res.reward = r
                res.components["symmetry"] = r
                continue
            exact = 1.0 if text(item.response_text) == text(item.target) else 0.0
            res.reward = exact
            res.components["exact"] = exact
        self.send(score_reply=reply)
        self.requests += 1

    # ---- receiving ---------------------------------------------------------------------
    def handle(self, data):
        env = self.pb_in.Envelope()
        try:
            env.ParseFromString(data)
        except Exception:
            print("py worker: dropped a message that does not parse", file=sys.stderr)
            return
        if env.protocol_version != PROTOCOL_VERSION:
            print("py worker: dropped a message of protocol version %d" % env.protocol_version,
                  file=sys.stderr)
            return
        self.last_recv = time.monotonic()
        kind = env.WhichOneof("body")
        if kind == "welcome":
            w = env.welcome
            self.worker_id = w.worker_id
            self.session_key = w.session_key  # the key goes with the id, old or new
            if w.heartbeat_interval_ms:
                self.hb_s = w.heartbeat_interval_ms / 1000.0
            if w.heartbeat_liveness:
                self.liveness = w.heartbeat_liveness
            if not self.run_id:
                self.run_id = text(env.run_id)
            self.joined = True
            self.backoff = self.hb_s
            print("py worker %s: joined as worker %d (run %r)" % (self.args.name, self.worker_id,
                                                                  self.run_id), file=sys.stderr)
        elif kind == "score_request":
            if self.joined:
                self.score(env.score_request)
        elif kind == "error":
            if env.error.code == self.pb_in.ERROR_CODE_NOT_JOINED:
                print("py worker: hub does not know us: Hello again", file=sys.stderr)
                self.joined = False
                self.hello_due = 0.0
            else:
                print("py worker: hub error %d: %s" % (env.error.code, text(env.error.message)),
                      file=sys.stderr)
        elif kind == "bye":
            print("py worker: hub said Bye (%s)" % text(env.bye.reason), file=sys.stderr)
            self.stop = self.hub_left = True
        # heartbeats and anything else: only liveness

    def run(self):
        while not self.stop:
            now = time.monotonic()
            if not self.joined:
                if now >= self.hello_due:
                    self.hello()
                    self.hello_due = now + self.backoff
                    self.backoff = min(self.backoff * 2, 8.0)
                    self.last_recv = now
            else:
                if now - self.last_recv > self.hb_s * self.liveness:
                    print("py worker: hub silent: reconnecting", file=sys.stderr)
                    self.joined = False
                    self.hello_due = now
                    continue
                if now - self.last_send >= self.hb_s:
                    self.heartbeat()
            if self.args.max_requests and self.requests >= self.args.max_requests:
                break
            try:
                if self.sock.poll(50, zmq.POLLIN):
                    frames = self.sock.recv_multipart(zmq.DONTWAIT)
                    if len(frames) == 1:
                        self.handle(frames[0])
            except zmq.ZMQError as e:
                if e.errno != zmq.EAGAIN and e.errno != getattr(zmq, "EINTR", 4):
                    raise
        if self.hub_left:  # nobody to say Bye to: leave at once
            self.sock.close(linger=0)
            self.sock = None
        else:
            self.bye("signal" if self.stop else "max requests done")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hub", required=True, help="hub endpoint, tcp://HOST:PORT")
    ap.add_argument("--name", default="py-reward-%d" % os.getpid())
    ap.add_argument("--credits", type=int, default=2)
    ap.add_argument("--scorer", default=SCORERS,
                    help="comma-separated scorer names to serve: %s is the image symmetry "
                         "score, any other name exact match (default %s)" % (SYMMETRY, SCORERS))
    ap.add_argument("--heartbeat-ms", type=int, default=1000)
    ap.add_argument("--max-requests", type=int, default=0)
    ap.add_argument("--run-id", default="")
    ap.add_argument("--proto", default=os.path.join(HERE, "..", "proto", "rlx.proto"))
    ap.add_argument("--proto-cache", default=os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "rlx", "proto-py"))
    args = ap.parse_args()
    pb, pb_in = load_proto(args.proto, args.proto_cache)
    w = Worker(args, pb, pb_in)

    def on_signal(sig, frame):
        w.stop = True
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    w.run()
    w.ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
