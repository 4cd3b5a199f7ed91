#!/usr/bin/env bash
# Relay to relay on loopback: users of relay A submit at A, users of relay B receive at B in IDLE,
# A's delivery engine carries every message to B (HTTPS `/mxdeliv` on 443, SMTP on 25 after it).
# Two pairs of release-build `relay dev` processes, each relay on a loopback address of its own
# with its listeners on the standard ports (other relays deliver to 25 and 443), all four up for
# the whole sitting, data under one temporary directory:
#
#   named    _fa.test (127.79.0.1) -> _fb.test (127.79.0.2): A signs (DKIM, RSA-2048), B looks
#            A's key up and verifies; A, MX and DKIM TXT records (TTL 3600) from the DNS server
#            tools/examples/fed_dns.rs on 127.0.0.1
#   literal  [127.79.0.3] -> [127.79.0.4]: IP-literal relays, no DKIM either way
#   baseline Postfix + Dovecot (../shared/tools/baseline-up.sh), LOCAL delivery only: there is
#            no second Postfix to relay to, so its figures are one server's submission ->
#            mailbox, the lower bound of what a relay-to-relay hop through two of them costs
#
# Scenarios, per target and round (rounds alternate the order of named and literal):
#   latency     --rate $FED_RATE (200) msgs/s for $FED_DURATION (10) s, 4 senders at A, 4 IDLE
#               receivers at B: end of DATA at A -> `* n EXISTS` at B (and -> body fetched)
#   local       the same at A alone (A's users to A's users): the part of it that is not
#               federation (one commit, the IDLE wake-up)
#   throughput  closed loop, $FED_SENDERS (16) senders at A, $FED_RECEIVERS (8) receivers at B,
#               $FED_MESSAGES (3000) messages: delivered at B per second (send start -> last
#               fetched), and the CPU time of A and B per message (/proc/PID/stat)
# The table gives the median of $FED_ROUNDS (3) rounds per cell and the median of the per-round
# ratios named/literal (measured minutes apart, they suffer less from the machine's drift).
#
#   tools/fed-bench.sh
#   FED_ROUNDS=5 FED_TARGETS="named literal" tools/fed-bench.sh
#   FED_RELAY=/path/relay FED_LOADGEN=/path/loadgen FED_DNS=/path/fed_dns tools/fed-bench.sh  # no cargo
#   FED_TABLE_ONLY=1 tools/fed-bench.sh          # print the table of the last sitting again
#
# Output: $FED_OUT (target/fed-bench)/table.md, the loadgen JSON of every run and the relays' logs
# beside it. Needs root (ports 25, 443, 80, ...). Everything stays on loopback; the relays and the
# DNS server are stopped by PID on exit, also on Ctrl-C.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SHARED_TOOLS=${SHARED_TOOLS:-$ROOT/../shared/tools}
TARGETS=${FED_TARGETS:-named literal baseline}
ROUNDS=${FED_ROUNDS:-3}
RATE=${FED_RATE:-200}
DURATION=${FED_DURATION:-10}
SENDERS=${FED_SENDERS:-16}
RECEIVERS=${FED_RECEIVERS:-8}
MESSAGES=${FED_MESSAGES:-3000}
SIZE=${FED_SIZE:-1024}
IO=${FED_IO:-epoll}
NET=${FED_NET:-127.79.0}
OUT=${FED_OUT:-$ROOT/target/fed-bench}
RELAY=${FED_RELAY:-$ROOT/target/release/relay}
LOADGEN=${FED_LOADGEN:-$ROOT/target/release/loadgen}
DNS=${FED_DNS:-$ROOT/target/release/examples/fed_dns}
log() { echo "[fed-bench] $*" >&2; }

