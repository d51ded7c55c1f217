#!/usr/bin/env bash
# Scale-out benchmark on loopback, every figure from the same run (the
# machine varies +-25% between runs; compare within a run):
#
#   1. coffer put + get of a random file (default 1 GiB) through
#      PostgreSQL + Garage vs SQLite + local disk (the embedded default),
#      with the peak RSS of client and server in each (memory must stay
#      flat in the file size: try SIZE_MIB=6144 for a file past S3's 5 GB
#      single-PUT limit);
#   2. CLIENTS (default 50) concurrent `coffer put`s of 10 MiB each, one
#      user apiece: errors, aggregate MB/s, p50 / p99 latency;
#   3. `coffer ls --no-names` over FILES (default 100 000) files in each
#      metadata backend (rows inserted straight into the database).
#
# PostgreSQL and Garage come from scripts/test-services (installed and
# started when absent).
#
#   bash bench/scale.sh [SIZE_MIB] [CLIENTS] [FILES]
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
clients=${2:-50}
nfiles=${3:-100000}

[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
eval "$(bash scripts/test-services)"
cargo build --release --quiet -p coffer-cli
coffer="$PWD/target/release/coffer"
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/coffer-scale.XXXXXX")
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  psql -q "$COFFER_TEST_POSTGRES" -c "DROP DATABASE IF EXISTS coffer_bench_$$" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
export COFFER_HOME="$work/home"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN {printf "%.0f", b / 1e6 / s}'; }
percentile() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int(NR*p/100+0.999); if (i<1) i=1; print a[i]}'; }
# Elapsed seconds of a command; its peak RSS (KiB) goes to $work/rss.
# Each call has its own files, as the concurrent clients call it at once.
seconds() {
  local t err
  t=$(mktemp "$work/t.XXXXXX") err=$(mktemp "$work/err.XXXXXX")
  /usr/bin/time -f '%e %M' -o "$t" "$@" >/dev/null 2>"$err" || { cat "$err" >&2; return 1; }
  read -r elapsed rss < "$t"
  echo "$rss" > "$work/rss"
  rm -f "$t" "$err"
  echo "$elapsed"
}
# The server's peak RSS (KiB) is reset before a phase and read after it.
reset_server_peak() { echo 5 > "/proc/$server_pid/clear_refs"; }
server_peak() { awk '/^VmHWM/ {print $2}' "/proc/$server_pid/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.0f", k / 1024}'; }

users=(alice)
for i in $(seq "$clients"); do users+=("u$i"); done
for user in "${users[@]}"; do "$coffer" keygen -o "$user.id" >/dev/null 2>&1; done

# Storage settings per backend, as environment for every server command.
backend_env() {
  case $1 in
    embedded) ;;
    postgres-s3)
      local db="coffer_bench_$$"
      psql -q "$COFFER_TEST_POSTGRES" -c "CREATE DATABASE $db" >/dev/null
      echo "COFFER_DATABASE=${COFFER_TEST_POSTGRES%/*}/$db"
      echo "COFFER_OBJECTS=s3"
      echo "COFFER_S3_ENDPOINT=$COFFER_TEST_S3_ENDPOINT"
      echo "COFFER_S3_BUCKET=$COFFER_TEST_S3_BUCKET"
      echo "COFFER_S3_REGION=$COFFER_TEST_S3_REGION"
      echo "COFFER_S3_PREFIX=bench-$$"
      echo "COFFER_S3_ALLOW_HTTP=true"
      ;;
  esac
}

start_backend() { # name
  local name=$1 port fp
  mapfile -t storage < <(backend_env "$name")
  data="$work/srv-$name"
  env "${storage[@]}" "$coffer" server init --data "$data" >/dev/null 2>&1
  # Fifty clients on one address: lift the per-address limits.
  sed -i -E 's/^(api_requests_per_window|login_requests_per_window) = .*/\1 = 1000000/;
             s/^(max_connections|max_connections_per_ip) = .*/\1 = 400/' "$data/config.toml"
  for user in "${users[@]}"; do
    env "${storage[@]}" "$coffer" server user add "$user" --data "$data" \
      --key "$("$coffer" pubkey -i "$user.id" 2>/dev/null)" >/dev/null 2>&1
  done
  port=$(free_port)
  env "${storage[@]}" "$coffer" server run --listen "127.0.0.1:$port" --data "$data" 2>"server-$name.log" &
  server_pid=$!
  for _ in $(seq 100); do grep -q listening "server-$name.log" 2>/dev/null && break; sleep 0.1; done
  fp=$(openssl x509 -in "$data/tls/cert.pem" -outform der | openssl dgst -sha256 -binary | base64 | tr -d '=')
  rm -rf "$COFFER_HOME"
  for user in "${users[@]}"; do
    COFFER_PROFILE=$user "$coffer" login "https://127.0.0.1:$port" --user "$user" -i "$user.id" \
      --fingerprint "SHA256:$fp" -q
  done
}
stop_backend() { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""; }

seed_files() { # name: inserts $nfiles rows for alice
  case $1 in
    embedded)
      python3 - "$data/meta.db" "$nfiles" <<'PY'
