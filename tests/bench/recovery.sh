#!/usr/bin/env bash
# Spool recovery at start with N queued messages (default 100000):
#   bash tests/bench/recovery.sh [N]
# wasmtp (release build) accepts N messages of 1 KiB from smtp-source (50 sessions) while
# its next hop is down, so every one stays queued; it is stopped (SIGTERM) and started
# again on the same spool. Prints the "spool recovered" line of the second start (messages,
# segments, milliseconds to read and index the log) and the time from exec to the first
# greeting. Loopback only, in a mktemp directory removed at exit. Needs smtp-source
# (Debian's postfix package; tests/bench/run.sh installs it).
set -euo pipefail
n=${1:-100000}
cd "$(dirname "$0")/../.."
command -v smtp-source >/dev/null || { echo "smtp-source missing (apt-get install postfix)" >&2; exit 2; }
cargo build --release -p wasmtp >&2
work=$(mktemp -d /tmp/wasmtp-recovery.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
hop=$(free_port)
cat >"$work/wasmtp.toml" <<EOF
hostname = "wasmtp.recovery.test"
[[listen]]
address = "127.0.0.1:$port"
[limits]
connections_per_ip = 200
[spool]
path = "$work/spool"
[accept]
domains = ["dest.test"]
[delivery]
retry = ["1h"]
[[route]]
domain = "*"
to = "smtp:127.0.0.1:$hop"
tls = "none"
EOF
cp target/release/wasmtp "$work/wasmtp"
start() {
    WASMTP_LOG=info "$work/wasmtp" serve --config "$work/wasmtp.toml" 2>"$work/$1.log" &
    pid=$!
}
greeted() { python3 - "$port" <<'EOF'
import socket, sys, time
t0 = time.monotonic()
while True:
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=60) as s:
            s.recv(100)
            break
    except OSError:
        time.sleep(0.01)
print(f"{time.monotonic() - t0:.2f}")
EOF
}
start first
greeted >/dev/null
echo "filling: $n messages of 1 KiB, next hop down" >&2
t0=$(date +%s.%N)
smtp-source -s 50 -m "$n" -l 1024 -f a@src.test -t u@dest.test "127.0.0.1:$port"
t1=$(date +%s.%N)
echo "filled in $(echo "$t1 - $t0" | bc) s" >&2
kill -TERM "$pid"; wait "$pid" || true
echo "spool: $(du -sh "$work/spool/log" | cut -f1) in $(ls "$work/spool/log" | wc -l) segment(s)"
start second
echo "exec to first greeting: $(greeted) s"
grep -o 'spool recovered.*' "$work/second.log" | sed 's/\x1b\[[0-9;]*m//g'
