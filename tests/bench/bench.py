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
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "bench_client.py")
MAIL_FROM = "from@bench.test"
RCPT_TO = "to@dest.test"
PERF_EVENTS = "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync,task-clock"

STARTED = []  # every Popen, stopped at exit whatever happens


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def spawn(cmd, **kw):
    p = subprocess.Popen(cmd, **kw)
    STARTED.append(p)
    return p


def stop_all():
    for p in reversed(STARTED):
        if p.poll() is None:
            try:
                p.terminate()
                p.wait(10)
            except Exception:
                try:
                    p.kill()
                except Exception:
                    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_greeting(port, timeout, proc=None):
    """Waits until 127.0.0.1:port answers with a 220 greeting."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(5)
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing greets on 127.0.0.1:{port} after {timeout}s")


def children(pid):
    """PIDs whose parent is `pid` (the kernel's list for a single-threaded parent, as
    Postfix's master is; else a scan of /proc)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
        if len(os.listdir(f"/proc/{pid}/task")) == 1:
            return kids
    except OSError:
        pass
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """Samples the summed VmRSS and Pss of a set of processes; keeps the peaks."""

    def __init__(self, pids, interval=1.0):
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.peak_rss = self.peak_pss = self.peak_procs = 0
        self.halt = threading.Event()

    def sample(self):
        pids = self.pids()
        rss = sum(status_kib(p, "VmRSS") for p in pids)
        pss = sum(pss_kib(p) for p in pids)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_procs = max(self.peak_procs, len(pids))
        return rss, pss, len(pids)

    def run(self):
        while not self.halt.wait(self.interval):
            self.sample()

    def stop(self):
        self.halt.set()
        self.join(5)
        self.sample()


class Perf:
    """`perf stat` around a server: counters start disabled, enable()/disable() bracket the
    measured window; inherited counters cover every thread and child process."""

    available = None

    @classmethod
    def check(cls):
        if cls.available is None:
            try:
                r = subprocess.run(["perf", "stat", "-x,", "-e", PERF_EVENTS, "true"],
                                   capture_output=True, text=True, timeout=30)
                cls.available = r.returncode == 0 and "not supported" not in r.stderr \
                    and "<not counted>" not in r.stderr
                if not cls.available:
                    log(f"perf cannot count {PERF_EVENTS}: fsyncs and CPU will be n/a\n{r.stderr}")
            except (OSError, subprocess.TimeoutExpired) as e:
                log(f"perf not usable ({e}): fsyncs and CPU will be n/a")
                cls.available = False
        return cls.available

    def __init__(self, work, tag, enabled=True):
        self.on = enabled and Perf.check()
        self.out = os.path.join(work, f"perf-{tag}.csv")
        self.ctl = os.path.join(work, f"perf-{tag}.ctl")
        self.ack = os.path.join(work, f"perf-{tag}.ack")
        if not self.on:
            return
        for f in (self.ctl, self.ack, self.out):
            if os.path.exists(f):
                os.unlink(f)
        os.mkfifo(self.ctl)
        os.mkfifo(self.ack)
        self.ctl_fd = os.open(self.ctl, os.O_RDWR)
        self.ack_fd = os.open(self.ack, os.O_RDWR)

    def prefix(self):
        if not self.on:
            return []
        return ["perf", "stat", "-x,", "-o", self.out, "-D", "-1",
                "--control", f"fifo:{self.ctl},{self.ack}", "-e", PERF_EVENTS, "--"]

    def _command(self, word):
        if not self.on:
            return
        os.write(self.ctl_fd, word.encode() + b"\n")
        r, _, _ = select.select([self.ack_fd], [], [], 10)
        if not r:
            raise RuntimeError(f"perf did not acknowledge '{word}'")
        os.read(self.ack_fd, 64)

    def enable(self):
        self._command("enable")

    def disable(self):
        self._command("disable")

    def counts(self):
        """After the server exited: {'fsync': n, 'cpu_ms': ms} or None."""
        if not self.on:
            return None
        for fd in (self.ctl_fd, self.ack_fd):
            os.close(fd)
        c = {"fsync": 0, "cpu_ms": None}
        try:
            with open(self.out) as f:
                for line in f:
                    parts = line.strip().split(",")
                    if len(parts) < 3 or line.startswith("#"):
                        continue
                    value, event = parts[0], parts[2]
                    if value.startswith("<"):
                        return None
                    if "sys_enter_f" in event:
                        c["fsync"] += int(float(value))
                    elif event.startswith("task-clock"):
                        c["cpu_ms"] = float(value)
        except OSError:
            return None
        return c


class Sink:
    """smtp-sink counting every message it receives ('-c': "sess=N quit=N mesg=N\\r")."""

    def __init__(self, work):
        self.port = free_port()
        self.out = os.path.join(work, f"sink-{self.port}.out")
        self.proc = spawn(["smtp-sink", "-c", "-m", "2000", "-u", "postfix",
                           f"127.0.0.1:{self.port}", "1000"],
                          stdout=open(self.out, "wb"), stderr=subprocess.STDOUT)
        wait_greeting(self.port, 10, self.proc)
        self.base = 0
        time.sleep(0.2)
        self.base = self.count()

    def count(self):
        try:
            with open(self.out, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 512))
                tail = f.read()
        except OSError:
            return 0
        found = re.findall(rb"mesg=(\d+)\r", tail)
        return int(found[-1]) if found else 0

    def wait_for(self, expected, timeout):
        """Polls until the count reaches `expected`; returns (monotonic time or None, count)."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.count()
            if n >= expected:
                return time.monotonic(), n
            if time.monotonic() > deadline:
                return None, n
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class BenchDns:
    """A DNS server on 127.0.0.1 (UDP) for wasmtp's sender verification: TXT records for the
    load's HELO name and sender domain (SPF) and the sender's DMARC record; NXDOMAIN for
    anything else. Runs in a thread of this script."""

    RECORDS = {
        "load.bench.test": "v=spf1 ip4:127.0.0.1 -all",
        "probe.bench.test": "v=spf1 ip4:127.0.0.1 -all",
        MAIL_FROM.split("@")[1]: "v=spf1 ip4:192.0.2.0/24 include:_spf.bench.test ~all",
        "_spf.bench.test": "v=spf1 ip4:127.0.0.0/8 -all",
        "_dmarc." + MAIL_FROM.split("@")[1]: "v=DMARC1; p=reject",
    }

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def answer(self, query):
        # Header, then one question: labels, type, class (RFC 1035 4.1).
        labels, i = [], 12
        while i < len(query) and query[i]:
            labels.append(query[i + 1:i + 1 + query[i]].decode(errors="replace").lower())
            i += 1 + query[i]
        qtype = int.from_bytes(query[i + 1:i + 3], "big")
        question_end = i + 5
        text = self.RECORDS.get(".".join(labels))
        flags = 0x8180 if text is not None else 0x8183  # response, RD, RA; NXDOMAIN
        answers = b""
        if text is not None and qtype == 16:
            data = text.encode()
            strings = b"".join(bytes([len(data[k:k + 255])]) + data[k:k + 255]
                               for k in range(0, len(data), 255))
            answers = (b"\xc0\x0c" + (16).to_bytes(2, "big") + (1).to_bytes(2, "big")
                       + (300).to_bytes(4, "big") + len(strings).to_bytes(2, "big") + strings)
        header = (query[:2] + flags.to_bytes(2, "big") + (1).to_bytes(2, "big")
                  + (1 if answers else 0).to_bytes(2, "big") + bytes(4))
        return header + query[12:question_end] + answers

    def serve(self):
        while True:
            try:
                query, peer = self.sock.recvfrom(512)
                self.queries += 1
                self.sock.sendto(self.answer(query), peer)
            except Exception:
                continue


class Wasmtp:
    name = "wasmtp"

    def __init__(self, work, binary, connections=2000, dns=None, name=None):
        """`dns`: a BenchDns; then the sender verification is on (name "wasmtp+auth"),
        else off. `name`: another build of wasmtp to compare ("wasmtp-base")."""
        if dns:
            self.name = "wasmtp+auth"
        if name:
            self.name = name
        self.dir = os.path.join(work, self.name)
        self.spool = os.path.join(self.dir, "spool")
        os.makedirs(self.spool, exist_ok=True)
        self.binary, self.connections, self.dns = binary, connections, dns
        self.proc = self.pid = None

    def config(self, port, sink_port):
        path = os.path.join(self.dir, "wasmtp.toml")
        if self.dns:
            auth = f'[authentication]\nverify = true\n\n[dns]\nnameservers = ["127.0.0.1:{self.dns.port}"]\n'
        else:
            auth = "[authentication]\nverify = false\n"
        with open(path, "w") as f:
            f.write(f"""# written by tests/bench/bench.py