# ------------------------------------------------------------------------------ table
median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) exit; if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
# val <target> <scenario> <round> <jq expression>: one figure of one run, empty if missing.
val() {
  local f="$OUT/$1-$2-$3.json"
  [ -f "$f" ] && jq -r "($4) // empty" "$f" 2>/dev/null || true
}
# med <target> <scenario> <jq expression>: the median over the rounds.
med() {
  local r
  for r in $(seq "$ROUNDS"); do val "$1" "$2" "$r" "$3"; done | median
}
# rmed <scenario> <jq expression>: the median of the per-round ratios named/literal.
rmed() {
  local r n l
  for r in $(seq "$ROUNDS"); do
    n=$(val named "$1" "$r" "$2"); l=$(val literal "$1" "$r" "$2")
    if [ -n "$n" ] && [ -n "$l" ] && awk "BEGIN{exit !($l != 0)}"; then awk "BEGIN{print $n / $l}"; fi
  done | median
}
fmt() { if [ -n "${1:-}" ]; then printf '%.*f' "${2:-2}" "$1"; else printf -- '-'; fi; }
print_table() {
  local rows=(
    "latency|.notify_latency.p50_ms|2|A -> B at $RATE msgs/s: end of DATA at A -> EXISTS at B, p50 ms"
    "latency|.notify_latency.p99_ms|2|A -> B at $RATE msgs/s: EXISTS p99 ms"
    "latency|.delivery_latency.p50_ms|2|A -> B at $RATE msgs/s: body fetched at B, p50 ms"
    "latency|.submit_latency.p50_ms|2|A -> B at $RATE msgs/s: submission at A (end of DATA -> 250), p50 ms"
    "latency|.undelivered|0|A -> B at $RATE msgs/s: undelivered"
    "latency|.errors_total|0|A -> B at $RATE msgs/s: errors"
    "local|.notify_latency.p50_ms|2|A -> A at $RATE msgs/s (no federation): EXISTS p50 ms"
    "local|.notify_latency.p99_ms|2|A -> A at $RATE msgs/s: EXISTS p99 ms"
    "throughput|.delivered_per_s|0|A -> B closed loop: delivered msgs/s"
    "throughput|.sent_per_s|0|A -> B closed loop: accepted at A, msgs/s"
    "throughput|.cpu.a_ms_per_msg|3|A -> B closed loop: A's CPU ms per message"
    "throughput|.cpu.b_ms_per_msg|3|A -> B closed loop: B's CPU ms per message"
    "throughput|.cpu.ab_cores|2|A -> B closed loop: cores busy with A and B"
    "throughput|.cpu.machine_cores|2|A -> B closed loop: cores busy, whole machine (of $(nproc))"
    "latency|.cpu.machine_cores|2|A -> B at $RATE msgs/s: cores busy, whole machine"
    "throughput|.undelivered|0|A -> B closed loop: undelivered"
    "throughput|.errors_total|0|A -> B closed loop: errors"
  )
  local row scen expr digits label n l b
  echo "date: $(cat "$OUT/started" 2>/dev/null || echo '?'); $(nproc) cores, kernel $(uname -r); $ROUNDS rounds, medians; message $SIZE B payload; I/O $IO"
  echo "load average: $(cat "$OUT/load" 2>/dev/null || echo '?')"
  echo
  echo "| metric | named (DKIM) | literal (no DKIM) | named/literal | baseline (one Postfix, local) |"
  echo "|---|---|---|---|---|"
  for row in "${rows[@]}"; do
    IFS='|' read -r scen expr digits label <<<"$row"
    n=$(med named "$scen" "$expr"); l=$(med literal "$scen" "$expr")
    b=""
    case $scen in
      latency|throughput) b=$(med baseline "$scen" "$expr");;
    esac
    case $expr in .cpu.a*|.cpu.b*) b="";; esac
    echo "| $label | $(fmt "$n" "$digits") | $(fmt "$l" "$digits") | $(fmt "$(rmed "$scen" "$expr")" 3) | $(fmt "$b" "$digits") |"
  done
  # The signing share: what DKIM adds to A's (signing) and B's (verifying) CPU per message.
  local an al bn bl
  an=$(med named throughput .cpu.a_ms_per_msg); al=$(med literal throughput .cpu.a_ms_per_msg)
  bn=$(med named throughput .cpu.b_ms_per_msg); bl=$(med literal throughput .cpu.b_ms_per_msg)
  if [ -n "$an" ] && [ -n "$al" ] && [ -n "$bn" ] && [ -n "$bl" ]; then
    echo
    awk -v an="$an" -v al="$al" -v bn="$bn" -v bl="$bl" 'BEGIN {
      printf "DKIM share of the CPU per message (named - literal): A %.3f ms of %.3f (%.0f %%), B %.3f ms of %.3f (%.0f %%), both %.0f %%\n",
        an - al, an, 100 * (an - al) / an, bn - bl, bn, 100 * (bn - bl) / bn,
        100 * ((an + bn) - (al + bl)) / (an + bn) }'
  fi
}
if [ "${FED_TABLE_ONLY:-}" = 1 ]; then print_table; exit 0; fi

