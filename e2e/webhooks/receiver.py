#!/usr/bin/env python3
"""A webhook receiver for hedwig's tests and benchmark: checks every request's
Hedwig-Signature with Python's own hmac (independent of the Rust signer) and logs one JSON
line per request to --log.

    receiver.py --listen 127.0.150.1:9000 --secret-file s --log hooks.jsonl [--mode MODE]

Modes: ok (answer 200), fail-first=N (the first N requests of each event id get 500, then
200), status=CODE (always CODE), hang (accept, read, never answer: sleep an hour).
A request whose signature does not verify, or whose time is more than 5 minutes off, gets
401 and is logged with "sig_ok": false.
Log line: {"id", "type", "status", "sig_ok", "attempt", "t", "payload"}.
"""

import argparse
import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE = 300  # seconds: refuse replays older than this


def verify(secret: bytes, header: str, body: bytes) -> bool:
    """The verification docs/webhooks.md shows."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - t) > TOLERANCE:
        return False
    expected = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--secret-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--mode", default="ok")
    args = ap.parse_args()
    secret = open(args.secret_file, "rb").read().strip()
    host, port = args.listen.rsplit(":", 1)
    lock = threading.Lock()
    seen: dict = {}
    log = open(args.log, "a", buffering=1)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):  # quiet
            pass

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            if n > 1_000_000:
                self.send_error(413)
                return
            body = self.rfile.read(n)
            ok = verify(secret, self.headers.get("Hedwig-Signature", ""), body)
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
            event_id = payload.get("id") if isinstance(payload, dict) else None
            with lock:
                seen[event_id] = seen.get(event_id, 0) + 1
                count = seen[event_id]
            mode = args.mode
            if mode == "hang":
                with lock:
                    log.write(json.dumps({"id": event_id, "status": None, "sig_ok": ok, "hang": True}) + "\n")
                time.sleep(3600)
                return
            if not ok:
                status = 401
            elif mode.startswith("fail-first="):
                status = 500 if count <= int(mode.split("=", 1)[1]) else 200
            elif mode.startswith("status="):
                status = int(mode.split("=", 1)[1])
            else:
                status = 200
            with lock:
                log.write(json.dumps({
                    "id": event_id,
                    "type": payload.get("type") if isinstance(payload, dict) else None,
                    "status": status,
                    "sig_ok": ok,
                    "attempt": self.headers.get("Hedwig-Delivery-Attempt"),
                    "header_id": self.headers.get("Hedwig-Event-Id"),
                    "t": time.time(),
                    "payload": payload,
                }) + "\n")
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass  # a sender killed mid-request (the SIGKILL tests): nothing to report

    server = Server((host, int(port)), Handler)
    print("listening", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