import hashlib, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = ((hashlib.md5(str(i).encode()).hexdigest(), "alice", 1000,
         hashlib.sha256(str(i).encode()).digest(), 1700000000 + i, "{}")
        for i in range(int(sys.argv[2])))
db.executemany("INSERT INTO files (id, owner, size, sha256, created_at, receipt) VALUES (?,?,?,?,?,?)", rows)
db.commit()
PY
      ;;
    postgres-s3)
      psql -q "${COFFER_TEST_POSTGRES%/*}/coffer_bench_$$" -c "INSERT INTO files (id, owner, size, sha256, created_at, receipt)
        SELECT md5(i::text), 'alice', 1000, sha256(i::text::bytea), 1700000000 + i, '{}'
        FROM generate_series(1, $nfiles) i" >/dev/null
      ;;
  esac
}

bytes=$((size_mib * 1048576))
head -c "$bytes" /dev/urandom > big.bin
for i in $(seq "$clients"); do head -c $((10 * 1048576)) /dev/urandom > "f$i.bin"; done

declare -A put_s get_s put_rss get_rss errors agg p50 p99 ls_s
for name in embedded postgres-s3; do
  start_backend "$name"
  reset_server_peak
  put_s[$name]=$(seconds env COFFER_PROFILE=alice "$coffer" put big.bin --json -q)
  put_rss[$name]="$(mib "$(cat "$work/rss")") / $(mib "$(server_peak)")"
  id=$(COFFER_PROFILE=alice "$coffer" ls --no-names --json | head -1 | sed -E 's/.*"id":"([0-9a-f]+)".*/\1/')
  rm -rf out && mkdir out
  reset_server_peak
  get_s[$name]=$(seconds env COFFER_PROFILE=alice "$coffer" get "$id" -o out --force -q)
  get_rss[$name]="$(mib "$(cat "$work/rss")") / $(mib "$(server_peak)")"
  cmp -s big.bin out/big.bin || { echo "$name: round trip differs" >&2; exit 1; }
  # Free the space (and the bucket) before the next phase.
  rm -rf out
  COFFER_PROFILE=alice "$coffer" rm "$id" -q

  : > lat.txt; : > fail.txt
  start=$(date +%s.%N)
  for i in $(seq "$clients"); do
    ( if s=$(seconds env COFFER_PROFILE="u$i" "$coffer" put "f$i.bin" -q); then echo "$s" >> lat.txt; else echo x >> fail.txt; fi ) &
  done
  wait $(jobs -p | grep -v "^$server_pid$") 2>/dev/null || true
  wall=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {print e - s}')
  errors[$name]=$(wc -l < fail.txt)
  agg[$name]=$(mbps $(( (clients - errors[$name]) * 10 * 1048576 )) "$wall")
  p50[$name]=$(percentile 50 < lat.txt)
  p99[$name]=$(percentile 99 < lat.txt)

  seed_files "$name"
  ls_s[$name]=$(seconds env COFFER_PROFILE=alice "$coffer" ls --no-names --json)
  count=$(COFFER_PROFILE=alice "$coffer" ls --no-names --json | wc -l)
  [ "$count" -ge "$nfiles" ] || { echo "$name: ls listed $count files" >&2; exit 1; }
  stop_backend
done

echo "coffer scale-out benchmark on loopback ($(nproc) cores), one run"
printf '%-22s %10s %10s\n' "" "embedded" "pg+garage"
printf '%-22s %10s %10s\n' "put ${size_mib} MiB, MB/s" "$(mbps "$bytes" "${put_s[embedded]}")" "$(mbps "$bytes" "${put_s[postgres-s3]}")"
printf '%-22s %10s %10s\n' "  peak RSS c / s, MiB" "${put_rss[embedded]}" "${put_rss[postgres-s3]}"
printf '%-22s %10s %10s\n' "get ${size_mib} MiB, MB/s" "$(mbps "$bytes" "${get_s[embedded]}")" "$(mbps "$bytes" "${get_s[postgres-s3]}")"
printf '%-22s %10s %10s\n' "  peak RSS c / s, MiB" "${get_rss[embedded]}" "${get_rss[postgres-s3]}"
printf '%-22s %10s %10s\n' "$clients x 10 MiB: errors" "${errors[embedded]}" "${errors[postgres-s3]}"
printf '%-22s %10s %10s\n' "  aggregate MB/s" "${agg[embedded]}" "${agg[postgres-s3]}"
printf '%-22s %10s %10s\n' "  p50 latency, s" "${p50[embedded]}" "${p50[postgres-s3]}"
printf '%-22s %10s %10s\n' "  p99 latency, s" "${p99[embedded]}" "${p99[postgres-s3]}"
printf '%-22s %10s %10s\n' "ls $nfiles files, s" "${ls_s[embedded]}" "${ls_s[postgres-s3]}"
awk -v a="${put_s[embedded]}" -v b="${put_s[postgres-s3]}" -v c="${get_s[embedded]}" -v d="${get_s[postgres-s3]}" \
  'BEGIN {printf "pg+garage / embedded: put %.2fx, get %.2fx\n", a / b, c / d}'
