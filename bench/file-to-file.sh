#!/usr/bin/env bash
# File-to-file benchmark, all measured in the same run (the machine varies
# +-25% between runs, so only same-run ratios mean anything):
#   cp (page cache), cp + fsync, age 1.x encrypt/decrypt, coffer encrypt/decrypt
# on a random file (default 1 GiB), median of N runs, with peak RSS, plus
# coffer's peak RSS on a 64 MiB file to show memory is flat in file size.
#
#   bash bench/file-to-file.sh [SIZE_MIB] [RUNS]
#
# Two comparisons, because fsync timing on this kind of disk is noisy (the
# same `dd conv=fsync` has taken 0.75 s and 2.4 s back to back):
#  * throughput: everything writes to the page cache, no fsync (coffer via
#    stdout redirected to a file, like age and cp);
#  * durable: `coffer -o` (temporary file, fsync, atomic rename) against
#    `dd conv=fsync`, the floor for a durable copy.
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

# run NAME OUTPUT CMD...: times CMD RUNS times; prints "NAME seconds rss_kib".
run() {
  local name=$1 out=$2; shift 2
  local times=() rss=0
  for _ in $(seq "$runs"); do
    rm -f "$out"; sync
    /usr/bin/time -f '%e %M' -o t.txt "$@" >/dev/null 2>&1 || { echo "$name failed" >&2; exit 1; }
    read -r secs kib < t.txt
    times+=("$secs"); [ "$kib" -gt "$rss" ] && rss=$kib
  done
  local median
  median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "$name $median $rss" >> results.txt
}

: > results.txt
run cp                     out.bin cp in.bin out.bin
run age-encrypt            out.age age -r "$age_pub" -o out.age in.bin
run coffer-encrypt         out.cof sh -c "exec '$coffer' encrypt -i me.key -r '$me' in.bin > out.cof"
run age-decrypt            out.dec age -d -i age.key -o out.dec in.age
run coffer-decrypt         out.dec sh -c "exec '$coffer' decrypt -i me.key in.cof > out.dec"
run cp+fsync               out.bin dd if=in.bin of=out.bin bs=1M conv=fsync status=none
run coffer-encrypt-durable out.cof "$coffer" encrypt -i me.key -r "$me" -o out.cof in.bin
run coffer-decrypt-durable out.dec "$coffer" decrypt -i me.key -o out.dec in.cof
run coffer-encrypt-64MiB   small.cof sh -c "exec '$coffer' encrypt -i me.key -r '$me' small.bin > small.cof"
cmp in.bin out.dec

python3 - "$size_mib" results.txt <<'PY'
import sys
size = int(sys.argv[1]) * 1048576
rows = {l.split()[0]: (float(l.split()[1]), int(l.split()[2])) for l in open(sys.argv[2]) if l.strip()}
print(f"\nfile-to-file, {size >> 20} MiB, median of runs (same run, same machine)")
print(f"{'tool':22} {'seconds':>8} {'MB/s':>8} {'peak RSS':>10}")
for name, (secs, kib) in rows.items():
    mbps = (64 * 1048576 if '64MiB' in name else size) / max(secs, 1e-3) / 1e6
    print(f"{name:22} {secs:8.2f} {mbps:8.0f} {kib/1024:8.1f} MiB")
def ratio(a, b): return rows[b][0] / max(rows[a][0], 1e-3)
print()
print("throughput (page cache, no fsync anywhere):")
print(f"  coffer encrypt: {ratio('coffer-encrypt', 'age-encrypt'):.2f}x age's speed (goal >= 2)")
print(f"  coffer decrypt: {ratio('coffer-decrypt', 'age-decrypt'):.2f}x age's speed (goal >= 2)")
print(f"  coffer encrypt time / cp time: {1 / ratio('coffer-encrypt', 'cp'):.2f}x (goal <= 1.5)")
print("durable (fsync before the output counts as written):")
print(f"  coffer encrypt -o time / dd conv=fsync time: {1 / ratio('coffer-encrypt-durable', 'cp+fsync'):.2f}x")
print(f"  coffer decrypt -o time / dd conv=fsync time: {1 / ratio('coffer-decrypt-durable', 'cp+fsync'):.2f}x")
print(f"peak RSS: coffer {rows['coffer-encrypt'][1]/1024:.1f} MiB at {size >> 20} MiB vs {rows['coffer-encrypt-64MiB'][1]/1024:.1f} MiB at 64 MiB; age {rows['age-decrypt'][1]/1024:.1f} MiB")
PY
