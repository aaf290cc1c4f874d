#!/usr/bin/env python3
"""A minimal OTLP/HTTP sink for the telemetry-overhead benchmark: accepts POST /v1/traces,
/v1/metrics and /v1/logs (protobuf), answers 200 with an empty export response, and prints how
many requests and bytes it took when stopped. Standard library only (the GPU host and CI have no PyPI)."""
import http.server, signal, sys

counts = {}

class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        n, size = counts.get(self.path, (0, 0))
        counts[self.path] = (n + 1, size + len(body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

def report(*_):
    for path, (n, size) in sorted(counts.items()):
        print(f"otlp-sink: {path}: {n} requests, {size} bytes", flush=True)
    sys.exit(0)

signal.signal(signal.SIGTERM, report)
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink)
print(f"otlp-sink listening on 127.0.0.1:{sys.argv[1]}", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    report()
