#!/bin/sh
# Builds the fuzz targets, replays regressions/, then fuzzes each target in turn for SECONDS
# (default 60), starting from seeds/TARGET and growing corpus/TARGET (not committed).
# Usage: ./run.sh [SECONDS] [TARGET...]       Logs: artifacts/logs/TARGET.log
#        ./run.sh regressions                 builds and replays regressions/ only (CI)
# Everything runs under `nice -n 19` with one build job; needs `cargo +nightly fuzz`.
set -u
cd "$(dirname "$0")"
only_regressions=false
[ "${1:-}" = regressions ] && { only_regressions=true; shift; }
secs=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-command data bdat address reply xtext config header}
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
fuzz() { nice -n 19 cargo +nightly fuzz "$@"; }

fuzz build || exit 1
status=0
for t in $targets; do
    for f in regressions/"$t"-*; do
        [ -e "$f" ] || continue
        if ! fuzz run "$t" "$f" >/dev/null 2>&1; then
            echo "REGRESSION $f crashes: cargo +nightly fuzz run $t $f"
            status=1
        fi
    done
done
if $only_regressions; then
    [ $status -eq 0 ] && echo "fuzz targets built; regressions replayed"
    exit $status
fi
mkdir -p artifacts/logs
for t in $targets; do
    case $t in
        command) len=-max_len=16384 ;;   # lines up to the AUTH limit (12288) and past it
        reply) len=-max_len=8192 ;;      # reply lines up to MAX_REPLY_LINE (4096) and past it
        *) len= ;;
    esac
    mkdir -p corpus/"$t"
    log=artifacts/logs/$t.log
    fuzz run "$t" corpus/"$t" seeds/"$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
        -print_final_stats=1 $len >"$log" 2>&1
    rc=$?
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)
    if [ $rc -eq 0 ]; then
        echo "$t: ok ${secs}s $done_line"
    else
        status=1
        echo "$t: CRASH (exit $rc), see $log:"
        grep -E "panicked at|Test unit written" "$log" | head -n 2
    fi
done
exit $status
