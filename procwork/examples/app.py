"""A plain Python HTTP server, ready for procwork (standard library only).

    procwork run -w 2 --listen tcp://127.0.0.1:3001 -- python3 app.py

- The socket: descriptor 3 when LISTEN_FDS is set for this process
  (LISTEN_PID), otherwise $PORT.
- Readiness: READY=1 on NOTIFY_SOCKET once it serves.
- Draining on SIGTERM: stop accepting (procwork keeps the shared socket
  open), answer each request still coming on a kept-alive connection with
  `Connection: close`, and exit when every connection is done; a connection
  idle for the whole grace (the handler's timeout) is closed.
- APP_NEVER_READY=<file>: while that file exists, the app never says
  READY=1 (a broken release, for the tests). APP_CHILD=1: it also starts a
  child that ignores SIGTERM (for the tests of the process group).
  APP_WATCHDOG_ONCE=1: it feeds the watchdog once, then never (a hang).
"""
import os
import signal
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GRACE = float(os.environ.get("DRAIN_GRACE_S", "5"))
draining = threading.Event()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 64 * 1024  # one write per response (flushed after each)
    disable_nagle_algorithm = True
    timeout = GRACE  # an idle kept-alive connection is closed after this

    def do_GET(self):
        body = f"hello from pid {os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if draining.is_set():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def notify(message):
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), addr)


def main():
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and int(os.environ.get("LISTEN_FDS", "0")) >= 1:
        sock = socket.socket(fileno=3)
        server = ThreadingHTTPServer(sock.getsockname(), Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
    else:
        server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "3001"))), Handler)
    server.daemon_threads = False
    server.block_on_close = True
    if os.environ.get("APP_CHILD") == "1":
        subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 600"])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # CPython runs signal handlers in the main thread only, and only once
    # that thread runs again: keep SIGTERM away from the serving threads
    # (they inherit this mask), so the kernel delivers it to the main one.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    serving.start()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
    never = os.environ.get("APP_NEVER_READY")
    if not (never and os.path.exists(never)):
        notify("READY=1\nSTATUS=serving")
    if os.environ.get("APP_WATCHDOG_ONCE") == "1":
        notify("WATCHDOG=1")
    while not stop.wait(0.5):
        pass
    draining.set()
    server.shutdown()       # stop accepting
    server.socket.close()   # procwork keeps the shared socket open
    server.server_close()   # wait for the connections still open
    sys.exit(0)


if __name__ == "__main__":
    main()
