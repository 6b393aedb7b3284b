#!/usr/bin/env python3
"""A tiny static HTTP/1.1 origin (keep-alive, Content-Length) for `bench/run --smoke`.

The full benchmark uses nginx; this one only has to answer correctly. Binds 127.0.0.1:PORT
(0 picks a free port) and prints `listening PORT` once ready.
"""

import http.server
import sys

BODY = (b"<!DOCTYPE html>\n<html><head><title>bench</title></head><body>"
        + b"x" * 540 + b"</body></html>\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    srv = Server(("127.0.0.1", port), Handler)
    print(f"listening {srv.server_address[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
