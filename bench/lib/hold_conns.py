#!/usr/bin/env python3
"""Opens COUNT idle visitor connections to HOST:PORT and holds them.

Each connection sends one keep-alive HTTP request (with `Host: VHOST`) and reads the whole
response, so it is established end to end (visitor -> entrypoint -> tunnel -> origin) and then
sits idle. When every connection is answered or failed, or after the deadline, one JSON line
is printed: {"established": N, "failed": N, "statuses": {...}, "seconds": S}.

Then it reads commands on stdin: `check` prints {"alive": N} (connections not closed by the
far end); end of input closes everything and exits.

With --tls, each connection first completes a TLS handshake with VHOST as its SNI (no ALPN, so
HTTP/1.1; the certificate is not checked) and the request goes over TLS: an idle HTTPS
visitor. The TLS versions, suites and groups offered are OpenSSL's, as set by OPENSSL_CONF.

usage: hold_conns.py [--tls] HOST PORT COUNT VHOST [CONCURRENCY] [DEADLINE_SECONDS]
"""

import errno
import json
import selectors
import socket
import ssl
import sys
import time


def main():
    args = [a for a in sys.argv[1:] if a != "--tls"]
    tls = len(args) < len(sys.argv) - 1
    host, port, count, vhost = args[0], int(args[1]), int(args[2]), args[3]
    concurrency = int(args[4]) if len(args) > 4 else 100
    deadline = time.monotonic() + (float(args[5]) if len(args) > 5 else 60.0)
    request = f"GET / HTTP/1.1\r\nHost: {vhost}\r\nUser-Agent: hold_conns\r\n\r\n".encode()
    ctx = None
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE

    sel = selectors.DefaultSelector()
    held, failed, statuses = [], 0, {}
    started, inflight = 0, 0
    t0 = time.monotonic()

    def fail(sock, why):
        nonlocal failed, inflight
        failed += 1
        inflight -= 1
        statuses[why] = statuses.get(why, 0) + 1
        try:
            sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def launch():
        nonlocal started, inflight
        started += 1
        inflight += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex((host, port))
        sel.register(s, selectors.EVENT_WRITE, {"buf": b"", "phase": "connect"})
        if err not in (0, errno.EINPROGRESS):
            fail(s, f"connect:{errno.errorcode.get(err, err)}")
            return

    while (started < count or inflight > 0) and time.monotonic() < deadline:
        while started < count and inflight < concurrency:
            launch()
        for key, _ in sel.select(timeout=0.2):
            s, st = key.fileobj, key.data
            if st["phase"] == "connect":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(s, f"connect:{errno.errorcode.get(err, err)}")
                    continue
                if ctx is None:
                    st["phase"] = "send"
                else:
                    # The TLS socket takes over the descriptor: registered anew.
                    sel.unregister(s)
                    s = ctx.wrap_socket(s, server_hostname=vhost, do_handshake_on_connect=False)
                    sel.register(s, selectors.EVENT_WRITE, st)
                    st["phase"] = "handshake"
            if st["phase"] == "handshake":
                try:
                    s.do_handshake()
                except ssl.SSLWantReadError:
                    sel.modify(s, selectors.EVENT_READ, st)
                    continue
                except ssl.SSLWantWriteError:
                    sel.modify(s, selectors.EVENT_WRITE, st)
                    continue
                except (ssl.SSLError, OSError) as e:
                    fail(s, f"tls:{getattr(e, 'reason', None) or e.__class__.__name__}")
                    continue
                st["phase"] = "send"
            if st["phase"] == "send":
                try:
                    s.sendall(request)
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    sel.modify(s, selectors.EVENT_WRITE, st)  # nothing written yet: again when writable
                    continue
                except OSError as e:
                    fail(s, f"send:{e.__class__.__name__}")
                    continue
                st["phase"] = "recv"
                sel.modify(s, selectors.EVENT_READ, st)
                continue
            try:
                chunk = s.recv(65536)
                while ctx is not None and chunk and s.pending():
                    chunk += s.recv(65536)  # records already taken off the socket
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue  # e.g. a TLS 1.3 session ticket, and no response byte yet
            except OSError as e:
                fail(s, f"recv:{e.__class__.__name__}")
                continue
            if not chunk:
                fail(s, "closed")
                continue
            st["buf"] += chunk
            head, sep, body = st["buf"].partition(b"\r\n\r\n")
            if not sep:
                continue
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ")
            status = parts[1].decode() if len(parts) > 1 else "?"
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if len(body) < length:
                continue
            if status != "200":
                fail(s, f"http:{status}")
                continue
            sel.unregister(s)
            held.append(s)
            inflight -= 1
            statuses["200"] = statuses.get("200", 0) + 1

    for key in list(sel.get_map().values()):
        fail(key.fileobj, "deadline")
    failed += count - started
    print(json.dumps({"established": len(held), "failed": failed, "statuses": statuses,
                      "seconds": round(time.monotonic() - t0, 3)}), flush=True)

    for line in sys.stdin:
        if line.strip() == "check":
            alive = 0
            for s in held:
                try:
                    if ctx is not None:
                        # Read through TLS (a close_notify is an empty read; a late ticket
                        # is taken in, and then there is nothing to read).
                        if s.recv(1):
                            alive += 1  # unexpected data, but still open
                    elif s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                        alive += 1  # unexpected data, but still open
                except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    alive += 1
                except OSError:
                    pass
            print(json.dumps({"alive": alive}), flush=True)
    for s in held:
        s.close()


if __name__ == "__main__":
    main()
