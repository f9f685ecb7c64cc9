"""A private Rspamd for the `--rspamd` cells: Debian's package, its config, database and log
in the work directory, the stock rules from /etc/rspamd, normal workers on a loopback port,
and the modules that need the network off (as tests/common/rspamd.rs sets it up)."""

import os
import shutil
import signal
import socket
import subprocess
import time

from procs import free_port, spawn

NETWORK_MODULES = ("rbl", "hfilter", "asn", "spf", "dmarc", "once_received", "fuzzy_check")


class BenchRspamd:
    def __init__(self, work, workers=2):
        if not shutil.which("rspamd"):
            raise RuntimeError("--rspamd needs Debian's rspamd: apt-get install rspamd")
        self.dir = os.path.join(work, "rspamd")
        local = os.path.join(self.dir, "local.d")
        os.makedirs(local, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(os.path.join(self.dir, "rspamd.conf"), "w") as f:
            f.write(f""".include "$CONFDIR/common.conf"
options {{
  pidfile = "$RUNDIR/rspamd.pid";
  .include "$CONFDIR/options.inc"
  .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}}
logging {{
  type = "file";
  filename = "$LOGDIR/rspamd.log";
  level = "error";
}}
worker "normal" {{
  bind_socket = "127.0.0.1:{self.port}";
  count = {workers};
  .include "$CONFDIR/worker-normal.inc"
}}
""")
        with open(os.path.join(local, "options.inc"), "w") as f:
            f.write('dns { nameserver = ["127.0.0.1:1"]; timeout = 0.1s; retransmits = 1; }\n'
                    'url_tld = "$LOCAL_CONFDIR/tld.dat";\ndisable_hyperscan = true;\n')
        with open(os.path.join(self.dir, "tld.dat"), "w") as f:
            f.write("com\norg\nnet\ntest\nexample\ninvalid\nlocalhost\n")
        for module in NETWORK_MODULES:
            with open(os.path.join(local, f"{module}.conf"), "w") as f:
                f.write("enabled = false;\n")
        self.proc = None

    def start(self):
        var = [a for k in ("LOCAL_CONFDIR", "DBDIR", "RUNDIR", "LOGDIR")
               for a in ("--var", f"{k}={self.dir}")]
        self.proc = spawn(["rspamd", "-f", "-i", "-c", os.path.join(self.dir, "rspamd.conf")] + var,
                          cwd=self.dir, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rspamd exited with {self.proc.returncode}: see {self.dir}")
            if self.pong():
                return
            time.sleep(0.2)
        raise RuntimeError("rspamd did not answer /ping in 120 s")

    def pong(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
                answer = b""
                while chunk := s.recv(4096):
                    answer += chunk
                return answer.endswith(b"pong\r\n")
        except OSError:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
