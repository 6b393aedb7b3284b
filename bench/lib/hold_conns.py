#!/usr/bin/env python3
"""Opens COUNT idle visitor connections to HOST:PORT and holds them.

Each connection sends one keep-alive HTTP request (with `Host: VHOST`) and reads the whole
response, so it is established end to end (visitor -> entrypoint -> tunnel -> origin) and then
sits idle. When every connection is answered or failed, or after the deadline, one JSON line
is printed: {"established": N, "failed": N, "statuses": {...}, "seconds": S}.

Then it reads commands on stdin: `check` prints {"alive": N} (connections not closed by the
far end); end of input closes everything and exits.

usage: hold_conns.py HOST PORT COUNT VHOST [CONCURRENCY] [DEADLINE_SECONDS]
"""

import errno
import json
import selectors
import socket
import sys
import time


def main():
    host, port, count, vhost = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    concurrency = int(sys.argv[5]) if len(sys.argv) > 5 else 100
    deadline = time.monotonic() + (float(sys.argv[6]) if len(sys.argv) > 6 else 60.0)
    request = f"GET / HTTP/1.1\r\nHost: {vhost}\r\nUser-Agent: hold_conns\r\n\r\n".encode()

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
        sel.register(s, selectors.EVENT_WRITE, {"buf": b"", "sent": False})
        if err not in (0, errno.EINPROGRESS):
            fail(s, f"connect:{errno.errorcode.get(err, err)}")
            return

    while (started < count or inflight > 0) and time.monotonic() < deadline:
        while started < count and inflight < concurrency:
            launch()
        for key, _ in sel.select(timeout=0.2):
            s, st = key.fileobj, key.data
            if not st["sent"]:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(s, f"connect:{errno.errorcode.get(err, err)}")
                    continue
                try:
                    s.sendall(request)
                except OSError as e:
                    fail(s, f"send:{e.__class__.__name__}")
                    continue
                st["sent"] = True
                sel.modify(s, selectors.EVENT_READ, st)
                continue
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
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
                    if s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                        alive += 1  # unexpected data, but still open
                except BlockingIOError:
                    alive += 1
                except OSError:
                    pass
            print(json.dumps({"alive": alive}), flush=True)
    for s in held:
        s.close()


if __name__ == "__main__":
    main()
