#!/usr/bin/env bash
# HTTPS `/new` and autoconfig: `relay dev --io epoll`, `relay dev --io uring` and Debian's nginx
# (+ fcgiwrap running a CGI script like the reference's newemail.py) serving the same files, in one
# sitting: alternating rounds, medians and ratios, and the memory of idle keep-alive connections.
# Bounded: about 10 minutes with the defaults (plus the release build). Loopback only.
#
#   tools/http-compare.sh                                  # all three, 5 rounds
#   BENCH_TARGETS="epoll nginx" BENCH_ROUNDS=3 tools/http-compare.sh
#   BENCH_RELAY=/path/to/relay BENCH_HTTPBENCH=/path/to/httpbench tools/http-compare.sh  # no cargo
#
# The nginx anchor (the reference's `nginx.conf.j2`, HTTPS part, as far as it concerns these two
# URLs): `user www-data`, `worker_processes auto`, TLS 1.2/1.3 with a self-signed EC P-256
# certificate (the kind `relay dev` makes), HTTP/1.1 keep-alive (nginx's defaults: 1,000 requests,
# 75 s), `sendfile`, `gzip on`; the autoconfig XML is the relay's own answer saved as a static file
# (`try_files`); `/new` goes through `limit_req` (2 r/s per source with a burst of 10^9 that no run
# exhausts, as the relay's `new_limit_burst` here: both check it on every request) and fastcgi to
# fcgiwrap (Debian's unit runs one process: `-f`, no `-c`) running newemail.py, a Python
# CGI script that reads a small ini per request and prints the reference's JSON. Differences on
# purpose, all in nginx's favour: no access log (the reference logs every request to syslog), no
# `stream` ALPN hop in front (the reference proxies port 443 through `ssl_preread` to port 8443;
# the relay does that dispatch itself on its HTTPS port), and the CGI script imports only the
# standard library (the reference's imports the chatmaild package).
#
# Scenarios (one httpbench run each; JSON in $BENCH_OUT/<target>-<scenario>-r<round>.json):
#   autoconfig  GET /.well-known/autoconfig/mail/config-v1.1.xml, closed loop, $BENCH_CONNS (32)
#               keep-alive connections, $BENCH_DURATION (5) s
#   new         POST /new, the same
#   newrate     POST /new at $BENCH_NEW_RATE (5) req/s from 4 connections: latency below
#               saturation (fcgiwrap forks a Python interpreter per request)
#   idle        $BENCH_IDLE (5000) connections, one autoconfig GET each, then idle: server RSS
#               growth per connection (relay: its process; nginx: master + workers). Measured
#               first, on fresh servers. The relay closes keep-alive connections idle for 20 s
#               (nginx: 75 s), so set-up plus $BENCH_IDLE_SETTLE (2) s must stay below that; the
#               run reports connections closed before the reading.
# BENCH_TABLE_ONLY=1 prints the table of the run in $BENCH_OUT again without measuring.
# Knobs: BENCH_TARGETS (epoll uring nginx), BENCH_ROUNDS (5), BENCH_FCGI_CHILDREN (unset: Debian's
# one process), BENCH_OUT (target/http-compare), ports 18443 (epoll), 19443 (uring), 20443
# (nginx; other relay listeners on 18xxx/19xxx).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGETS=${BENCH_TARGETS:-epoll uring nginx}
ROUNDS=${BENCH_ROUNDS:-5}
DURATION=${BENCH_DURATION:-5}
CONNS=${BENCH_CONNS:-32}
NEW_RATE=${BENCH_NEW_RATE:-5}
IDLE=${BENCH_IDLE:-5000}
IDLE_SETTLE=${BENCH_IDLE_SETTLE:-2}
OUT=${BENCH_OUT:-$ROOT/target/http-compare}
HTTPBENCH=${BENCH_HTTPBENCH:-$ROOT/target/release/httpbench}
RELAY=${BENCH_RELAY:-$ROOT/target/release/relay}
NGINX_PORT=20443
AUTOCONFIG=/.well-known/autoconfig/mail/config-v1.1.xml
# The per-source limit of /new stays 2 a second, with a burst no run exhausts (both servers check
# it on every request, as in production).
NEW_BURST=1000000000
mkdir -p "$OUT"
log() { echo "[http-compare] $*" >&2; }
if [ "${BENCH_TABLE_ONLY:-0}" != 1 ]; then
rm -f "$OUT"/*.json "$OUT"/*.txt "$OUT"/*.log "$OUT"/meta.env
# Every idle connection is a descriptor in httpbench and in the server.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ $((IDLE + 1024)) -gt "$(ulimit -n)" ]; then
  IDLE=$(( $(ulimit -n) - 1024 ))
  log "RLIMIT_NOFILE is $(ulimit -n): measuring $IDLE idle connections"
fi

if [ -z "${BENCH_RELAY:-}${BENCH_HTTPBENCH:-}" ]; then
  log "building relay and httpbench (release)"
  timeout 3000 cargo build --release --locked -p relay -p relay-tools >&2
fi
case " $TARGETS " in *" nginx "*)
  if ! command -v nginx >/dev/null || ! command -v fcgiwrap >/dev/null; then
    log "installing nginx and fcgiwrap (Debian packages)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx fcgiwrap >&2 ||
      { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx fcgiwrap >&2; }
  fi
esac

# ------------------------------------------------------------------------------ processes
work=$(mktemp -d /tmp/http-compare.XXXXXX)
chmod 755 "$work"   # nginx workers and the CGI script run as www-data
declare -A pid_of=()
stop_pid() { # stop_pid <pid>: TERM, wait up to 5 s, KILL
  local p=$1
  kill "$p" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
}
cleanup() {
  local t p c children
  for t in "${!pid_of[@]}"; do
    p=${pid_of[$t]}
    # fcgiwrap -c N forks N children and replaces any that dies: note them, stop the parent,
    # then them. nginx's master stops its workers itself.
    children=""
    [ "$t" = fcgiwrap ] && children=$(pgrep -P "$p" 2>/dev/null || true)
    stop_pid "$p"
    for c in $children; do stop_pid "$c"; done
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

listening() { ss -ltn "sport = :$1" | grep -q LISTEN; }
port_of() { case $1 in epoll) echo 18443;; uring) echo 19443;; nginx) echo "$NGINX_PORT";; esac; }

start_relay() { # start_relay epoll|uring
  local io=$1 p
  p=$(port_of "$io"); p=${p%443}
  listening "${p}443" && { log "port ${p}443 is taken"; return 1; }
  mkdir -p "$work/relay-$io"
  "$RELAY" dev --io "$io" --data "$work/relay-$io" \
    --set https_port="${p}443" --set http_port="${p}080" --set mx_port="${p}025" \
    --set smtp_port="${p}587" --set smtps_port="${p}465" \
    --set imap_port="${p}143" --set imaps_port="${p}993" \
    --set new_limit_burst="$NEW_BURST" \
    --set max_smtp_connections=100000 \
    --set max_new_connections_per_minute=100000000 --set new_connections_burst=100000000 \
    --set max_load_1m=1000 --set min_available_memory=1 --set min_free_disk_space=1 \
    >"$OUT/$io-relay.log" 2>&1 &
  pid_of[$io]=$!
  for _ in $(seq 100); do listening "${p}443" && break; sleep 0.1; done
  if ! kill -0 "${pid_of[$io]}" 2>/dev/null || ! listening "${p}443"; then
    log "$io: relay did not start (see $OUT/$io-relay.log)"; return 1
  fi
}

start_nginx() {
  local www=$work/www ini=$work/chatmail.ini source_port
  listening "$NGINX_PORT" && { log "port $NGINX_PORT is taken"; return 1; }
  # fcgiwrap (as www-data) binds its socket in a folder of its own.
  mkdir -p "$work/fcgi" && chown www-data:www-data "$work/fcgi"
  # The same autoconfig document: the relay's answer, byte for byte (from whichever relay runs).
  mkdir -p "$www/.well-known/autoconfig/mail" "$work/tmp"
  for t in epoll uring; do
    [ -n "${pid_of[$t]:-}" ] && { source_port=$(port_of "$t"); break; }
  done
  if [ -n "${source_port:-}" ]; then
    curl -sfk "https://127.0.0.1:$source_port$AUTOCONFIG" -o "$www$AUTOCONFIG" || return 1
  else
    log "no relay running: serving a stand-in autoconfig file"
    head -c 1400 /dev/zero | tr '\0' x >"$www$AUTOCONFIG"
  fi
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null || return 1
  # As the reference's chatmail.ini for a self-signed relay at 127.0.0.1 (what `relay dev` is).
  printf '[params]\nmail_domain = [127.0.0.1]\nusername_max_length = 9\npassword_min_length = 9\ntls_cert = self\n' >"$ini"
  cat >"$work/newemail.py" <<EOF
#!/usr/bin/python3
"""CGI for POST /new (nginx anchor of tools/http-compare.sh): fresh credentials as JSON, with the
reference relay's lengths and alphabets; reads its configuration on every request, as the
reference's script does."""
import configparser
import json
import random
import secrets
import string
import sys
from urllib.parse import quote

ini = configparser.ConfigParser(interpolation=None)
ini.read("$ini")
params = ini["params"]
user = "".join(
    random.choices(string.ascii_lowercase + string.digits, k=int(params["username_max_length"]))
)
alphabet = string.ascii_letters + string.digits + string.punctuation
password = "".join(
    secrets.choice(alphabet) for _ in range(int(params["password_min_length"]) + 3)
)
email = user + "@" + params["mail_domain"]
answer = {"email": email, "password": password}
if params.get("tls_cert") == "self":
    answer["dclogin_url"] = (
        "dclogin:" + quote(email, safe="") + "?p=" + quote(password, safe="") + "&v=1&ic=3&sc=3"
    )
sys.stdout.write("Content-Type: application/json\n\n" + json.dumps(answer) + "\n")
EOF
  chmod 755 "$work/newemail.py"
  cat >"$work/nginx.conf" <<EOF
user www-data;
worker_processes auto;
worker_rlimit_nofile $(ulimit -n);
pid $work/nginx.pid;
error_log $work/error.log warn;
events {
    worker_connections $(ulimit -n);
}
http {
    access_log off;
    limit_req_zone \$binary_remote_addr zone=newaccount:10m rate=2r/s;
    sendfile on;
    tcp_nopush on;
    server_tokens off;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    gzip on;
    client_body_temp_path $work/tmp/body;
    proxy_temp_path $work/tmp/proxy;
    fastcgi_temp_path $work/tmp/fastcgi;
    uwsgi_temp_path $work/tmp/uwsgi;
    scgi_temp_path $work/tmp/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT ssl default_server;
        root $www;
        index index.html;
        location / {
            try_files \$uri \$uri/ =404;
        }
        location /new {
            limit_req zone=newaccount burst=$NEW_BURST nodelay;
            fastcgi_pass unix:$work/fcgi/fcgiwrap.sock;
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $work/newemail.py;
        }
    }
}
EOF
  # fcgiwrap as Debian's unit runs it (user www-data, -f), on a socket of our own.
  local children=()
  [ -n "${BENCH_FCGI_CHILDREN:-}" ] && children=(-c "$BENCH_FCGI_CHILDREN")
  setpriv --reuid=www-data --regid=www-data --init-groups \
    /usr/sbin/fcgiwrap -f "${children[@]}" -s "unix:$work/fcgi/fcgiwrap.sock" \
    >"$OUT/fcgiwrap.log" 2>&1 &
  pid_of[fcgiwrap]=$!
  for _ in $(seq 50); do [ -S "$work/fcgi/fcgiwrap.sock" ] && break; sleep 0.1; done
  [ -S "$work/fcgi/fcgiwrap.sock" ] || { log "fcgiwrap did not start (see $OUT/fcgiwrap.log)"; return 1; }
  nginx -p "$work" -c "$work/nginx.conf" -e "$work/error.log" -g 'daemon off;' \
    >"$OUT/nginx.log" 2>&1 &
  pid_of[nginx]=$!
  for _ in $(seq 100); do listening "$NGINX_PORT" && break; sleep 0.1; done
  if ! kill -0 "${pid_of[nginx]}" 2>/dev/null || ! listening "$NGINX_PORT"; then
    log "nginx did not start (see $OUT/nginx.log, $work/error.log)"; cat "$work/error.log" >&2 || true
    return 1
  fi
  # The same bytes from both: a stale or missing file would measure a 404.
  curl -sfk "https://127.0.0.1:$NGINX_PORT$AUTOCONFIG" -o /dev/null || { log "nginx: autoconfig not served"; return 1; }
  curl -sfk -X POST "https://127.0.0.1:$NGINX_PORT/new" | grep -q '"password"' ||
    { log "nginx: /new does not answer credentials (see $work/error.log)"; return 1; }
}

# Processes whose memory counts as the server's.
server_pids() {
  local p=${pid_of[$1]}
  echo "$p"
  [ "$1" = nginx ] && pgrep -P "$p"
  return 0
}

httpbench() { # httpbench <target> <name> <args...>: one run; JSON to $OUT, output beside it
  local target=$1 name=$2; shift 2
  log "$target: $name"
  if ! timeout 600 "$HTTPBENCH" "$@" --port "$(port_of "$target")" --json "$OUT/$target-$name.json" \
      >"$OUT/$target-$name.txt" 2>"$OUT/$target-$name.log"; then
    log "$target: $name failed (see $OUT/$target-$name.log)"
    rm -f "$OUT/$target-$name.json"
  fi
}

# ------------------------------------------------------------------------------ the sitting
started_at=$(date -u '+%Y-%m-%d %H:%M UTC')
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
running=()
for t in $TARGETS; do
  case $t in
    epoll|uring) start_relay "$t" && running+=("$t") ;;
    nginx) ;;
    *) log "unknown target $t (epoll, uring, nginx)" ;;
  esac
done
case " $TARGETS " in *" nginx "*) start_nginx && running+=(nginx) ;; esac
[ ${#running[@]} -gt 0 ] || { log "nothing to measure"; exit 1; }
log "running: ${running[*]}; load average $load_start"

# Idle memory first, on fresh servers.
for t in "${running[@]}"; do
  pids=()
  for p in $(server_pids "$t"); do pids+=(--server-pid "$p"); done
  httpbench "$t" idle idle --connections "$IDLE" --per-source 100 --settle "$IDLE_SETTLE" "${pids[@]}"
  sleep 2   # let the server close the connections before the next
done

for r in $(seq "$ROUNDS"); do
  order=("${running[@]}")
  if [ $((r % 2)) = 0 ]; then   # every other round backwards: drift hits every target alike
    order=(); for ((i=${#running[@]}-1; i>=0; i--)); do order+=("${running[$i]}"); done
  fi
  for t in "${order[@]}"; do
    httpbench "$t" "autoconfig-r$r" --connections "$CONNS" --duration "$DURATION" --path "$AUTOCONFIG"
    httpbench "$t" "new-r$r" --connections "$CONNS" --duration "$DURATION" --method POST --path /new
    httpbench "$t" "newrate-r$r" --connections 4 --rate "$NEW_RATE" --duration "$DURATION" \
      --method POST --path /new
  done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------------------------ table
cat >"$OUT/meta.env" <<EOF
started_at='$started_at'
load_start='$load_start'
load_end='$load_end'
about='relay $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown), $(nginx -v 2>&1 | sed 's/.*: //'); $ROUNDS rounds of $DURATION s, $CONNS connections (closed loop), /new at $NEW_RATE req/s; idle: $IDLE connections'
EOF
fi
# shellcheck disable=SC1091 # written above, or by the run being tabulated
. "$OUT/meta.env"

files() { ls "$OUT/$1-$2"-r[0-9]*.json 2>/dev/null || true; } # the rounds of one target and scenario
value() { jq -r "($2) // empty" "$1" 2>/dev/null || true; }
median_of() { sort -g | awk '{v[NR]=$1} END{if (NR%2) print v[(NR+1)/2]; else if (NR) print (v[NR/2]+v[NR/2+1])/2}'; }
median() { # median <target> <scenario> <jq expression>: over the rounds
  for f in $(files "$1" "$2"); do value "$f" "$3"; done | median_of
}
total() { # total <target> <scenario> <jq expression>: summed over the rounds
  for f in $(files "$1" "$2"); do value "$f" "$3"; done | awk '{s+=$1} END{if (NR) print s}'
}
single() { local f="$OUT/$1-$2.json"; [ -f "$f" ] && value "$f" "$3"; return 0; }
# ratio_rounds <a> <b> <scenario> <jq expression>: the median of a/b taken round by round (the
# runs of one round are minutes apart at most, so the machine's drift cancels better than in the
# ratio of the medians).
ratio_rounds() {
  local f a b
  for f in $(files "$1" "$3"); do
    a=$(value "$f" "$4"); b=$(value "${f/\/$1-/\/$2-}" "$4")
    [ -n "$a" ] && [ -n "$b" ] && awk "BEGIN{if ($b != 0) print $a / $b}"
  done | median_of
}
rows=(
  "median|autoconfig|.requests_per_s|autoconfig req/s (closed loop)"
  "median|autoconfig|.latency.p50_ms|autoconfig p50 ms"
  "median|autoconfig|.latency.p99_ms|autoconfig p99 ms"
  "median|autoconfig|.latency.p999_ms|autoconfig p999 ms"
  "median|autoconfig|.response_bytes_mean|autoconfig response bytes"
  "median|new|.requests_per_s|/new req/s (closed loop)"
  "median|new|.latency.p50_ms|/new p50 ms"
  "median|new|.latency.p99_ms|/new p99 ms"
  "median|new|.latency.p999_ms|/new p999 ms"
  "median|new|.response_bytes_mean|/new response bytes"
  "median|newrate|.latency.p50_ms|/new p50 ms at a low fixed rate"
  "median|newrate|.latency.p99_ms|/new p99 ms at a low fixed rate"
  "total|autoconfig|(.responses - (.statuses[\"200\"] // 0)) + .errors_total|autoconfig non-200 + errors (all rounds)"
  "total|new|(.responses - (.statuses[\"200\"] // 0)) + .errors_total|/new non-200 + errors (all rounds)"
  "total|newrate|(.responses - (.statuses[\"200\"] // 0)) + .errors_total|/new at the low rate: non-200 + errors"
  "single|idle|.idle|idle connections at the reading"
  "single|idle|.closed_by_server|idle connections closed before the reading"
  "single|idle|.setup_s|idle set-up s"
  "single|idle|.server_rss_per_connection_kib|server RSS KiB per idle connection"
  "single|idle|.server_pss_per_connection_kib|server PSS KiB per idle connection"
)
fmt() { if [ -n "$1" ]; then printf '%.2f' "$1"; else printf -- '-'; fi; }
ratio() { if [ -n "$1" ] && [ -n "$2" ] && awk "BEGIN{exit !($2 != 0)}"; then awk "BEGIN{printf \"%.3g\", $1 / $2}"; else printf -- '-'; fi; }
{
  echo "date: $started_at; machine: $(nproc) cores, kernel $(uname -r); load average $load_start at the start, $load_end at the end"
  echo "$about; relay/nginx ratios of rows with medians: median of the per-round ratios"
  printf '| %-48s | %10s | %10s | %10s | %11s | %11s |\n' metric epoll uring nginx epoll/nginx uring/nginx
  printf '|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..50})" ------------ ------------ ------------ ------------- -------------
  for row in "${rows[@]}"; do
    IFS='|' read -r how scen expr label <<<"$row"
    e=$("$how" epoll "$scen" "$expr"); u=$("$how" uring "$scen" "$expr"); n=$("$how" nginx "$scen" "$expr")
    case $how in
      median) re=$(ratio "$(ratio_rounds epoll nginx "$scen" "$expr")" 1)
              ru=$(ratio "$(ratio_rounds uring nginx "$scen" "$expr")" 1) ;;
      single) re=$(ratio "$e" "$n"); ru=$(ratio "$u" "$n") ;;
      *) re=-; ru=- ;;
    esac
    printf '| %-48s | %10s | %10s | %10s | %11s | %11s |\n' "$label" "$(fmt "$e")" "$(fmt "$u")" "$(fmt "$n")" "$re" "$ru"
  done
} | tee "$OUT/table.md"
