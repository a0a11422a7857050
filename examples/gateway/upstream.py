#!/usr/bin/env python3
"""The orders API behind the gateway's example: Python's standard library only.

It keeps orders in memory and counts how many it created, so a retried POST that reached it
twice would show. Routes:

  POST /orders            create an order from the JSON body; 201 with Location
  GET  /orders/{id}       one order
  GET  /stats             {"orders_created": n, "webhooks_received": n}
  POST /webhooks/psp      a payment provider's webhook (the gateway verified its signature)
  GET|POST /slow?ms=N     answers after N milliseconds
  GET  /events            a short server-sent event stream
  GET|POST /flaky?name=N  500 on the first call for a name, then 200; GET /flaky/N tells the calls

Usage: upstream.py [PORT]   (default 8000, on 127.0.0.1)
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

LOCK = threading.Lock()
ORDERS = {}
STATS = {"orders_created": 0, "webhooks_received": 0}
FLAKY = {}  # name -> calls seen


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # the gateway keeps the access log
        pass

    def send_json(self, status, value, headers=()):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, val in headers:
            self.send_header(name, val)
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def flaky(self):
        name = parse_qs(urlparse(self.path).query).get("name", [""])[0]
        with LOCK:
            FLAKY[name] = FLAKY.get(name, 0) + 1
            calls = FLAKY[name]
        if calls == 1:
            return self.send_json(500, {"error": "the first call fails", "calls": calls})
        return self.send_json(200, {"calls": calls})

    def do_POST(self):
        path = urlparse(self.path).path
        body = self.read_body()
        if path == "/flaky":
            return self.flaky()
        if path == "/orders":
            try:
                order = json.loads(body or b"{}")
            except ValueError:
                return self.send_json(422, {"error": "the body is not JSON"})
            with LOCK:
                STATS["orders_created"] += 1
                order_id = "ord_%d" % STATS["orders_created"]
                order = {"id": order_id, "item": order.get("item"), "quantity": order.get("quantity", 1)}
                ORDERS[order_id] = order
            return self.send_json(201, order, [("Location", "/orders/" + order_id)])
        if path == "/slow":
            ms = int(parse_qs(urlparse(self.path).query).get("ms", ["1000"])[0])
            time.sleep(ms / 1000)
            return self.send_json(200, {"slept_ms": ms})
        if path == "/webhooks/psp":
            with LOCK:
                STATS["webhooks_received"] += 1
            return self.send_json(200, {"received": True})
        self.send_json(404, {"error": "no such route"})

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/flaky":
            return self.flaky()
        if url.path.startswith("/flaky/"):
            with LOCK:
                return self.send_json(200, {"calls": FLAKY.get(url.path[len("/flaky/"):], 0)})
        if url.path == "/stats":
            with LOCK:
                return self.send_json(200, dict(STATS))
        if url.path.startswith("/orders/"):
            with LOCK:
                order = ORDERS.get(url.path[len("/orders/"):])
            return self.send_json(200, order) if order else self.send_json(404, {"error": "no such order"})
        if url.path == "/slow":
            ms = int(parse_qs(url.query).get("ms", ["1000"])[0])
            time.sleep(ms / 1000)
            return self.send_json(200, {"slept_ms": ms})
        if url.path == "/events":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            for i in range(3):
                self.wfile.write(b"data: tick %d\n\n" % i)
                self.wfile.flush()
                time.sleep(0.1)
            self.close_connection = True
            return
        self.send_json(404, {"error": "no such route"})


class Server(ThreadingHTTPServer):
    # The standard library listens with a backlog of 5: a burst of new connections from a
    # proxy's pool would overflow it, and a dropped SYN waits a second for its retry.
    request_queue_size = 128


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    server = Server(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("upstream listening on 127.0.0.1:%d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
