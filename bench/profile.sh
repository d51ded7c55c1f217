#!/usr/bin/env bash
# Where one `coffer put` and one `coffer get` of a random file (default
# 1 GiB) spend their CPU, client and server, on loopback: `perf record` of
# the client command and, at the same time, of the server process; prints
# the top symbols of each (self time) and the wall time.
#
#   bash bench/profile.sh [SIZE_MIB]
set -uo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
command -v perf >/dev/null || { echo "perf is needed (apt-get install linux-perf)" >&2; exit 1; }
cargo build --profile profiling --quiet -p coffer-cli
coffer="$PWD/target/profiling/coffer"
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/coffer-prof.XXXXXX")
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
export COFFER_HOME="$work/home"
"$coffer" server init --data srv >/dev/null 2>&1
"$coffer" keygen -o alice.id >/dev/null 2>&1
"$coffer" server user add alice --key "$("$coffer" pubkey -i alice.id 2>/dev/null)" --data srv >/dev/null 2>&1
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$coffer" server run --listen "127.0.0.1:$port" --data srv 2>server.log &
server_pid=$!
for _ in $(seq 100); do grep -q listening server.log 2>/dev/null && break; sleep 0.1; done
fp=$(openssl x509 -in srv/tls/cert.pem -outform der | openssl dgst -sha256 -binary | base64 | tr -d '=')
"$coffer" login "https://127.0.0.1:$port" --user alice -i alice.id --fingerprint "SHA256:$fp" -q
head -c $((size_mib * 1048576)) /dev/urandom > in.bin
sync

report() { # data file, title
  echo "== $2"
  perf report -i "$1" --no-children --sort dso,symbol --stdio 2>/dev/null \
    | grep -E '^ +[0-9]' | head -15
}
profile() { # name, command...
  local name=$1; shift
  perf record -q -F 499 -g -o "server-$name.data" -p "$server_pid" 2>/dev/null &
  local perf_pid=$!
  sleep 0.5
  local started ended
  started=$(date +%s.%N)
  perf record -q -F 499 -g -o "client-$name.data" -- "$@" > "$name.out" 2>/dev/null
  ended=$(date +%s.%N)
  kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
  awk -v a="$started" -v b="$ended" -v n=$((size_mib * 1048576)) -v w="$name" \
    'BEGIN {printf "%s: %.2f s, %.0f MB/s\n", w, b - a, n / 1e6 / (b - a)}'
  report "client-$name.data" "client, $name"
  report "server-$name.data" "server, $name"
}
profile put "$coffer" put in.bin --json -q
id=$(sed -E 's/.*"id":"([0-9a-f]+)".*/\1/' put.out)
mkdir out
profile get "$coffer" get "$id" -o out -q
cmp in.bin out/in.bin