# ------------------------------------------------------------------------------ set-up
[ "$(id -u)" = 0 ] || { log "needs root (the relays listen on ports 25 and 443)"; exit 1; }
for t in $TARGETS; do
  case $t in named|literal|baseline) ;; *) log "unknown target $t (named, literal, baseline)"; exit 2;; esac
done
if [ -z "${FED_RELAY:-}${FED_LOADGEN:-}${FED_DNS:-}" ]; then
  log "building relay, loadgen and fed_dns (release)"
  CARGO_INCREMENTAL=0 timeout 1800 cargo build --release --locked -p relay -p relay-tools \
    --bin relay --bin loadgen --example fed_dns >&2
fi
ulimit -n 65536 2>/dev/null || true
rm -rf "$OUT"; mkdir -p "$OUT"
date -u '+%Y-%m-%d %H:%M UTC' >"$OUT/started"
echo "$(cut -d' ' -f1-3 /proc/loadavg) at the start" >"$OUT/load"
TMP=$(mktemp -d /tmp/fed-bench.XXXXXX)

declare -A PID=()
baseline_started=0
stop_pid() { # stop_pid <pid>: TERM, then KILL after 5 s
  local p=$1
  kill "$p" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
}
cleanup() {
  local name
  for name in "${!PID[@]}"; do stop_pid "${PID[$name]}"; done
  PID=()
  if [ "$baseline_started" = 1 ]; then "$SHARED_TOOLS/baseline-down.sh" >/dev/null 2>&1 || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
# Background jobs of a script ignore SIGINT: on Ctrl-C the trap stops them by PID.
trap 'log interrupted; exit 130' INT TERM

listening() { ss -Hltn "src $1 and sport = :$2" | grep -q LISTEN; }
ip_of() { case $1 in a) echo "$NET.1";; b) echo "$NET.2";; la) echo "$NET.3";; lb) echo "$NET.4";; esac; }
domain_of() { case $1 in a) echo _fa.test;; b) echo _fb.test;; la|lb) ip_of "$1";; esac; }
for r in a b la lb; do
  if ss -Hltn "src $(ip_of "$r")" | grep -q LISTEN; then
    log "something listens on $(ip_of "$r") already (FED_NET=$NET): stop it or set FED_NET"; exit 1
  fi
done

dns_addr=""
if [[ " $TARGETS " = *" named "* ]]; then
  "$DNS" --relay "_fa.test=$(ip_of a)=$TMP/a" --relay "_fb.test=$(ip_of b)=$TMP/b" \
    >"$OUT/dns.out" 2>"$OUT/dns.log" &
  PID[dns]=$!
  for _ in $(seq 100); do grep -q '^dns_server=' "$OUT/dns.out" 2>/dev/null && break; sleep 0.1; done
  dns_addr=$(sed -n 's/^dns_server=//p' "$OUT/dns.out")
  [ -n "$dns_addr" ] || { log "the DNS server did not start (see $OUT/dns.log)"; exit 1; }
  log "DNS server on $dns_addr (pid ${PID[dns]})"
