#!/usr/bin/env python3
"""wasmtp vs Postfix on one machine: the orchestrator behind tests/bench/run.sh.

Started by run.sh (which installs Postfix, builds wasmtp and raises limits); see README.md.

  bench.py throughput --wasmtp BIN --work DIR [--quick] [--runs N] [--json FILE] [--verify]
  bench.py idle       --wasmtp BIN --work DIR [--count 10000] [--postfix-count 1000]

Everything listens on 127.0.0.1 on free ports; every wait is bounded; every process started
here is stopped in `finally` (run.sh's trap is the second line of defence).
"""

import argparse
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import time

from procs import Perf, Sampler, log, our_cpu, percentile, spawn, stop_all, wait_quiet
from rspamd import BenchRspamd
from servers import MAIL_FROM, BenchDns, Postfix, Sink, Wasmtp

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "bench_client.py")
RCPT_TO = "to@dest.test"


SESSIONS_PER_SOURCE = 5


class Load:
    """smtp-source processes of at most SESSIONS_PER_SOURCE sessions each. smtp-source opens
    its connections one at a time (a connect queue): one SYN lost to a full listen queue would
    stall all its sessions for the 1 s SYN retransmission, where independent clients would only
    stall one. Several small processes keep that effect close to per client, as on the
    Internet (one process per session would cost as much CPU as the server under test).
    -A: a refused message is counted (its warning line) and the run goes on."""

    def __init__(self, port, sessions, messages, size):
        k = max(1, -(-sessions // SESSIONS_PER_SOURCE))
        self.procs = []
        for i in range(k):
            s = sessions // k + (1 if i < sessions % k else 0)
            m = messages // k + (1 if i < messages % k else 0)
            if s == 0 or m == 0:
                continue
            cmd = ["smtp-source", "-A", "-C", "5", "-s", str(s), "-m", str(m), "-l", str(size),
                   "-f", MAIL_FROM, "-t", RCPT_TO, "-M", "load.bench.test",
                   f"127.0.0.1:{port}"]
            self.procs.append(spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))

    def finish(self, timeout, what):
        """Waits for every process; returns (refused, sample refusal lines)."""
        deadline = time.monotonic() + timeout
        refused, samples = 0, []
        self.connect_retries = 0
        try:
            outs = [finish(p, max(1, deadline - time.monotonic()), what) for p in self.procs]
        finally:
            for p in self.procs:
                if p.poll() is None:
                    p.kill()
        for out in outs:
            out = out.decode(errors="replace")
            for line in out.splitlines():
                if "rejected" in line:
                    refused += 1
                    if len(samples) < 3:
                        samples.append(line.strip())
                elif "warning: connect" in line:
                    self.connect_retries += 1
                elif line.strip():
                    raise RuntimeError(f"{what}: {line.strip()}")
        return refused, samples


def finish(p, timeout, what):
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        raise RuntimeError(f"{what} did not finish within {timeout}s")
    if p.returncode != 0:
        raise RuntimeError(f"{what} exited with {p.returncode}: {out.decode(errors='replace')[-500:]}")
    return out


def stop_both(server, sink, tag):
    """Stops the server (a failure to stop is logged, not raised) and the sink."""
    try:
        server.stop()
    except Exception as e:
        log(f"{tag}: stopping: {e}")
    sink.stop()


def one_run(server, work, size, sessions, messages, rep, timeout, quiet_wait):
    """One measured run on a freshly started server. Returns a dict of figures."""
    tag = f"{server.name}-{size}-{sessions}-{rep}"
    idle_before = wait_quiet(quiet_wait)
    perf = Perf(work, tag)
    sink = Sink(work)
    res = {"server": server.name, "size": size, "sessions": sessions, "rep": rep,
           "idle_before": idle_before}
    sampler = None
    try:
        server.start(sink.port, perf, sessions)
        # Warm-up: every session once, so Postfix has spawned its processes and wasmtp has
        # loaded its plugins; not measured.
        warm = max(sessions, 200)
        warm_refused, _ = Load(server.port, sessions, warm, size).finish(timeout, "warm-up")
        t, n = sink.wait_for(sink.base + warm - warm_refused, timeout)
        if t is None:
            raise RuntimeError(f"warm-up: sink has {n - sink.base} of {warm - warm_refused}")
        base = n
        probe_sessions = max(3, min(10, sessions // 20))
        load_sessions = sessions - probe_sessions
        res.update(warmup=warm, warmup_refused=warm_refused, probe_sessions=probe_sessions, load_sessions=load_sessions,
                   loadavg=os.getloadavg()[0])
        server.reset_peak()
        cpu0 = our_cpu(sink)
        stat0 = open("/proc/stat").readline().split()[1:]
        sampler = Sampler(server.pids)
        sampler.sample()
        sampler.start()
        perf.enable()
        t0 = time.monotonic()
        probe = spawn([sys.executable, CLIENT, "probe", "--port", str(server.port),
                       "--sessions", str(probe_sessions), "--size", str(size),
                       "--max-seconds", str(timeout)],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        load = Load(server.port, load_sessions, messages, size)
        try:
            refused, refusal_samples = load.finish(timeout, "smtp-source")
        finally:
            probe.send_signal(signal.SIGTERM)
            pout, perr = probe.communicate(timeout=120)
        t_acc = time.monotonic()
        pr = json.loads(pout)
        if pr["errors"]:
            raise RuntimeError(f"probe: {pr['errors']} errors, e.g. {pr['error_samples']}")
        if not pr["txn"]:
            raise RuntimeError("the latency probe got no message through")
        refused += pr["refused"]
        refusal_samples += pr["refusal_samples"]
        total = messages + pr["sent"] + pr["refused"]
        accepted = total - refused
        t_dlv, n = sink.wait_for(base + accepted, timeout)
        perf.disable()
        stat1 = open("/proc/stat").readline().split()[1:]
        cpu1 = our_cpu(sink)
        ticks = [int(b) - int(a) for a, b in zip(stat0, stat1)]
        hz = os.sysconf("SC_CLK_TCK")
        busy_s = (sum(ticks) - ticks[3] - ticks[4]) / hz
        res["machine_busy"] = busy_s * hz / max(1, sum(ticks))
        res["clients_cpu_s"] = cpu1 - cpu0  # smtp-source, probe, sink, this script
        if t_dlv is None:
            raise RuntimeError(f"sink has {n - base} of {accepted} after {timeout}s")
        time.sleep(1.0)  # a duplicate would show up here
        extra = sink.count() - base - accepted
        sampler.stop()
        left = server.queue_left()
        hwm = server.hwm_kib()
        res.update(
            sent=total, accepted=accepted, refused=refused, refusal_samples=refusal_samples,
            probe_sent=pr["sent"], duplicates=extra, queue_left=left,
            accepted_s=t_acc - t0, delivered_s=t_dlv - t0,
            accepted_rate=accepted / (t_acc - t0), delivered_rate=accepted / (t_dlv - t0),
            txn_p50=percentile(pr["txn"], 0.50) * 1000, txn_p99=percentile(pr["txn"], 0.99) * 1000,
            sess_p50=percentile(pr["sess"], 0.50) * 1000, sess_p99=percentile(pr["sess"], 0.99) * 1000,
            latency_samples=len(pr["txn"]),
            peak_rss_mib=(hwm if hwm else sampler.peak_rss) / 1024,
            peak_pss_mib=sampler.peak_pss / 1024, peak_procs=sampler.peak_procs)
        if extra != 0:
            raise RuntimeError(f"sink received {extra} more messages than were sent")
        if left:
            raise RuntimeError(f"{left} messages still in the {server.name} queue")
    except Exception as e:
        res["error"] = str(e)
        log(f"{tag}: FAILED: {e}")
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        stop_both(server, sink, tag)
    c = perf.counts()
    if c and c["cpu_ms"] is not None and "clients_cpu_s" in res:
        # what neither the server nor the benchmark used: other users of the machine
        window = (res["delivered_s"] if "delivered_s" in res else 0) * os.cpu_count()
        other = res["machine_busy"] * window - res["clients_cpu_s"] - c["cpu_ms"] / 1000
        res["others_share"] = max(0.0, other / window) if window else None
    if c and "accepted" in res:
        res["fsync_per_msg"] = c["fsync"] / res["accepted"]
        res["cpu_ms_per_msg"] = c["cpu_ms"] / res["accepted"] if c["cpu_ms"] is not None else None
        res["fsync_total"] = c["fsync"]
    if "error" not in res:
        log(f"{tag}: {res['sent']} msgs, {res['refused']} refused, accepted {res['accepted_rate']:.0f}/s, "
            f"delivered {res['delivered_rate']:.0f}/s, txn p50 {res['txn_p50']:.1f} ms "
            f"p99 {res['txn_p99']:.1f} ms, RSS {res['peak_rss_mib']:.1f} MiB, "
            f"fsync/msg {res.get('fsync_per_msg', float('nan')):.2f}, "
            f"CPU {res.get('cpu_ms_per_msg') or float('nan'):.2f} ms/msg; machine "
            f"{res['machine_busy'] * 100:.0f}% busy during the run, others "
            f"{(res.get('others_share') or 0) * 100:.0f}% (before: "
            f"{(1 - idle_before) * 100:.0f}%)")
    return res


COLUMNS = [  # key, header, format
    ("sent", "msgs", "{:.0f}"),
    ("refused", "refused", "{:.0f}"),
    ("accepted_rate", "accepted msgs/s", "{:.0f}"),
    ("delivered_rate", "delivered msgs/s", "{:.0f}"),
    ("txn_p50", "txn p50 ms", "{:.1f}"),
    ("txn_p99", "txn p99 ms", "{:.1f}"),
    ("sess_p99", "conn→250 p99 ms", "{:.1f}"),
    ("peak_rss_mib", "peak RSS MiB", "{:.1f}"),
    ("peak_pss_mib", "peak PSS MiB", "{:.1f}"),
    ("fsync_per_msg", "fsyncs/msg", "{:.2f}"),
    ("cpu_ms_per_msg", "CPU ms/msg", "{:.2f}"),
]


def human(size):
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


def median_of(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None and "error" not in r]
    return statistics.median(vals) if vals else None


def table(results, sizes, sessions_list):
    head = ["size", "sessions", "server"] + [h for _, h, _ in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for size in sizes:
        for sessions in sessions_list:
            med = {}
            names = [n for n in ("wasmtp", "wasmtp-base", "wasmtp+auth", "wasmtp+rspamd",
                                 "wasmtp+rspamd-aq", "Postfix")
                     if any(r["server"] == n for r in results)]
            for name in names:
                runs = [r for r in results if r["server"] == name and r["size"] == size
                        and r["sessions"] == sessions]
                ok = [r for r in runs if "error" not in r]
                med[name] = {k: median_of(ok, k) for k, _, _ in COLUMNS}
                cells = [human(size), str(sessions),
                         f"{name} ({len(ok)}/{len(runs)} runs)" if len(ok) != len(runs) else name]
                for k, _, fmt in COLUMNS:
                    v = med[name][k]
                    cells.append(fmt.format(v) if v is not None else ("FAIL" if not ok else "n/a"))
                lines.append("| " + " | ".join(cells) + " |")
            pairs = [("wasmtp", "Postfix")]
            if "wasmtp+auth" in med:
                pairs.append(("wasmtp+auth", "wasmtp"))
            if "wasmtp-base" in med:
                pairs.append(("wasmtp", "wasmtp-base"))
            for with_rspamd in ("wasmtp+rspamd", "wasmtp+rspamd-aq"):
                if with_rspamd in med:
                    pairs.append((with_rspamd, "wasmtp"))
            for top, bottom in pairs:
                cells = [human(size), str(sessions), f"**{top}/{bottom}**"]
                for k, _, _ in COLUMNS:
                    a, b = med[top][k], med[bottom][k]
                    cells.append("" if k in ("sent", "refused") else
                                 f"{a / b:.2f}" if a is not None and b else "–")
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def throughput(args):
    if args.quick:
        sizes, sessions_list, runs = [1024, 10240, 102400], [50, 500], args.runs or 1
        messages = {1024: 3000, 10240: 2000, 102400: 1000}
    else:
        sizes, sessions_list, runs = [1024, 10240, 102400], [50, 500], args.runs or 3
        messages = {1024: 10000, 10240: 6000, 102400: 3000}
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    if args.sessions:
        sessions_list = [int(s) for s in args.sessions.split(",")]
    if args.messages:
        messages = {s: args.messages for s in sizes}
    results = []
    started = time.monotonic()
    dns = BenchDns() if args.verify else None
    rspamd = None
    if args.rspamd:
        rspamd = BenchRspamd(args.work)
        rspamd.start()
    for rep in range(1, runs + 1):
        for size in sizes:
            for sessions in sessions_list:
                order = [Wasmtp(args.work, args.wasmtp),
                         Postfix(args.work, smtpd_limit=args.postfix_smtpd)]
                if dns:
                    order.insert(1, Wasmtp(args.work, args.wasmtp, dns=dns))
                if rspamd:
                    order.insert(1, Wasmtp(args.work, args.wasmtp, rspamd=rspamd))
                    order.insert(2, Wasmtp(args.work, args.wasmtp, rspamd=rspamd,
                                           after_queue=True))
                if args.wasmtp_base:
                    order.insert(1, Wasmtp(args.work, args.wasmtp_base, name="wasmtp-base"))
                if rep % 2 == 0:  # alternate who goes first
                    order.reverse()
                for server in order:
                    results.append(one_run(server, args.work, size, sessions,
                                           messages.get(size, 1000), rep, args.timeout,
                                           args.quiet_wait))
                    if args.json:
                        with open(args.json, "w") as f:
                            json.dump(results, f, indent=1)
    elapsed = time.monotonic() - started
    if rspamd:
        rspamd.stop()
    errors = [r for r in results if "error" in r]
    busy = [r["machine_busy"] for r in results if "machine_busy" in r]
    others = [r["others_share"] for r in results if r.get("others_share") is not None]
    print()
    print(f"## Throughput ({'--quick, ' if args.quick else ''}median of {runs} run(s) per cell, "
          f"{elapsed / 60:.1f} min)")
    print()
    print("Load: smtp-source -A (one message per connection, HELO, no pipelining; processes of "
          f"{SESSIONS_PER_SOURCE} sessions) for all sessions but the latency probe's: "
          "bench_client.py probe, 5% of the sessions (3 to 10), sending the same kind of "
          "messages at the same time. Messages per run (smtp-source): "
          + ", ".join(f"{human(s)}: {messages.get(s, 1000)}" for s in sizes)
          + "; plus the probe's, plus an unmeasured warm-up of max(sessions, 200).")
    print()
    print(table(results, sizes, sessions_list))
    print()
    if dns:
        print(f"wasmtp+auth: sender verification on (SPF for HELO and MAIL FROM, with an include; "
              f"DMARC p=reject for the From domain; no DKIM signature, smtp-source cannot sign) "
              f"against a DNS server in this script ({dns.queries} queries answered); wasmtp: "
              f"verification off. DKIM's own cost: cargo bench --bench mailauth.")
        print()
    if rspamd:
        print("wasmtp+rspamd: bundled:rspamd asks a private Rspamd (Debian's, 2 normal "
              "workers, the stock rules, network modules off) of every message before the 250; "
              "wasmtp+rspamd-aq: the same plugin with mode = \"after-queue\" (the 250 comes "
              "first; the sink counts a message once it is scanned and delivered).")
        print()
    if busy:
        print(f"Whole machine CPU busy during the measured runs (this benchmark included): "
              f"{min(busy) * 100:.0f}% to {max(busy) * 100:.0f}% of {os.cpu_count()} CPUs.")
        if others:
            print(f"CPU used by neither the server nor the benchmark's own processes (other "
                  f"users of the machine, kernel threads): median {statistics.median(others) * 100:.0f}%, "
                  f"at most {max(others) * 100:.0f}% of the machine in a run.")
        print()
    print("accepted msgs/s: messages / (start → both generators done); delivered msgs/s: "
          "messages / (start → the sink has every one). txn: MAIL FROM sent → 250 after the "
          "final dot; conn→250: connect() → 250 after the final dot. Peak RSS: wasmtp's VmHWM "
          "(reset before the run); Postfix: the highest sum, sampled every second, of VmRSS over its "
          "processes (shared pages counted once per process). Peak PSS: sampled every second, "
          "summed (shared pages split). fsyncs and CPU: perf stat (fsync + fdatasync, "
          "task-clock) over every thread/process of the server, from the start of the run until "
          "the sink has every message, divided by messages. Each message was checked to reach "
          "the sink exactly once (count), and the queue to be empty.")
    if errors:
        print()
        print("Failed runs:")
        for r in errors:
            print(f"- {r['server']} {human(r['size'])} {r['sessions']} sessions run {r['rep']}: "
                  f"{r['error']}")
    return 1 if errors else 0


def idle_one(server, work, count, hold, timeout):
    sink = Sink(work)
    perf = Perf(work, f"idle-{server.name}", enabled=False)
    res = {"server": server.name, "count": count}
    client = None
    try:
        server.start(sink.port, perf)
        # one message through, so the plugins are loaded and compiled code is mapped
        Load(server.port, 1, 1, 1024).finish(60, "one message")
        sink.wait_for(sink.base + 1, 60)
        time.sleep(1)
        s = Sampler(server.pids)
        res["rss_before_kib"], res["pss_before_kib"], res["procs_before"] = s.sample()
        client = spawn([sys.executable, CLIENT, "idle", "--port", str(server.port),
                        "--count", str(count), "--hold-seconds", str(timeout)],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        r, _, _ = select.select([client.stdout], [], [], timeout)
        line = client.stdout.readline().decode() if r else ""
        if not line.startswith("READY"):
            raise RuntimeError(f"idle client not ready: {line!r} "
                               f"{client.stderr.read().decode()[-500:] if client.poll() is not None else ''}")
        _, opened, errs, secs = line.split()
        res.update(opened=int(opened), open_errors=int(errs), open_seconds=float(secs))
        time.sleep(2)
        samples = [s.sample() for _ in range(max(1, int(hold / 0.5))) if not time.sleep(0.5)]
        res["rss_held_kib"] = max(x[0] for x in samples)
        res["pss_held_kib"] = max(x[1] for x in samples)
        res["procs_held"] = max(x[2] for x in samples)
        if server.hwm_kib():
            res["hwm_kib"] = server.hwm_kib()
        out, err = client.communicate(timeout=120)  # closes stdin: the client lets go
        res["client"] = json.loads(out.decode().strip().splitlines()[-1])
        if res["client"]["closed_early"]:
            raise RuntimeError(f"{res['client']['closed_early']} sessions were closed by the "
                               "server while held")
    except Exception as e:
        res["error"] = str(e)
        log(f"idle {server.name}: FAILED: {e}")
    finally:
        if client is not None and client.poll() is None:
            client.kill()
        stop_both(server, sink, f"idle {server.name}")
    return res


def idle(args):
    wait_quiet(args.quiet_wait)
    results = [idle_one(Wasmtp(args.work, args.wasmtp, connections=args.count + 1000),
                        args.work, args.count, args.hold, args.timeout)]
    if args.postfix_count:
        results.append(idle_one(Postfix(args.work, process_limit=args.postfix_count + 100,
                                        smtpd_limit="default"),
                                args.work, args.postfix_count, args.hold, args.timeout))
    print()
    print("## Idle sessions (connected, EHLO answered, then held)")
    print()
    print("| server | sessions held | opened in s | RSS before MiB | RSS held MiB | "
          "RSS per session KiB | PSS held MiB | PSS per session KiB | processes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['server']} | FAIL: {r['error']} | | | | | | | |")
            continue
        n = r["opened"]
        print(f"| {r['server']} | {n} of {r['count']} | {r['open_seconds']:.1f} | "
              f"{r['rss_before_kib'] / 1024:.1f} | "
              f"{r['rss_held_kib'] / 1024:.1f} | "
              f"{(r['rss_held_kib'] - r['rss_before_kib']) / n:.1f} | "
              f"{r['pss_held_kib'] / 1024:.1f} | "
              f"{(r['pss_held_kib'] - r['pss_before_kib']) / n:.1f} | {r['procs_held']} |")
    print()
    print("RSS: VmRSS summed over the server's processes (for wasmtp one process; for Postfix "
          "the master and its children, shared pages counted in each), sampled every 0.5 s while "
          "held, highest sample; per session: (held - before) / sessions. Opened in: connect, "
          "greeting, EHLO for every session, 200 at a time. PSS: the same with "
          "shared pages divided among their users. Postfix runs one smtpd process per session, "
          "so its default_process_limit is raised to sessions + 100 for this mode only.")
    for r in results:
        if "hwm_kib" in r:
            print(f"\n{r['server']} VmHWM while held: {r['hwm_kib'] / 1024:.1f} MiB.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 1 if any("error" in r for r in results) else 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["throughput", "idle"])
    p.add_argument("--wasmtp", required=True)
    p.add_argument("--wasmtp-base", help="throughput: another wasmtp binary, run beside it "
                   "(wasmtp-base, e.g. the previous commit's)")
    p.add_argument("--work", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--runs", type=int)
    p.add_argument("--sizes", help="comma-separated bytes (default 1024,10240,102400)")
    p.add_argument("--sessions", help="comma-separated (default 50,500)")
    p.add_argument("--messages", type=int, help="smtp-source messages per run, every size")
    p.add_argument("--timeout", type=float, default=300, help="bound of each step, seconds")
    p.add_argument("--postfix-smtpd", default="sessions",
                   help="smtpd process limit: 'sessions' (max(100, sessions): every session "
                        "admitted, as wasmtp does), 'default' (100) or a number")
    p.add_argument("--count", type=int, default=10000, help="idle: wasmtp sessions")
    p.add_argument("--postfix-count", type=int, default=1000, help="idle: Postfix sessions (0: skip)")
    p.add_argument("--hold", type=float, default=5, help="idle: seconds to sample while held")
    p.add_argument("--json", help="also write the raw figures here")
    p.add_argument("--verify", action="store_true",
                   help="throughput: also run wasmtp with sender verification on (wasmtp+auth)")
    p.add_argument("--rspamd", action="store_true",
                   help="throughput: also run wasmtp with bundled:rspamd before and after the "
                        "queue against a private Rspamd (wasmtp+rspamd, wasmtp+rspamd-aq)")
    p.add_argument("--quiet-wait", type=float, default=300,
                   help="before each run, wait up to this many seconds for other load to stop")
    args = p.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(130))
    try:
        return throughput(args) if args.mode == "throughput" else idle(args)
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
