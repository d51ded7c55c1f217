#!/usr/bin/env bash
# End-to-end transfer benchmark on loopback, everything in the same run
# (the machine varies +-25% between runs; only same-run ratios mean much):
#
#   coffer put + coffer get of a random file (default 1 GiB): end-to-end
#   encrypted, TLS 1.3, the server fsyncs the object, the client fsyncs the
#   download before renaming it into place;
#   scp (OpenSSH from Debian, -c aes256-gcm@openssh.com) up and down, against
#   its own sshd on 127.0.0.1, charged a `sync` in each direction;
#   plain HTTPS without end-to-end encryption: nginx (Debian's nginx-light)
#   receiving the file by PUT (WebDAV module) and serving it, over TLS 1.3,
#   to curl, charged a `sync` in each direction (coffer's server fsyncs the
#   object and its client fsyncs the download, so each side pays for one).
#
# Prints MB/s (median of RUNS) for each direction, the ratios, and peak RSS
# of client and server; then the same peaks for a 64 MiB file, to show
# memory does not grow with file size; then CLIENTS concurrent `coffer put`
# of 10 MiB each (default 50), by as many users and then by one: errors and
# the aggregate MB/s; then the CPU
# seconds both ends of each tool spend on one transfer (which bounds the
# wall time on a machine where they share the cores), and with perf the
# top symbols of the server receiving a put and of the client of a get.
#
#   bash bench/transfer.sh [SIZE_MIB] [RUNS] [CLIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
runs=${2:-3}
clients=${3:-50}

need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need scp openssh-client
need nginx nginx-light
[ -x /usr/sbin/sshd ] || { apt-get update -qq && apt-get install -y -qq openssh-server >/dev/null; }
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }

cargo build --release --quiet -p coffer-cli
coffer="$PWD/target/release/coffer"
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/coffer-xfer.XXXXXX")
server_pid=""
sshd_pid=""
nginx_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  [ -n "$sshd_pid" ] && kill "$sshd_pid" 2>/dev/null || true
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
export COFFER_HOME="$work/home"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN {printf "%.0f", b / 1e6 / s}'; }
# Runs a command, prints "seconds max_rss_kib".
timed() {
  /usr/bin/time -f '%e %M' -o "$work/t" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  cat "$work/t"
}
peak_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# --- coffer server -------------------------------------------------------
"$coffer" server init --data srv >/dev/null 2>&1
# 50 benchmark clients all come from 127.0.0.1; real ones come from many
# addresses, so the per-address caps are raised for the concurrency run.
# (`init` writes every setting, so edit the lines in place.)
for setting in max_connections=256 max_connections_per_ip=128 \
  api_requests_per_window=100000 login_requests_per_window=100000; do
  sed -i "s/^${setting%%=*} = .*/${setting%%=*} = ${setting#*=}/" srv/config.toml
done
grep -q '^max_connections_per_ip = 128' srv/config.toml || { echo "config.toml: limits not set" >&2; exit 1; }
"$coffer" keygen -o alice.id >/dev/null 2>&1
"$coffer" server user add alice --key "$("$coffer" pubkey -i alice.id 2>/dev/null)" --data srv >/dev/null 2>&1
# The concurrent clients are users of their own, each with its own home:
# one user's unfinished uploads are capped (max_open_uploads_per_user, 16),
# so one user's 50 puts at once mostly wait out 429s (measured as well).
for i in $(seq "$clients"); do
  "$coffer" keygen -o "c$i.id" >/dev/null 2>&1
  "$coffer" server user add "c$i" --key "$("$coffer" pubkey -i "c$i.id" 2>/dev/null)" --data srv >/dev/null 2>&1
done
start_server() {
  port=$(free_port)
  "$coffer" server run --listen "127.0.0.1:$port" --data srv 2>server.log &
  server_pid=$!
  for _ in $(seq 100); do grep -q listening server.log 2>/dev/null && break; sleep 0.1; done
  fp=$(openssl x509 -in srv/tls/cert.pem -outform der | openssl dgst -sha256 -binary | base64 | tr -d '=')
  "$coffer" login "https://127.0.0.1:$port" --user alice -i alice.id --fingerprint "SHA256:$fp" -q
}
stop_server() { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""; }

# --- sshd -----------------------------------------------------------------
mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N '' -f host_key
ssh-keygen -q -t ed25519 -N '' -f client_key
cp client_key.pub authorized_keys
ssh_port=$(free_port)
cat > sshd_config <<CFG
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $work/host_key
AuthorizedKeysFile $work/authorized_keys
PidFile $work/sshd.pid
StrictModes no
UsePAM no
PasswordAuthentication no
Subsystem sftp /usr/lib/openssh/sftp-server
CFG
/usr/sbin/sshd -f "$work/sshd_config" -D -E "$work/sshd.log" &
sshd_pid=$!
sleep 0.5
scp_opts=(-q -c aes256-gcm@openssh.com -P "$ssh_port" -i client_key
  -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes)