fi

start_relay() { # start_relay <a|b|la|lb>
  local r=$1 ip domain
  ip=$(ip_of "$r"); domain=$(domain_of "$r")
  # Without a DNS server (literal pairs) lookups still stay here: nothing listens on port 9.
  "$RELAY" dev --io "$IO" --data "$TMP/$r" \
    --set "listen=$ip" --set "mail_domain=$domain" --set "dns_server=${dns_addr:-127.0.0.1:9}" \
    --set mx_port=25 --set smtp_port=587 --set smtps_port=465 \
    --set imap_port=143 --set imaps_port=993 --set https_port=443 --set http_port=80 \
    --set max_user_send_per_minute=100000000 --set max_user_send_burst_size=100000000 \
    --set max_imap_connections=200000 --set max_smtp_connections=100000 \
    --set max_load_1m=1000 --set min_available_memory=1 --set min_free_disk_space=1 \
    --set max_new_connections_per_minute=100000000 --set new_connections_burst=100000000 \
    >"$OUT/relay-$r.log" 2>&1 &
  PID[$r]=$!
  for _ in $(seq 150); do
    listening "$ip" 465 && listening "$ip" 993 && listening "$ip" 443 && listening "$ip" 25 && break
    kill -0 "${PID[$r]}" 2>/dev/null || break
    sleep 0.1
  done
  if ! listening "$ip" 443; then log "relay $domain did not start (see $OUT/relay-$r.log)"; exit 1; fi
  log "relay $domain on $ip (pid ${PID[$r]})"
}
for t in $TARGETS; do
  case $t in
    named) start_relay a; start_relay b;;
    literal) start_relay la; start_relay lb;;
    baseline)
      if ! listening 127.0.0.1 2465 || ! listening 127.0.0.1 2993; then
        log "starting the baseline"
        BASELINE_NOTIFY_DELAY_MS=0 BASELINE_AUTH=any "$SHARED_TOOLS/baseline-up.sh" >&2
        baseline_started=1
      fi;;
  esac
done

# ------------------------------------------------------------------------------ runs
# CPU time of a process (user + system) and of the whole machine (every state but idle and
# iowait), in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
HZ=$(getconf CLK_TCK)

# args <target> <scenario>: loadgen's server and account arguments.
args() {
  local t=$1 scen=$2 src dst sd dd
  case $t in
    named) src=a; dst=b;;
    literal) src=la; dst=lb;;
    baseline)
      echo "--smtp-port 2465 --imap-port 2993 --server-name _baseline.test"
      echo "--accounts-pattern fl{n:07}@baseline.test"
      return;;
  esac
  [ "$scen" = local ] && dst=$src
  sd=$(domain_of "$src"); dd=$(domain_of "$dst")
  case $t in literal) sd="[$sd]"; dd="[$dd]";; esac
  echo "--host $(ip_of "$src") --imap-host $(ip_of "$dst") --smtp-port 465 --imap-port 993"
  echo "--accounts-pattern fl{n:07}@$sd --receivers-pattern fl{n:07}@$dd"
}
# shape <scenario>: load shape (accounts numbered apart per scenario, so no run sees another's mail).
shape() {
  case $1 in
    latency) echo "--first 1001 --senders 4 --receivers 4 --rate $RATE";;
    local) echo "--first 2001 --senders 4 --receivers 4 --rate $RATE";;
    throughput) echo "--first 1 --senders $SENDERS --receivers $RECEIVERS";;
  esac
}

# The baseline acknowledges into Postfix's queue: let a backlog drain before the next run.
settle() {
  [ "$1" = baseline ] || return 0
  for _ in $(seq 120); do
    postqueue -c /var/lib/baseline-mail/postfix -p 2>/dev/null | grep -q 'Mail queue is empty' && return 0
    sleep 0.5
  done
  log "baseline queue still not empty after 60 s"
}

