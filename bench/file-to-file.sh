#!/usr/bin/env bash
# File-to-file benchmark, all measured in the same run (the machine varies
# +-25% between runs, so only same-run ratios mean anything):
#   cp, age 1.x encrypt/decrypt, coffer encrypt/decrypt (each + sync)
# on a random file (default 1 GiB), median of N runs, with peak RSS, plus
# coffer's peak RSS on a 64 MiB file to show memory is flat in file size.
#
#   bash bench/file-to-file.sh [SIZE_MIB] [RUNS]
#
# Every tool is charged a `sync` (durable output), tools interleave round
# by round after an untimed warm-up round, and the figure is the median.
# Goals (issue 12): coffer >= 2x age, and <= 1.5x the time of cp + sync.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
runs=${2:-5}

need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need age age
need age-keygen age
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }

cargo build --release --quiet -p coffer-cli
coffer="$PWD/target/release/coffer"
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/coffer-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

head -c $((size_mib * 1048576)) /dev/urandom > in.bin
head -c $((64 * 1048576)) /dev/urandom > small.bin
age-keygen -o age.key 2>/dev/null
age_pub=$(age-keygen -y age.key)
"$coffer" keygen -o me.key >/dev/null 2>&1
me=$("$coffer" pubkey -i me.key 2>/dev/null)
age -r "$age_pub" -o in.age in.bin
"$coffer" encrypt -i me.key -r "$me" -o in.cof in.bin

# The tools, each "NAME|OUTPUT|COMMAND". Every command ends in `sync`, so
# each is charged the same durable write (and `coffer -o`'s own fsync
# before its rename is no handicap).
charge_sync() { echo "$1; sync"; }
tools=(
  "cp|out.bin|$(charge_sync 'cp in.bin out.bin')"
  "age-encrypt|out.age|$(charge_sync "age -r '$age_pub' -o out.age in.bin")"
  "coffer-encrypt|out.cof|$(charge_sync "'$coffer' encrypt -i me.key -r '$me' -o out.cof in.bin")"
  "age-decrypt|out.dec|$(charge_sync 'age -d -i age.key -o out.dec in.age')"
  "coffer-decrypt|out.dec|$(charge_sync "'$coffer' decrypt -i me.key -o out.dec in.cof")"
  "coffer-encrypt-64MiB|small.cof|$(charge_sync "'$coffer' encrypt -i me.key -r '$me' -o small.cof small.bin")"
)

# One timed run of a tool: appends "NAME seconds rss_kib" to times.txt.
# Before it, the same churn for every tool: a file of the input's size is
# written, synced and deleted (on this VM, where a tool runs in the page
# cache's cycle of fill, sync and free changed its time by up to 3x; with
# the churn in front, runs repeat within a few percent).
run_once() {
  local name=$1 out=$2 cmd=$3
  cp in.bin churn.bin; sync; rm -f churn.bin
  /usr/bin/time -f '%e %M' -o t.txt sh -c "$cmd" >/dev/null 2>&1 || { echo "$name failed" >&2; exit 1; }
  echo "$name $(cat t.txt)" >> times.txt
  rm -f "$out"
}

# Rounds interleave the tools, so a noisy moment (this VM's first touch of
# fresh memory costs a lot, and neighbours come and go) hits all of them
# alike; round 0 is an untimed warm-up.
: > times.txt
for round in $(seq 0 "$runs"); do
  for tool in "${tools[@]}"; do
    IFS='|' read -r name out cmd <<< "$tool"
    run_once "$name" "$out" "$cmd"
  done
  [ "$round" = 0 ] && : > times.txt
done
"$coffer" decrypt -i me.key -o out.dec in.cof 2>/dev/null
cmp in.bin out.dec
awk '{print $1}' times.txt | sort -u | while read -r name; do
  median=$(awk -v n="$name" '$1 == n {print $2}' times.txt | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  rss=$(awk -v n="$name" '$1 == n {print $3}' times.txt | sort -n | tail -1)
  all=$(awk -v n="$name" '$1 == n {print $2}' times.txt | sort -n | paste -sd, -)
  echo "$name $median $rss $all"
done > results.txt

python3 - "$size_mib" results.txt <<'PY'
import sys
size = int(sys.argv[1]) * 1048576
rows = {l.split()[0]: (float(l.split()[1]), int(l.split()[2]), l.split()[3]) for l in open(sys.argv[2]) if l.strip()}
print(f"\nfile-to-file, {size >> 20} MiB, median of runs (same run, same machine)")
print(f"{'tool (each + sync)':22} {'seconds':>8} {'MB/s':>8} {'peak RSS':>10}   every run (s)")
for name, (secs, kib, every) in rows.items():
    mbps = (64 * 1048576 if '64MiB' in name else size) / max(secs, 1e-3) / 1e6
    print(f"{name:22} {secs:8.2f} {mbps:8.0f} {kib/1024:8.1f} MiB   {every}")
def ratio(a, b): return rows[b][0] / max(rows[a][0], 1e-3)
print()
print("durable, every tool charged a sync:")
print(f"  coffer encrypt: {ratio('coffer-encrypt', 'age-encrypt'):.2f}x age's speed (goal >= 2)")
print(f"  coffer decrypt: {ratio('coffer-decrypt', 'age-decrypt'):.2f}x age's speed (goal >= 2)")
print(f"  coffer encrypt time / (cp + sync) time: {1 / ratio('coffer-encrypt', 'cp'):.2f}x (goal <= 1.5)")
print(f"  coffer decrypt time / (cp + sync) time: {1 / ratio('coffer-decrypt', 'cp'):.2f}x (goal <= 1.5)")
print(f"peak RSS: coffer {rows['coffer-encrypt'][1]/1024:.1f} MiB at {size >> 20} MiB vs {rows['coffer-encrypt-64MiB'][1]/1024:.1f} MiB at 64 MiB; age {rows['age-decrypt'][1]/1024:.1f} MiB")
PY