run_coffer() { # file -> prints "put_s get_s client_rss_kib"
  local file=$1 put get id
  rm -rf out && mkdir out
  put=$(/usr/bin/time -f '%e %M' -o t.put "$coffer" put "$file" --json -q)
  id=$(sed -E 's/.*"id":"([0-9a-f]+)".*/\1/' <<<"$put")
  timed "$coffer" get "$id" -o out -q > t.get
  cmp -s "$file" "out/$(basename "$file")" || { echo "coffer round trip differs" >&2; exit 1; }
  "$coffer" rm "$id" -q
  echo "$(cut -d' ' -f1 t.put) $(cut -d' ' -f1 t.get) $(cat t.put t.get | awk '{print $2}' | sort -n | tail -1)"
}
run_scp() { # file -> prints "up_s down_s"
  local file=$1 up down
  rm -f remote.bin back.bin; sync
  up=$(timed sh -c "scp ${scp_opts[*]} '$file' 'root@127.0.0.1:$work/remote.bin' && sync" | cut -d' ' -f1)
  down=$(timed sh -c "scp ${scp_opts[*]} 'root@127.0.0.1:$work/remote.bin' back.bin && sync" | cut -d' ' -f1)
  cmp -s "$file" back.bin || { echo "scp round trip differs" >&2; exit 1; }
  echo "$up $down"
}

# --- nginx: plain HTTPS, no end-to-end encryption ------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -keyout nginx.key -out nginx.crt 2>/dev/null
mkdir -p www/up nginx-tmp
nginx_port=$(free_port)
# Workers as this user, so they may write into the scratch directory (as
# root, nginx would drop them to nobody).
cat > nginx.conf <<CFG
user $(id -un) $(id -gn);
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
daemon off;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  client_body_temp_path $work/nginx-tmp;
  server {
    listen 127.0.0.1:$nginx_port ssl;
    ssl_certificate $work/nginx.crt;
    ssl_certificate_key $work/nginx.key;
    ssl_protocols TLSv1.3;
    root $work/www;
    client_max_body_size 0;
    location /up/ { dav_methods PUT; create_full_put_path on; }
  }
}
CFG
nginx -c "$work/nginx.conf" &
nginx_pid=$!
sleep 0.5
curl_opts=(-sS --fail --tlsv1.3 --cacert nginx.crt)
run_nginx() { # file -> prints "up_s down_s"
  local file=$1 up down
  rm -f www/up/remote.bin back.bin; sync
  up=$(timed sh -c "curl ${curl_opts[*]} -T '$file' https://localhost:$nginx_port/up/remote.bin && sync" | cut -d' ' -f1)
  down=$(timed sh -c "curl ${curl_opts[*]} -o back.bin https://localhost:$nginx_port/up/remote.bin && sync" | cut -d' ' -f1)
  cmp -s "$file" back.bin || { echo "nginx round trip differs" >&2; exit 1; }
  echo "$up $down"
}

bytes=$((size_mib * 1048576))
head -c "$bytes" /dev/urandom > in.bin
head -c $((64 * 1048576)) /dev/urandom > small.bin

start_server
: > coffer.txt; : > scp.txt; : > nginx.txt
for _ in $(seq "$runs"); do
  run_coffer in.bin >> coffer.txt
  run_scp in.bin >> scp.txt
  run_nginx in.bin >> nginx.txt
done
server_peak_big=$(peak_kib "$server_pid")

