"""Process and measuring helpers for tests/bench (bench.py, big.py): starting and stopping
processes, waiting for a greeting, memory and CPU figures, perf stat."""

import os
import select
import socket
import subprocess
import sys
import threading
import time

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