hostname = "wasmtp.bench.test"

{auth}

[[listen]]
address = "127.0.0.1:{port}"
mode = "mx"

[limits]
connections = {self.connections}
connections_per_ip = {self.connections}     # all the load comes from 127.0.0.1
soft_error_limit = 1000
error_limit = 10000

[spool]
path = "{self.spool}"

[accept]
domains = ["dest.test"]

[[route]]
domain = "*"
to = "smtp:127.0.0.1:{sink_port}"
tls = "none"

[delivery]
concurrency = 64

[[plugin]]
name = "guard"
path = "bundled:vrfy-expn-guard"

[[plugin]]
name = "size"
path = "bundled:size-limit"
[plugin.config]
max_size = "25MiB"

[[plugin]]
name = "spam"
path = "bundled:spam-score"
""")
        return path

    def start(self, sink_port, perf, sessions=None):
        # A fresh queue for every run (what a failed run left must not reach the next sink);
        # the compiled-plugin cache stays.
        for sub in ("log", "queue", "tmp", "control"):
            shutil.rmtree(os.path.join(self.spool, sub), ignore_errors=True)
        for f in ("kv.json",):
            if os.path.exists(os.path.join(self.spool, f)):
                os.unlink(os.path.join(self.spool, f))
        self.port = free_port()
        cfg = self.config(self.port, sink_port)
        env = dict(os.environ, WASMTP_LOG="warn")
        self.log = os.path.join(self.dir, "wasmtp.log")
        self.wrapper = spawn(perf.prefix() + [self.binary, "serve", "--config", cfg],
                             env=env, cwd=self.dir, stdin=subprocess.DEVNULL,
                             stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        if perf.on:
            deadline = time.monotonic() + 10
            kids = []
            while not kids and time.monotonic() < deadline:
                kids = children(self.wrapper.pid)
                time.sleep(0.05)
            if not kids:
                raise RuntimeError("wasmtp did not start under perf")
            self.pid = kids[0]
        else:
            self.pid = self.wrapper.pid
        wait_greeting(self.port, 120, self.wrapper)

    def pids(self):
        return [self.pid] if self.pid and os.path.exists(f"/proc/{self.pid}") else []

    def reset_peak(self):
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def hwm_kib(self):
        return status_kib(self.pid, "VmHWM")

    def queue_left(self):
        listed = subprocess.run([self.binary, "queue", "list", "--config",
                                 os.path.join(self.dir, "wasmtp.toml")],
                                capture_output=True, text=True, timeout=60)
        return len([l for l in listed.stdout.splitlines() if l.strip()])

    def stop(self):
        if self.pid and os.path.exists(f"/proc/{self.pid}"):
            os.kill(self.pid, signal.SIGTERM)
        try:
            self.wrapper.wait(60)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.wrapper.wait(10)
        self.pid = None


class Postfix:
    """A private Postfix instance: own config dir, queue and data directories, never /etc/postfix."""

    name = "Postfix"

    def __init__(self, work, process_limit=None, smtpd_limit="sessions"):
        self.smtpd_limit = smtpd_limit
        self.dir = os.path.join(work, "postfix")
        self.conf = os.path.join(self.dir, "conf")
        self.queue = os.path.join(self.dir, "queue")
        self.data = os.path.join(self.dir, "data")
        self.maillog = os.path.join(self.dir, "maillog")
        self.process_limit = process_limit
        for d in (self.dir, self.conf, self.queue):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        os.makedirs(self.data, exist_ok=True)
        shutil.chown(self.data, "postfix")
        self.wrapper = None

    def configure(self, port, sink_port, smtpd_limit):
        with open("/etc/postfix/master.cf") as f:
            master = f.read().splitlines()
        out = []
        for line in master:
            fields = line.split()
            if not fields or line[0] in "# \t":
                out.append(line)
            elif fields[0] == "smtp" and fields[1] == "inet":
                out.append(f"127.0.0.1:{port}  inet  n  -  n  -  {smtpd_limit}  smtpd")
            else:
                fields[4] = "n"  # no chroot: the private queue has no /etc copies
                out.append("  ".join(fields))
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write("\n".join(out) + "\n")
        limit = f"default_process_limit = {self.process_limit}\n" if self.process_limit else ""
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(f"""# written by tests/bench/bench.py: a private instance, relaying everything
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.data}
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
local_transport = error:local delivery is disabled
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink_port}
smtpd_relay_restrictions = permit_mynetworks, reject
maillog_file = {self.maillog}
maillog_file_prefixes = {self.dir}
biff = no
{limit}""")
        r = subprocess.run(["postfix", "-c", self.conf, "check"], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"postfix check failed: {r.stdout}{r.stderr}; see {self.maillog}")

    def master_pid(self):
        try:
            with open(os.path.join(self.queue, "pid", "master.pid")) as f:
                pid = int(f.read().split()[0])
            return pid if os.path.exists(f"/proc/{pid}") else None
        except (OSError, ValueError, IndexError):
            return None

    def start(self, sink_port, perf, sessions=None):
        # A fresh queue for every run (what a failed run left must not reach the next sink).
        shutil.rmtree(self.queue, ignore_errors=True)
        os.makedirs(self.queue)
        os.chmod(self.queue, 0o755)
        # smtpd processes: the default 100 (default_process_limit), or as many as there are
        # concurrent sessions, as wasmtp's limits.connections admits them all.
        if self.smtpd_limit == "default":
            smtpd_limit = "-"
        elif self.smtpd_limit == "sessions":
            smtpd_limit = str(max(100, sessions or 0))
        else:
            smtpd_limit = str(self.smtpd_limit)
        self.port = free_port()
        self.configure(self.port, sink_port, smtpd_limit)
        self.wrapper = spawn(perf.prefix() + ["postfix", "-c", self.conf, "start-fg"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(self.dir, "start.err"), "ab"))
        wait_greeting(self.port, 60, self.wrapper)
        deadline = time.monotonic() + 10
        while self.master_pid() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        self.pid = self.master_pid()
        if self.pid is None:
            raise RuntimeError("no Postfix master.pid")

    def pids(self):
        if not self.pid or not os.path.exists(f"/proc/{self.pid}"):
            return []
        return [self.pid] + children(self.pid)

    def reset_peak(self):
        return False

    def hwm_kib(self):
        return None

    def queue_left(self):
        n = 0
        for sub in ("maildrop", "incoming", "active", "deferred", "hold", "corrupt"):
            for _, _, files in os.walk(os.path.join(self.queue, sub)):
                n += len(files)
        return n

    def stop(self):
        if self.wrapper is None:
            return
        subprocess.run(["postfix", "-c", self.conf, "stop"], capture_output=True, timeout=60)
        try:
            self.wrapper.wait(60)
        except subprocess.TimeoutExpired:
            self.wrapper.kill()
        # children of the master exit on their own once it is gone; wait for them
        deadline = time.monotonic() + 20
        while self.pid and children(self.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.wrapper = None


def cpu_idle_fraction(seconds=1.0):
    """Share of the machine's CPU time that was idle over `seconds`."""
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # idle + iowait
    t1, i1 = read()
    time.sleep(seconds)
    t2, i2 = read()
    return (i2 - i1) / max(1, t2 - t1)


