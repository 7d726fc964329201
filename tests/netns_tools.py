"""Small programs the namespace tests run *inside* a network namespace
(``ip netns exec <ns> python tests/netns_tools.py <command> ...``): the LAN identity's calls,
an HTTP server answering its name, an HTTP GET, UDP send/receive, and an ARP sampler.

Each command prints JSON on stdout: one object, or JSON lines for the long-running ones. Only the
standard library is imported at the top: the identity is imported by the command using it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import select
import socket
import struct
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

IP_TRANSPARENT = 19
ETH_P_ARP = 0x0806
_out_lock = threading.Lock()


def emit(value: dict[str, Any]) -> None:
    # "t": the monotonic clock, shared by every process of the machine (the test's too).
    with _out_lock:
        sys.stdout.write(json.dumps({**value, "t": time.monotonic()}) + "\n")
        sys.stdout.flush()


def identity_server(args: argparse.Namespace) -> int:
    """One JSON request per stdin line (op, address, interface, table, prefix, channel, nft),
    one JSON answer per stdout line, until EOF. A new ``LinuxLanIdentity`` per request, as a
    restarted agent would build: it must rely on nothing but what the system shows."""
    from tandem.agent.control.base import ControlError
    from tandem.agent.identity.linux import LinuxLanIdentity

    # One loop for every request: an expose leaves its announcement running in the
    # background, which an asyncio.run per request would cancel at its end.
    loop = asyncio.new_event_loop()
    for line in sys.stdin:
        request = json.loads(line)
        ident = LinuxLanIdentity(
            request["address"],
            request.get("prefix"),
            request["interface"],
            request["table"],
            channel_interface=request.get("channel"),
            nft=request.get("nft", "nft"),
        )
        call = {
            "expose": ident.expose,
            "hide": ident.hide,
            "status": ident.status,
            "reset": ident.reset_on_start,
        }[request["op"]]
        try:
            emit(loop.run_until_complete(call()).model_dump())
        except ControlError as exc:
            emit({"error": exc.message})
    return 0


class _NameHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = self.server.node_name.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per sampler request would drown the test's output


class _DualStackServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self) -> None:
        # One socket for IPv4 and IPv6: the public address may be either.
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def serve(args: argparse.Namespace) -> int:
    server = _DualStackServer(("::", args.port), _NameHandler)
    server.node_name = args.name  # type: ignore[attr-defined]
    emit({"serving": args.port})
    server.serve_forever()
    return 0


def get(args: argparse.Namespace) -> int:
    emit(_get(args.url, args.timeout))
    return 0


def _get(url: str, timeout: float) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return {"status": answer.status, "body": answer.read().decode()}
    except OSError as exc:
        return {"error": str(exc)}


def udp_send(args: argparse.Namespace) -> int:
    """Datagrams from ``--src``, which need not be configured here (IP_TRANSPARENT): what a
    hidden node would send if something still used the public address."""
    errors: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        s.bind((args.src, 0))
        for n in range(args.count):
            try:
                s.sendto(f"from {args.src} #{n}".encode(), (args.dst, args.port))
            except OSError as exc:
                errors.append(exc.strerror or str(exc))
    emit({"sent": args.count - len(errors), "errors": errors})
    return 0


def udp_recv(args: argparse.Namespace) -> int:
    """Receive until a datagram from ``--stop-from`` arrives (sent last: whatever was sent
    before it on the same path has arrived by then) or the timeout."""
    sources: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", args.port))
        emit({"ready": args.port})
        deadline = time.monotonic() + args.timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([s], [], [], left)[0]:
                break
            _, (source, _) = s.recvfrom(2048)
            sources.append(source)
            if source == args.stop_from:
                break
    emit({"sources": sources})
    return 0


def _arp_frame(mac: bytes, sip: str, target: str) -> bytes:
    eth = b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack(
        "!HHBBH6s4s6s4s",
        1,
        0x0800,
        6,
        4,
        1,  # request
        mac,
        socket.inet_aton(sip),
        b"\0" * 6,
        socket.inet_aton(target),
    )
    return eth + arp


def sample(args: argparse.Namespace) -> int:
    """ARP probes for ``--target`` every ``--interval`` s, each from a different unused sender
    IP of ``--sips``: a reply is addressed to its probe's sender IP, so replies from two nodes
    to one probe are told apart from replies to two successive probes. Optionally an HTTP GET
    loop. JSON lines: probe / reply / announce / http; ends at stdin EOF, ``--probes`` or
    ``--max-s``."""
    sips = args.sips.split(",")
    target = socket.inet_aton(args.target)
    stop = threading.Event()
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    sock.bind((args.iface, ETH_P_ARP))
    mac = sock.getsockname()[4]
    probe_of: dict[bytes, int] = {}

    def receive() -> None:
        while not stop.is_set():
            if not select.select([sock], [], [], 0.1)[0]:
                continue
            frame = sock.recv(2048)
            if len(frame) < 42 or frame[12:14] != b"\x08\x06":
                continue
            op, sha, spa, tpa = struct.unpack("!6xH6s4s6x4s", frame[14:42])
            sender = sha.hex(":")
            if spa == target and tpa == target:
                emit({"announce": sender, "op": op})
            elif op == 2 and spa == target and tpa in probe_of:
                emit({"reply": probe_of[tpa], "mac": sender})

    def http() -> None:
        while not stop.is_set():
            answer = _get(args.http, 1.0)
            emit({"http": answer.get("body")})
            stop.wait(args.interval)

    def stdin_eof() -> None:
        sys.stdin.read()
        stop.set()

    workers = [threading.Thread(target=receive, daemon=True)]
    if args.http:
        workers.append(threading.Thread(target=http, daemon=True))
    if args.probes == 0:
        workers.append(threading.Thread(target=stdin_eof, daemon=True))
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + args.max_s
    seq = 0
    while not stop.is_set() and time.monotonic() < deadline:
        if args.probes and seq >= args.probes:
            break
        sip = sips[seq % len(sips)]
        probe_of[socket.inet_aton(sip)] = seq
        sock.send(_arp_frame(mac, sip, args.target))
        emit({"probe": seq, "sip": sip})
        seq += 1
        stop.wait(args.interval)
    stop.wait(args.linger)  # late replies to the last probes
    stop.set()
    for worker in workers[:2]:
        worker.join(timeout=5)
    emit({"done": seq})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netns_tools")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("identity-server")
    p.set_defaults(run=identity_server)
    p = sub.add_parser("serve")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", required=True)
    p.set_defaults(run=serve)
    p = sub.add_parser("get")
    p.add_argument("url")
    p.add_argument("--timeout", type=float, default=2.0)
    p.set_defaults(run=get)
    p = sub.add_parser("udp-send")
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=1)
    p.set_defaults(run=udp_send)
    p = sub.add_parser("udp-recv")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--stop-from", required=True)
    p.add_argument("--timeout", type=float, default=20.0)
    p.set_defaults(run=udp_recv)
    p = sub.add_parser("sample")
    p.add_argument("--iface", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--sips", required=True, help="comma-separated unused sender IPs")
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--probes", type=int, default=0, help="0: until stdin closes")
    p.add_argument("--linger", type=float, default=0.3)
    p.add_argument("--http", default="")
    p.add_argument("--max-s", type=float, default=100.0)
    p.set_defaults(run=sample)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
