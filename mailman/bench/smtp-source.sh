#!/usr/bin/env bash
# Benchmark (not a test): smtp-source against mailman (with a running postoffice + beanstalkd)
# and, in the same run, against Postfix's smtpd on this machine, for the ratio.
#
#   mailman/bench/smtp-source.sh [messages] [sessions]
#
# Needs: release builds of mailman and postoffice (cargo build --release -p mailman -p postoffice),
# beanstalkd, smtp-source and postfix (Debian packages). Everything listens on 127.0.0.x; Postfix
# runs as a private instance on 127.0.0.5:2526 with its own queue under the work directory,
# discards what it accepts, and is stopped at the end.
set -euo pipefail

MESSAGES=${1:-20000}
SESSIONS=${2:-20}
SIZE=4096
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$ROOT/target/release
WORK=$(mktemp -d /tmp/mailman-bench.XXXXXX)
chmod 755 "$WORK" # Postfix's daemons run as the postfix user and need to reach their queue
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -f "$WORK/pf/main.cf" ]; then postfix -c "$WORK/pf" stop >/dev/null 2>&1 || true; fi
    sleep 0.5
    rm -rf "$WORK"
}
trap cleanup EXIT

BS_PORT=11390
PO_PORT=8390
MM_PORT=2590
MM_HTTP=9390
SECRET=benchmark-secret-0123456789abcdef0123456789
FQDN=bench.mailman.test
KEY=$(printf '%s' "$FQDN" | openssl dgst -sha256 -hmac "$SECRET" | awk '{print $NF}')

mkdir -p "$WORK/binlog" "$WORK/spool"
beanstalkd -l 127.0.0.4 -p $BS_PORT -b "$WORK/binlog" -z 30000000 &
BS_PID=$!
PIDS+=($BS_PID)
HEDWIG_LISTEN=127.0.0.4:$PO_PORT HEDWIG_BEANSTALKD=127.0.0.4:$BS_PORT HEDWIG_SECRET=$SECRET \
    RUST_LOG=warn "$BIN/postoffice" &
PO_PID=$!
PIDS+=($PO_PID)
HEDWIG_LISTEN=127.0.0.4:$MM_PORT HEDWIG_HTTP_LISTEN=127.0.0.4:$MM_HTTP HEDWIG_FQDN=$FQDN \
    HEDWIG_KEY=$KEY HEDWIG_POSTOFFICE=http://127.0.0.4:$PO_PORT/ HEDWIG_SPOOL_DIR=$WORK/spool \
    HEDWIG_MAX_CONNECTIONS=200 RUST_LOG=warn "$BIN/mailman" &
MM_PID=$!
PIDS+=($MM_PID)

wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on $1:$2" >&2
    exit 1
}
wait_port 127.0.0.4 $PO_PORT
wait_port 127.0.0.4 $MM_PORT

# smtp-source: -s sessions in parallel, -m messages in all, -l body size, -d keeps the
# connection for the next message, -c counts on stdout.
run_source() { # host:port sessions messages
    local start end
    start=$(date +%s.%N)
    smtp-source -d -s "$2" -m "$3" -l $SIZE -f sender@example.com -t rcpt@example.org "$1" \
        >/dev/null
    end=$(date +%s.%N)
    echo "$start $end"
}

rate() { # messages "start end"
    awk -v n="$1" -v t="$2" 'BEGIN { split(t, a, " "); printf "%.0f", n / (a[2] - a[1]) }'
}

echo "== mailman: $MESSAGES messages of $SIZE bytes, $SESSIONS sessions"
t=$(run_source 127.0.0.4:$MM_PORT "$SESSIONS" "$MESSAGES")
MM_RATE=$(rate "$MESSAGES" "$t")
echo "mailman accepted: $MM_RATE msg/s"
echo "== mailman: 100 concurrent sessions (for peak RSS)"
t100=$(run_source 127.0.0.4:$MM_PORT 100 $((MESSAGES / 2)))
echo "mailman accepted: $(rate $((MESSAGES / 2)) "$t100") msg/s at 100 sessions"
MM_RSS=$(awk '/VmHWM/ {print $2}' "/proc/$MM_PID/status")
echo "mailman peak RSS: $((MM_RSS / 1024)) MB ($MM_RSS kB)"
sleep 1
JOBS=$(exec 3<>"/dev/tcp/127.0.0.4/$BS_PORT"; printf 'stats-tube hedwig\r\nquit\r\n' >&3; timeout 5 cat <&3 | awk '/current-jobs-ready/ {print $2}')
cpu() { awk '{printf "%.1f user + %.1f sys", $14 / 100, $15 / 100}' "/proc/$1/stat"; }
echo "CPU seconds used: mailman $(cpu $MM_PID), postoffice $(cpu $PO_PID), beanstalkd $(cpu $BS_PID)"
echo "jobs in beanstalkd: $JOBS (expected $((MESSAGES + MESSAGES / 2)))"
SPOOLED=$(find "$WORK/spool" -maxdepth 1 -name '*.msg' | wc -l)
echo "left in mailman's spool: $SPOOLED"

echo "== postfix smtpd: $MESSAGES messages of $SIZE bytes, $SESSIONS sessions"
mkdir -p "$WORK/pf" "$WORK/pf-queue" "$WORK/pf-data"
chown postfix "$WORK/pf-data"
cat >"$WORK/pf/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $WORK/pf-queue
data_directory = $WORK/pf-data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
mail_owner = postfix
setgid_group = postdrop
# master.cf binds 127.0.0.5:2526 only; Postfix wants a real interface here
inet_interfaces = all
inet_protocols = ipv4
myhostname = bench.postfix.test
mydestination =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
default_transport = discard
relay_transport = discard
local_transport = discard
default_process_limit = 200
maillog_file = /dev/stdout
CONF
cat >"$WORK/pf/master.cf" <<CONF
127.0.0.5:2526 inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
CONF
postfix -c "$WORK/pf" start >>"$WORK/postfix.log" 2>&1 || { cat "$WORK/postfix.log"; exit 1; }
wait_port 127.0.0.5 2526
t=$(run_source 127.0.0.5:2526 "$SESSIONS" "$MESSAGES")
PF_RATE=$(rate "$MESSAGES" "$t")
echo "postfix smtpd accepted: $PF_RATE msg/s"
postfix -c "$WORK/pf" stop >/dev/null 2>&1 || true

echo "== result"
awk -v a="$MM_RATE" -v b="$PF_RATE" -v r="$MM_RSS" 'BEGIN {
    printf "mailman %d msg/s, postfix smtpd %d msg/s, ratio %.2f; mailman peak RSS %.1f MB\n",
        a, b, a / b, r / 1024 }'