def wait_quiet(max_wait, need=0.85):
    """Other users of this machine skew every figure: wait (bounded) until it is mostly idle.
    Returns the idle share seen last."""
    deadline = time.monotonic() + max_wait
    idle = cpu_idle_fraction()
    said = False
    while idle < need and time.monotonic() < deadline:
        if not said:
            log(f"machine busy ({(1 - idle) * 100:.0f}% CPU used by others); waiting up to "
                f"{max_wait:.0f}s for it to be quiet")
            said = True
        idle = cpu_idle_fraction(2.0)
    if said:
        log(f"going on with the machine {(1 - idle) * 100:.0f}% busy" if idle < need
            else "quiet now")
    return idle


def our_cpu(sink):
    """CPU seconds of this script, its reaped children (smtp-source, probe) and the sink."""
    import resource
    t = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        t += r.ru_utime + r.ru_stime
    try:
        with open(f"/proc/{sink.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        t += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    return t


def percentile(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q * (len(v) - 1))))]


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
            names = [n for n in ("wasmtp", "wasmtp-base", "wasmtp+auth", "Postfix")
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
    for rep in range(1, runs + 1):
        for size in sizes:
            for sessions in sessions_list:
                order = [Wasmtp(args.work, args.wasmtp),
                         Postfix(args.work, smtpd_limit=args.postfix_smtpd)]
                if dns:
                    order.insert(1, Wasmtp(args.work, args.wasmtp, dns=dns))
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
