#!/usr/bin/env bash
# wasmtp vs Postfix on this machine, in one run. See tests/bench/README.md.
#
#   bash tests/bench/run.sh [--quick] [throughput|idle|big] [-- extra bench.py/big.py options]
#
# Needs root and Debian (12): installs Postfix (system instance never started or touched),
# perf if missing, builds wasmtp in release mode, then runs tests/bench/bench.py under nice.
# Environment: WASMTP_BIN=path (skip the build), BENCH_KEEP=1 (keep the work directory),
# BENCH_JSON=file (raw figures), BENCH_NICE (default 10).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
mode=throughput
quick=()
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=(--quick) ;;
        throughput|idle|big) mode="$1" ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (usage: run.sh [--quick] [throughput|idle|big])" >&2; exit 2 ;;
    esac
    shift
done
nice_level="${BENCH_NICE:-10}"

if [ "$(id -u)" != 0 ]; then
    echo "run.sh needs root (apt-get, a private Postfix instance, perf tracepoints)" >&2
    exit 1
fi

# --- requirements -----------------------------------------------------------------------
apt_updated=
apt_install() {
    [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}
if ! command -v postfix >/dev/null || ! command -v smtp-source >/dev/null \
        || ! command -v smtp-sink >/dev/null; then
    echo "== installing Postfix (Debian package; the system instance stays unconfigured)"
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt_install postfix
fi
command -v python3 >/dev/null || apt_install python3
case " ${extra[*]} " in
    *" --rspamd "*) command -v rspamd >/dev/null || apt_install rspamd ;;
esac
if ! perf stat -e syscalls:sys_enter_fsync true >/dev/null 2>&1; then
    command -v perf >/dev/null || apt_install linux-perf || true
    perf stat -e syscalls:sys_enter_fsync true >/dev/null 2>&1 \
        || echo "== perf cannot count syscalls here: fsyncs/msg and CPU will be n/a" >&2
fi

# Descriptors: 10,000 idle sessions need that many on each side.
ulimit -Hn 65536 2>/dev/null || true
ulimit -Sn "$(ulimit -Hn)"

# --- wasmtp --------------------------------------------------------------------------------
work="$(mktemp -d /tmp/wasmtp-bench.XXXXXX)"
chmod 755 "$work"   # the postfix user traverses it to its queue
bench_pid=
cleanup() {
    status=$?
    trap - EXIT INT TERM
    if [ -n "$bench_pid" ] && kill -0 "$bench_pid" 2>/dev/null; then
        kill -TERM "$bench_pid" 2>/dev/null || true
        wait "$bench_pid" 2>/dev/null || true
    fi
    # Second line of defence: our own Postfix instance (never /etc/postfix) and our wasmtp.
    if [ -f "$work/postfix/queue/pid/master.pid" ]; then
        read -r master < "$work/postfix/queue/pid/master.pid" || true
        if [ -n "${master:-}" ] && kill -0 "$master" 2>/dev/null; then
            postfix -c "$work/postfix/conf" stop >/dev/null 2>&1 || true
        fi
    fi
    for exe in /proc/[0-9]*/exe; do
        if [ "$(readlink "$exe" 2>/dev/null)" = "$work/wasmtp-bin" ]; then
            pid="${exe#/proc/}"; kill -KILL "${pid%/exe}" 2>/dev/null || true
        fi
    done
    if [ -z "${BENCH_KEEP:-}" ]; then rm -rf "$work"; else echo "work directory kept: $work"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "${WASMTP_BIN:-}" ]; then
    src="$WASMTP_BIN"
else
    echo "== building wasmtp (release)"
    (cd "$repo" && nice -n "$nice_level" cargo build --release -p wasmtp)
    src="$repo/target/release/wasmtp"
fi
# A private copy: a rebuild in the checkout during the run does not change what is measured.
cp "$src" "$work/wasmtp-bin"

# --- the run -------------------------------------------------------------------------------
echo "== machine"
echo "date:    $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "cpus:    $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))"
echo "memory:  $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "kernel:  $(uname -sr)"
root_dev="$(df --output=source /tmp | tail -1)"
dev="$(basename "$root_dev")"; dev="${dev%%[0-9]*}"
rot="$(cat "/sys/block/$dev/queue/rotational" 2>/dev/null || echo '?')"
echo "disk:    /tmp on $root_dev ($(df --output=fstype /tmp | tail -1), rotational=$rot)"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the run)"
echo "wasmtp:  $(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$repo" && git diff --quiet HEAD -- host sdk plugins wit 2>/dev/null || echo ' + uncommitted changes')"
echo "postfix: $(postconf -d -h mail_version 2>/dev/null)"
echo "perf:    $(perf version 2>/dev/null || echo none)"
echo "command: bash tests/bench/run.sh ${quick[*]:-} $mode ${extra[*]:-}"
json=()
[ -n "${BENCH_JSON:-}" ] && json=(--json "$BENCH_JSON")

if [ "$mode" = big ]; then
    # Memory with big messages: wasmtp alone (see big.py).
    nice -n "$nice_level" python3 "$here/big.py" --wasmtp "$work/wasmtp-bin" \
        --work "$work" "${json[@]}" "${extra[@]}" &
else
    nice -n "$nice_level" python3 "$here/bench.py" "$mode" --wasmtp "$work/wasmtp-bin" \
        --work "$work" "${quick[@]}" "${json[@]}" "${extra[@]}" &
fi
bench_pid=$!
wait "$bench_pid"
