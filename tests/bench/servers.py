"""The servers under test and around them for tests/bench (bench.py, big.py): smtp-sink as
the next hop, a DNS server for sender verification, wasmtp and a private Postfix instance."""

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

from procs import children, free_port, spawn, status_kib, wait_greeting

MAIL_FROM = "from@bench.test"  # the load's sender, whose domain BenchDns answers for

# The embedded default's three plugins, as both modes load them.
DEFAULT_PLUGINS = """[[plugin]]
name = "vrfy-expn-guard"
path = "bundled:vrfy-expn-guard"

[[plugin]]
name = "size-limit"
path = "bundled:size-limit"
[plugin.config]
max_size = "25MiB"

[[plugin]]
name = "spam-score"
path = "bundled:spam-score"
"""


class Sink:
    """smtp-sink counting every message it receives ('-c': "sess=N quit=N mesg=N\\r").
    `port`: a fixed one, so that a sink can be started again on the same port; else a free one."""

    def __init__(self, work, port=None):
        self.port = port or free_port()
        self.out = os.path.join(work, f"sink-{self.port}.out")
        self.proc = spawn(["smtp-sink", "-c", "-m", "2000", "-u", "postfix",
                           f"127.0.0.1:{self.port}", "1000"],
                          stdout=open(self.out, "wb"), stderr=subprocess.STDOUT)
        wait_greeting(self.port, 10, self.proc)
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

    def __init__(self, work, binary, connections=2000, dns=None, name=None, rspamd=None,
                 after_queue=False):
        """`dns`: a BenchDns; then the sender verification is on (name "wasmtp+auth"),
        else off. `name`: another build of wasmtp to compare ("wasmtp-base"). `rspamd`: a
        BenchRspamd that `bundled:rspamd` asks of every message, before the 250
        ("wasmtp+rspamd") or, with `after_queue`, after it ("wasmtp+rspamd-aq")."""
        if dns:
            self.name = "wasmtp+auth"
        if rspamd:
            self.name = "wasmtp+rspamd-aq" if after_queue else "wasmtp+rspamd"
        if name:
            self.name = name
        self.rspamd, self.after_queue = rspamd, after_queue
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
        plugins = DEFAULT_PLUGINS
        if self.rspamd:
            mode = "after-queue" if self.after_queue else "before-queue"
            plugins += f"""
[[plugin]]
name = "rspamd"
path = "bundled:rspamd"
mode = "{mode}"
timeout = "10s"
[plugin.config]
url = "{self.rspamd.url}"
"""
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

{plugins}""")
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
