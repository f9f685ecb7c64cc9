#!/usr/bin/env python3
"""SMTP clients for tests/bench (standard library only).

  probe  SESSIONS sessions, each sending one message per connection (like smtp-source),
         back to back until SIGTERM/SIGINT or --max-seconds; records per message the
         transaction latency (MAIL FROM sent -> 250 after the final dot) and the session
         latency (connect() started -> 250 after the final dot). Prints one JSON object.
  idle   opens COUNT connections, reads the greeting, sends EHLO, reads the reply on each,
         prints "READY <n>" and holds them until stdin is closed or SIGTERM (or --hold-seconds),
         then sends QUIT on each and closes. Prints one JSON object at the end.

Both only talk to loopback addresses.
"""

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import sys
import time


def loopback(host):
    if not ipaddress.ip_address(host).is_loopback:
        sys.exit(f"refusing non-loopback target {host}")


async def reply(reader):
    """Reads one (possibly multi-line) SMTP reply; returns its code."""
    return (await reply_line(reader))[0]


async def reply_line(reader):
    """Reads one (possibly multi-line) SMTP reply; returns (code, last line)."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed by server")
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3]), line.decode(errors="replace").strip()


def message(size, seq, mail_from, rcpt_to):
    """Headers like smtp-source's, then `size` bytes of payload in 80-byte lines."""
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000 (UTC)", time.gmtime())
    head = (
        f"From: <{mail_from}>\r\nTo: <{rcpt_to}>\r\nDate: {date}\r\n"
        f"Message-Id: <probe.{os.getpid()}.{seq}@bench.test>\r\n\r\n"
    ).encode()
    line = b"X" * 78 + b"\r\n"
    body = line * (size // 80)
    rest = size - len(body)
    if rest >= 2:
        body += b"X" * (rest - 2) + b"\r\n"
    return head + body + b".\r\n"


async def probe(args):
    loopback(args.host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    deadline = time.monotonic() + args.max_seconds
    txn, sess = [], []
    errors = []
    seq = 0

    refused, refusal_samples = [], []

    def refuse(stage, code, line):
        refused.append(code)
        if len(refusal_samples) < 3:
            refusal_samples.append(f"{stage}: {line}")

    async def one():
        nonlocal seq
        seq += 1
        data = message(args.size, seq, args.mail_from, args.rcpt_to)
        t0 = time.monotonic()
        reader, writer = await asyncio.open_connection(args.host, args.port)

        async def steps(*exchanges):
            """Sends each command (None: only read, the greeting) and reads its reply;
            False (the refusal counted) at the first unexpected code."""
            for stage, command, want in exchanges:
                if command is not None:
                    writer.write(command)
                    await writer.drain()
                code, line = await reply_line(reader)
                if code != want:
                    refuse(stage, code, line)
                    return False
            return True

        try:
            if not await steps(("greeting", None, 220),
                               ("HELO", f"HELO {args.helo}\r\n".encode(), 250)):
                return
            t1 = time.monotonic()
            if not await steps(("MAIL", f"MAIL FROM:<{args.mail_from}>\r\n".encode(), 250),
                               ("RCPT", f"RCPT TO:<{args.rcpt_to}>\r\n".encode(), 250),
                               ("DATA", b"DATA\r\n", 354),
                               ("end of data", data, 250)):
                return
            t2 = time.monotonic()
            txn.append(t2 - t1)
            sess.append(t2 - t0)
        finally:
            try:
                writer.write(b"QUIT\r\n")
                await asyncio.wait_for(reply(reader), 5)
            except Exception:
                pass
            writer.close()
            try:
                await writer.wait_closed()
            except Exception:
                pass

    async def worker():
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(one(), args.timeout)
            except Exception as e:  # counted, not retried: every failure is reported
                errors.append(f"{type(e).__name__}: {e}")
                if len(errors) > 100:
                    stop.set()
                await asyncio.sleep(0.1)

    await asyncio.gather(*(worker() for _ in range(args.sessions)))
    print(json.dumps({"sent": len(txn), "refused": len(refused),
                      "refusal_samples": refusal_samples, "errors": len(errors),
                      "error_samples": errors[:5], "txn": txn, "sess": sess}))


async def idle(args):
    loopback(args.host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    conns = []
    errors = []
    gate = asyncio.Semaphore(args.parallel)

    async def open_one(i):
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(args.host, args.port), args.timeout)
                if await asyncio.wait_for(reply(reader), args.timeout) != 220:
                    raise RuntimeError("greeting not 220")
                writer.write(f"EHLO idle{i}.bench.test\r\n".encode())
                if await asyncio.wait_for(reply(reader), args.timeout) != 250:
                    raise RuntimeError("EHLO refused")
                conns.append((reader, writer))
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")

    t0 = time.monotonic()
    await asyncio.gather(*(open_one(i) for i in range(args.count)))
    opened = time.monotonic() - t0
    print(f"READY {len(conns)} {len(errors)} {opened:.2f}", flush=True)

    # Hold until told (stdin closed, SIGTERM) or the deadline; check the sessions stay open.
    async def stdin_closed():
        r = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(r), sys.stdin)
        await r.read()
        stop.set()
    watcher = asyncio.ensure_future(stdin_closed())
    try:
        await asyncio.wait_for(stop.wait(), args.hold_seconds)
    except asyncio.TimeoutError:
        pass
    watcher.cancel()
    closed_early = sum(1 for r, _ in conns if r.at_eof())
    for _, w in conns:
        try:
            w.write(b"QUIT\r\n")
        except Exception:
            pass
    await asyncio.sleep(0.5)
    for _, w in conns:
        w.close()
    print(json.dumps({"opened": len(conns), "errors": len(errors), "error_samples": errors[:5],
                      "open_seconds": opened, "closed_early": closed_early}), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    for name in ("probe", "idle"):
        s = sub.add_parser(name)
        s.add_argument("--host", default="127.0.0.1")
        s.add_argument("--port", type=int, required=True)
        s.add_argument("--timeout", type=float, default=60)
    s = sub.choices["probe"]
    s.add_argument("--sessions", type=int, default=5)
    s.add_argument("--size", type=int, default=1024)
    s.add_argument("--max-seconds", type=float, default=600)
    s.add_argument("--helo", default="probe.bench.test")
    s.add_argument("--mail-from", default="from@bench.test")
    s.add_argument("--rcpt-to", default="to@dest.test")
    s = sub.choices["idle"]
    s.add_argument("--count", type=int, default=10000)
    s.add_argument("--parallel", type=int, default=200)
    s.add_argument("--hold-seconds", type=float, default=120)
    args = p.parse_args()
    asyncio.run(probe(args) if args.mode == "probe" else idle(args))


if __name__ == "__main__":
    main()