# --- CPU per direction: where the time goes ---------------------------------
# One more transfer each, with the CPU seconds of both ends: the client from
# /usr/bin/time (it and its children), the server side from /proc (user +
# system of the processes given and of their reaped children: sshd's
# per-connection processes, nginx's workers).
hz=$(getconf CLK_TCK)
ticks() {
  local pid sum=0
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] && sum=$((sum + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat")))
  done
  echo "$sum"
}
accounted() { # "server pids" command... -> "client_cpu_s server_cpu_s"; stdout in $work/stdout.txt
  local pids=$1 before after; shift
  before=$(ticks $pids)
  /usr/bin/time -f '%U %S' -o "$work/c" "$@" > "$work/stdout.txt" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  after=$(ticks $pids)
  awk -v b="$before" -v a="$after" -v hz="$hz" '{printf "%.2f %.2f", $1 + $2, (a - b) / hz}' "$work/c"
}
cpu_put=$(accounted "$server_pid" "$coffer" put in.bin --json -q)
cpu_id=$(sed -E 's/.*"id":"([0-9a-f]+)".*/\1/' "$work/stdout.txt")
rm -rf out && mkdir out
cpu_get=$(accounted "$server_pid" "$coffer" get "$cpu_id" -o out -q)
rm -f remote.bin back.bin; sync
cpu_scp_up=$(accounted "$sshd_pid" scp "${scp_opts[@]}" in.bin "root@127.0.0.1:$work/remote.bin")
cpu_scp_down=$(accounted "$sshd_pid" scp "${scp_opts[@]}" "root@127.0.0.1:$work/remote.bin" back.bin)
nginx_pids="$nginx_pid $(pgrep -P "$nginx_pid" | tr '\n' ' ' || true)"
rm -f www/up/remote.bin back.bin
cpu_nginx_up=$(accounted "$nginx_pids" curl "${curl_opts[@]}" -T in.bin "https://localhost:$nginx_port/up/remote.bin")
cpu_nginx_down=$(accounted "$nginx_pids" curl "${curl_opts[@]}" -o back.bin "https://localhost:$nginx_port/up/remote.bin")
# And what the busiest ends spend it on, if perf is here: the server
# receiving a put, the client of a get.
top_symbols() { perf report -i "$1" --no-children --sort dso,sym --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | head -8 || true; }
if command -v perf >/dev/null 2>&1; then
  perf record -q -F 499 -p "$server_pid" -o srv.perf 2>/dev/null & perf_pid=$!
  sleep 0.2
  put=$("$coffer" put in.bin --json -q)
  kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
  id=$(sed -E 's/.*"id":"([0-9a-f]+)".*/\1/' <<<"$put")
  rm -rf out && mkdir out
  perf record -q -F 499 -o get.perf "$coffer" get "$id" -o out -q 2>/dev/null >/dev/null
  "$coffer" rm "$id" -q
fi
"$coffer" rm "$cpu_id" -q

# --- CLIENTS concurrent puts of 10 MiB each --------------------------------
for i in $(seq "$clients"); do
  head -c $((10 * 1048576)) /dev/urandom > "c$i.bin"
  COFFER_HOME="$work/home-c$i" "$coffer" login "https://127.0.0.1:$port" --user "c$i" -i "c$i.id" --fingerprint "SHA256:$fp" -q
done
sync
# Runs CLIENTS puts at once, the i-th with home_of i; prints "seconds
# errors refusals" (refusals: requests the server answered 429, waited out).
concurrent_puts() {
  local home_of=$1 started ended i client_pids=() refused
  rm -f c*.rc
  refused=$(grep -c 'status=429' server.log || true)
  started=$(date +%s.%N)
  for i in $(seq "$clients"); do
    ( COFFER_HOME=$($home_of "$i") "$coffer" put "c$i.bin" -q --json > "c$i.out" 2> "c$i.err"; echo $? > "c$i.rc" ) &
    client_pids+=($!)
  done
  # Only the clients: a bare `wait` would also wait for the servers.
  wait "${client_pids[@]}"
  ended=$(date +%s.%N)
  refused=$(( $(grep -c 'status=429' server.log || true) - refused ))
  awk -v a="$started" -v b="$ended" -v e="$(cat c*.rc | grep -vc '^0$' || true)" -v r="$refused" 'BEGIN {print b - a, e, r}'
}
own_home() { echo "$work/home-c$1"; }
alices_home() { echo "$COFFER_HOME"; }
# RUNS rounds of each, alternating; the median time, and the errors of all.
: > conc.txt; : > one_user.txt
for _ in $(seq "$runs"); do
  concurrent_puts own_home >> conc.txt
  concurrent_puts alices_home >> one_user.txt
done
conc_s=$(cut -d' ' -f1 conc.txt | median); errors=$(awk '{e += $2} END {print e}' conc.txt)
one_user_s=$(cut -d' ' -f1 one_user.txt | median); one_user_errors=$(awk '{e += $2} END {print e}' one_user.txt)
one_user_refused=$(awk '{r += $3} END {print r}' one_user.txt); conc_refused=$(awk '{r += $3} END {print r}' conc.txt)
stop_server
start_server
small=$(run_coffer small.bin)
server_peak_small=$(peak_kib "$server_pid")
stop_server

put_s=$(cut -d' ' -f1 coffer.txt | median); get_s=$(cut -d' ' -f2 coffer.txt | median)
client_peak=$(cut -d' ' -f3 coffer.txt | sort -n | tail -1)
up_s=$(cut -d' ' -f1 scp.txt | median); down_s=$(cut -d' ' -f2 scp.txt | median)
nup_s=$(cut -d' ' -f1 nginx.txt | median); ndown_s=$(cut -d' ' -f2 nginx.txt | median)

echo "transfer of ${size_mib} MiB on loopback, median of $runs runs ($(nproc) cores)"
printf '%-34s %8s %8s %10s\n' "" "up MB/s" "down MB/s" "both MB/s"
printf '%-34s %8s %8s %10s\n' "coffer put / get (E2EE, fsync)" "$(mbps "$bytes" "$put_s")" "$(mbps "$bytes" "$get_s")" \
  "$(mbps $((2 * bytes)) "$(awk -v a="$put_s" -v b="$get_s" 'BEGIN {print a + b}')")"
printf '%-34s %8s %8s %10s\n' "scp -c aes256-gcm + sync" "$(mbps "$bytes" "$up_s")" "$(mbps "$bytes" "$down_s")" \
  "$(mbps $((2 * bytes)) "$(awk -v a="$up_s" -v b="$down_s" 'BEGIN {print a + b}')")"
printf '%-34s %8s %8s %10s\n' "nginx + curl, TLS 1.3, + sync" "$(mbps "$bytes" "$nup_s")" "$(mbps "$bytes" "$ndown_s")" \
  "$(mbps $((2 * bytes)) "$(awk -v a="$nup_s" -v b="$ndown_s" 'BEGIN {print a + b}')")"
awk -v p="$put_s" -v g="$get_s" -v u="$up_s" -v d="$down_s" 'BEGIN {
  printf "ratio coffer/scp:   up %.2fx, down %.2fx (goal >= 3x each)\n", u / p, d / g }'
