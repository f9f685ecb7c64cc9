#!/usr/bin/env python3
"""Big messages and memory: wasmtp's peak RSS while it receives, checks and delivers large
messages (tests/bench/run.sh big). Three cells, each against the RSS of the idle server:

  receive   N sessions at once, each sending one M MiB message in 64 KiB writes, the three
            default plugins loaded, relayed to smtp-sink: peak RSS, every message accepted
            and delivered once (the sink's count).
  maildir   one 25 MiB message through the three default plugins to a Maildir: peak RSS
            above idle, the file's size.
  deliver   64 messages of 25 MiB queued while the next hop is down, then delivered at once
            (wasmtp queue flush): peak RSS above idle while they go out.

Peak RSS is VmHWM, reset (clear_refs) before each cell. Needs root (clear_refs of another
user's process is allowed to root only) and smtp-sink (Postfix).
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from procs import free_port, status_kib, wait_greeting
from servers import DEFAULT_PLUGINS, Sink

BLOCK = 64 * 1024


def log(msg):
    """The report: plain lines on stdout (procs.log is for progress, on stderr)."""
    print(msg, flush=True)


class Wasmtp:
    def __init__(self, work, binary, hop_port):
        self.dir = os.path.join(work, "wasmtp")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.port = free_port()
        self.config = os.path.join(self.dir, "wasmtp.toml")
        with open(self.config, "w") as f:
            f.write(f"""# written by tests/bench/big.py
hostname = "wasmtp.bench.test"

[authentication]
verify = false

[[listen]]
address = "127.0.0.1:{self.port}"
mode = "mx"

[limits]
connections = 1000
connections_per_ip = 1000
message_size = "25MiB"

[spool]
path = "spool"

[accept]
domains = ["dest.test", "box.test"]

[[route]]
domain = "box.test"
to = "maildir:maildir"

[[route]]
domain = "*"
to = "smtp:127.0.0.1:{hop_port}"
tls = "none"

[delivery]
concurrency = 64
destination_concurrency = 64
retry = ["1h"]