# run <target> <scenario> <round>
run() {
  local t=$1 scen=$2 round=$3 base="$OUT/$1-$2-$3" a_pid="" b_pid="" a0 b0 m0 t0 a1 b1 m1 t1 extra
  # shellcheck disable=SC2207 # words on purpose
  local common=($(args "$t" "$scen") $(shape "$scen") --size "$SIZE")
  case $scen in
    throughput) extra=(--messages "$MESSAGES" --duration 120 --drain 120);;
    *) extra=(--duration "$DURATION" --drain 10);;
  esac
  case $t in
    named) a_pid=${PID[a]}; b_pid=${PID[b]};;
    literal) a_pid=${PID[la]}; b_pid=${PID[lb]};;
  esac
  log "round $round: $t $scen ($(cut -d' ' -f1 /proc/loadavg))"
  a0=$(cpu_ticks "${a_pid:-0}"); b0=$(cpu_ticks "${b_pid:-0}"); m0=$(machine_ticks)
  t0=$(date +%s.%N)
  if ! timeout 400 "$LOADGEN" "${common[@]}" "${extra[@]}" --json "$base.json" \
      >"$base.txt" 2>"$base.log"; then
    log "$t $scen failed (see $base.log)"; rm -f "$base.json"; settle "$t"; return 0
  fi
  t1=$(date +%s.%N); m1=$(machine_ticks)
  a1=$(cpu_ticks "${a_pid:-0}"); b1=$(cpu_ticks "${b_pid:-0}")
  # Whole run (set-up, sending, drain): A's and B's CPU per delivered message, and how many of
  # the machine's cores were busy meanwhile (every process, other jobs included).
  jq --argjson a "$((a1 - a0))" --argjson b "$((b1 - b0))" --argjson m "$((m1 - m0))" \
     --argjson hz "$HZ" --argjson wall "$(awk "BEGIN{print $t1 - $t0}")" \
     --argjson relays "$([ -n "$a_pid" ] && echo true || echo false)" '
    . + {cpu: ({wall_s: $wall, machine_cores: ($m / $hz / $wall)}
         + (if $relays then {a_s: ($a / $hz), b_s: ($b / $hz), ab_cores: (($a + $b) / $hz / $wall),
              a_ms_per_msg: (if .delivered > 0 then 1000 * $a / $hz / .delivered else null end),
              b_ms_per_msg: (if .delivered > 0 then 1000 * $b / $hz / .delivered else null end)}
            else {} end))}' \
    "$base.json" >"$base.json.tmp" && mv "$base.json.tmp" "$base.json"
  settle "$t"
}

# A short run of every shape first: accounts are created at their first login (a password
# hash each), which no measured run should include.
for t in $TARGETS; do
  for scen in latency local throughput; do
    [ "$t" = baseline ] && [ "$scen" = local ] && continue
    # shellcheck disable=SC2046 # words on purpose
    timeout 120 "$LOADGEN" $(args "$t" "$scen") $(shape "$scen" | sed "s/--rate $RATE/--rate 50/") \
      --messages 40 --duration 5 --drain 10 >"$OUT/warmup-$t-$scen.txt" 2>&1 ||
      log "warm-up $t $scen failed (see $OUT/warmup-$t-$scen.txt)"
  done
done

for round in $(seq "$ROUNDS"); do
  order=$TARGETS
  if [ $((round % 2)) = 0 ]; then order=$(echo "$TARGETS" | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for t in $order; do
    for scen in latency local throughput; do
      [ "$t" = baseline ] && [ "$scen" = local ] && continue
      run "$t" "$scen" "$round"
    done
  done
done
sed -i "s/\$/; $(cut -d' ' -f1-3 /proc/loadavg) at the end/" "$OUT/load"
print_table | tee "$OUT/table.md"