awk -v p="$put_s" -v g="$get_s" -v u="$nup_s" -v d="$ndown_s" 'BEGIN {
  printf "ratio coffer/nginx: up %.2fx, down %.2fx (goal > 1 each)\n", u / p, d / g }'
awk -v n="$clients" -v s="$conc_s" -v e="$errors" -v p="$put_s" -v b="$bytes" 'BEGIN {
  agg = n * 10 * 1048576 / 1e6 / s; one = b / 1e6 / p
  printf "%d clients (users of their own) each putting 10 MiB at once, median of '"$runs"': %d errors, %.2f s, aggregate %.0f MB/s = %.0f%% of one stream (goal: 0 errors, >= 80%%)\n", n, e, s, agg, 100 * agg / one }'
awk -v n="$clients" -v s="$one_user_s" -v e="$one_user_errors" -v p="$put_s" -v b="$bytes" -v r="$one_user_refused" -v rc="$conc_refused" -v k="$runs" 'BEGIN {
  agg = n * 10 * 1048576 / 1e6 / s; one = b / 1e6 / p
  printf "one user putting %d x 10 MiB at once (16 unfinished uploads per user; more wait out 429s): %d errors, %.2f s, aggregate %.0f MB/s = %.0f%%; 429s in %d rounds: %d (%d for the %d users)\n", n, e, s, agg, 100 * agg / one, k, r, rc, n }'
echo "peak RSS, ${size_mib} MiB: client $((client_peak / 1024)) MiB, server $((server_peak_big / 1024)) MiB (goal <= 64 MiB each)"
echo "peak RSS, 64 MiB:   client $(( $(cut -d' ' -f3 <<<"$small") / 1024)) MiB, server $((server_peak_small / 1024)) MiB"
read -r pc ps <<<"$cpu_put"; read -r gc gs <<<"$cpu_get"
read -r suc sus <<<"$cpu_scp_up"; read -r sdc sds <<<"$cpu_scp_down"
read -r nuc nus <<<"$cpu_nginx_up"; read -r ndc nds <<<"$cpu_nginx_down"
echo "CPU seconds of one ${size_mib} MiB transfer, client + server side ($(nproc) cores; wall time is at least the sum / cores):"
printf '  %-28s up %5s + %5s = %5s    down %5s + %5s = %5s\n' \
  "coffer (E2EE + TLS)" "$pc" "$ps" "$(awk -v a="$pc" -v b="$ps" 'BEGIN {print a + b}')" \
  "$gc" "$gs" "$(awk -v a="$gc" -v b="$gs" 'BEGIN {print a + b}')" \
  "scp (ssh + sshd)" "$suc" "$sus" "$(awk -v a="$suc" -v b="$sus" 'BEGIN {print a + b}')" \
  "$sdc" "$sds" "$(awk -v a="$sdc" -v b="$sds" 'BEGIN {print a + b}')" \
  "nginx + curl (TLS only)" "$nuc" "$nus" "$(awk -v a="$nuc" -v b="$nus" 'BEGIN {print a + b}')" \
  "$ndc" "$nds" "$(awk -v a="$ndc" -v b="$nds" 'BEGIN {print a + b}')"
if [ -f srv.perf ]; then
  echo "where the server's CPU goes receiving a put (perf, top symbols):"
  top_symbols srv.perf
  echo "where the client's CPU goes in a get (perf, top symbols):"
  top_symbols get.perf
fi