{DEFAULT_PLUGINS}""")
        self.binary = binary
        self.proc = subprocess.Popen([binary, "serve", "--config", self.config], cwd=self.dir,
                                     env=dict(os.environ, WASMTP_LOG="warn"),
                                     stdin=subprocess.DEVNULL,
                                     stdout=open(os.path.join(self.dir, "wasmtp.log"), "ab"),
                                     stderr=subprocess.STDOUT)
        wait_greeting(self.port, 120)

    def rss_kib(self):
        return status_kib(self.proc.pid, "VmRSS")

    def reset_peak(self):
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")

    def peak_kib(self):
        return status_kib(self.proc.pid, "VmHWM")

    def queue(self, *args):
        return subprocess.run([self.binary, "queue", *args, "--config", self.config],
                              cwd=self.dir, capture_output=True, text=True, timeout=120)

    def queued(self):
        return len([l for l in self.queue("list").stdout.splitlines() if l.strip()])

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def body_block():
    """64 KiB of message lines (none starts with a dot)."""
    line = b"x" * 76 + b"\r\n"
    return (line * (BLOCK // len(line) + 1))[:BLOCK - 2] + b"\r\n"


async def reply(reader):
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return line.decode(errors="replace").strip()


async def send_one(port, rcpt, size, results):
    """One session, one message of about `size` octets (its header and a body of 64 KiB
    writes, the whole within `size`: a 25 MiB message fits the default message_size)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reply(reader)
        for cmd, want in ((b"EHLO load.bench.test", "250"),
                          (b"MAIL FROM:<load@src.bench.test>", "250"),
                          (f"RCPT TO:<{rcpt}>".encode(), "250"), (b"DATA", "354")):
            writer.write(cmd + b"\r\n")
            got = await reply(reader)
            if not got.startswith(want):
                results.append(got)
                return
        writer.write(b"Subject: big\r\nFrom: <load@src.bench.test>\r\n\r\n")
        block = body_block()
        for _ in range(max(1, (size - 1024) // BLOCK)):
            writer.write(block)
            await writer.drain()
        writer.write(b".\r\n")
        results.append(await reply(reader))
        writer.write(b"QUIT\r\n")
        await writer.drain()
        writer.close()
    except (OSError, ConnectionError) as e:
        results.append(f"error: {e}")


async def send_many(port, rcpt, size, count):
    results = []
    await asyncio.gather(*(send_one(port, rcpt, size, results) for _ in range(count)))
    return results


def mib(kib):
    return f"{kib / 1024:.0f} MiB"


def fresh(work, binary, hop, sink):
    """A new server, warmed (the plugins compiled and instantiated once), and its idle RSS."""
    server = Wasmtp(work, binary, hop)
    base = sink.count()
    asyncio.run(send_many(server.port, "u@dest.test", 1024, 2))
    sink.wait_for(base + 2, 60)
    time.sleep(1)
    return server, server.rss_kib()


def receive(args, binary, sink):
    """N sessions x M MiB at once."""
    server, idle = fresh(args.work, binary, sink.port, sink)
    try:
        base = sink.count()
        server.reset_peak()
        started = time.monotonic()
        replies = asyncio.run(send_many(server.port, "u@dest.test", args.size_mib << 20,
                                        args.sessions))
        took = time.monotonic() - started
        peak = server.peak_kib()
        accepted = sum(1 for r in replies if r.startswith("250"))
        arrived = sink.wait_for(base + args.sessions, 600)[1] - base
        time.sleep(3)
        twice = sink.count() - base - arrived
    finally:
        server.stop()
    log(f"  receive: {args.sessions} x {args.size_mib} MiB at once in {took:.1f} s: peak RSS "
        f"{mib(peak)} (idle {mib(idle)}), accepted {accepted}, delivered {arrived}"
        f" (+{twice} twice)")
    bad = [r for r in replies if not r.startswith("250")]
    if bad:
        log(f"  not accepted: {bad[:3]}")
    return dict(sessions=args.sessions, size_mib=args.size_mib, idle_kib=idle, peak_kib=peak,
                accepted=accepted, delivered=arrived, twice=twice, seconds=round(took, 1))


def maildir(args, binary, sink):
    """One 25 MiB message to a Maildir."""
    server, idle = fresh(args.work, binary, sink.port, sink)
    try:
        server.reset_peak()
        replies = asyncio.run(send_many(server.port, "one@box.test", 25 << 20, 1))
        deadline = time.monotonic() + 120
        box = os.path.join(server.dir, "maildir", "one", "new")
        while time.monotonic() < deadline and not (os.path.isdir(box) and os.listdir(box)):
            time.sleep(0.1)
        time.sleep(0.5)
        peak = server.peak_kib()
        files = os.listdir(box) if os.path.isdir(box) else []
        size = os.path.getsize(os.path.join(box, files[0])) if files else 0
    finally:
        server.stop()
    log(f"  maildir: one 25 MiB message: {replies[0]}; peak RSS {mib(peak)}, "
        f"{(peak - idle) / 1024:.1f} MiB above idle ({mib(idle)}); file {size} octets")
    return dict(idle_kib=idle, peak_kib=peak, file=size)


def deliver(args, binary, sink):
    """N x 25 MiB queued while the next hop is down, then delivered at once."""
    server, _ = fresh(args.work, binary, sink.port, sink)
    try:
        sink.stop()
        replies = asyncio.run(send_many(server.port, "u@dest.test", 25 << 20,
                                        args.deliveries))
        accepted = sum(1 for r in replies if r.startswith("250"))
        time.sleep(3)
        idle = server.rss_kib()
        sink = Sink(args.work, sink.port)
        server.reset_peak()
        started = time.monotonic()
        server.queue("flush")
        arrived = sink.wait_for(accepted, 900)[1]
        took = time.monotonic() - started
        peak = server.peak_kib()
    finally:
        server.stop()
    log(f"  deliver: {accepted} x 25 MiB at once in {took:.1f} s: peak RSS {mib(peak)}, "
        f"{mib(peak - idle)} above the RSS before ({mib(idle)}), delivered {arrived}")
    return sink, dict(count=accepted, idle_kib=idle, peak_kib=peak, delivered=arrived,
                      seconds=round(took, 1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--wasmtp", required=True)
    p.add_argument("--wasmtp-base", help="another build to measure the same way")
    p.add_argument("--work", required=True)
    p.add_argument("--sessions", type=int, default=100)
    p.add_argument("--size-mib", type=int, default=20)
    p.add_argument("--deliveries", type=int, default=64)
    p.add_argument("--json")
    args = p.parse_args()
    results = {}
    sink = Sink(args.work, free_port())
    try:
        for name, binary in (("wasmtp", args.wasmtp), ("wasmtp-base", args.wasmtp_base)):
            if not binary:
                continue
            log(f"{name} ({binary}), each cell on a fresh server:")
            r = results[name] = {}
            r["receive"] = receive(args, binary, sink)
            r["maildir"] = maildir(args, binary, sink)
            sink, r["deliver"] = deliver(args, binary, sink)
    finally:
        sink.stop()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
