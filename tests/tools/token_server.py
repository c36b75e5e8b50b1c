"""A token endpoint on 127.0.0.1 for the scripts outside the Rust tests (tests/bench/*.sh,
tests/static-dns.sh): every POST gets a 200 token reply, the request itself is not looked at.

As a program it serves until killed and says its port on stdout, or in --port-file:

    python3 tests/tools/token_server.py [--access T] [--refresh T] [--scope S]
                                        [--tls CERT KEY] [--port-file FILE]

--access and --refresh are formats where {n} is the number of the reply (1, 2, ...): the
default hands out a new pair each time, as a rotating server does. As a module, TokenServer
runs it on a thread of the caller, which can then set `delay` and read `served` as it goes.
"""
import argparse
import http.server
import json
import os
import ssl
import sys
import threading
import time


class TokenServer:
    def __init__(self, access="bench-at-{n}", refresh="bench-rt-{n}", scope=None, tls=None,
                 one_write=False):
        self.access, self.refresh, self.scope = access, refresh, scope
        # Seconds each reply waits before it is sent; the caller may change it at any time.
        self.delay = 0.0
        self.served = 0
        lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            if one_write:
                # Keep-alive and one write per reply, sent at once: the server's own latency
                # must not hide the client's.
                protocol_version = "HTTP/1.1"
                disable_nagle_algorithm = True
                wbufsize = 1 << 16

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if owner.delay:
                    time.sleep(owner.delay)
                with lock:
                    owner.served += 1
                    n = owner.served
                reply = {"access_token": owner.access.format(n=n), "token_type": "Bearer",
                         "expires_in": 3600, "refresh_token": owner.refresh.format(n=n)}
                if owner.scope is not None:
                    reply["scope"] = owner.scope
                body = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}/token"

    def start(self):
        """Serve on a daemon thread: it ends with the caller."""
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def serve_forever(self):
        self.httpd.serve_forever()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--access", default="bench-at-{n}", help="access token; {n}: reply number")
    p.add_argument("--refresh", default="bench-rt-{n}", help="refresh token; {n}: reply number")
    p.add_argument("--scope", help="a scope field in every reply (none by default)")
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve HTTPS with these PEMs")
    p.add_argument("--port-file", help="write the port here instead of to stdout")
    a = p.parse_args()
    server = TokenServer(a.access, a.refresh, a.scope, a.tls)
    if a.port_file:
        # Whole or not at all: the scripts wait for a non-empty file and read it at once.
        with open(a.port_file + ".tmp", "w") as f:
            f.write(str(server.port))
        os.rename(a.port_file + ".tmp", a.port_file)
    else:
        print(server.port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
