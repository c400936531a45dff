#!/usr/bin/env bash
# Benchmark (not a test): the Postfix baseline for `cargo bench -p worker --bench e2e`.
# The same 4 KB messages are relayed by a private Postfix instance to Postfix's smtp-sink, and
# the end-to-end rate is measured: from the start of the feed until the sink has received COUNT.
#
#   worker/bench/postfix-relay.sh [COUNT] [CONCURRENCY]
#
# COUNT defaults to 20000; CONCURRENCY (Postfix's default_destination_concurrency_limit: the
# most parallel smtp deliveries to the sink) defaults to 20, like the worker's default
# per-destination connections. Extra main.cf lines can be passed in PF_EXTRA (one per line);
# WAIT_SECS (default 600) bounds the whole measurement.
#
# Prints the rate at which smtpd accepted the feed and the end-to-end rate: messages counted by
# the sink, from the start of the feed until the sink has COUNT. Machine load from other jobs
# shows directly in the figures; Postfix fsyncs every queue file, so disk speed does too.
#
# Needs: postfix, smtp-source and smtp-sink (Debian package postfix), root (port 25). Everything
# listens on loopback only: the sink on 127.0.4.201:25, Postfix's smtpd on 127.0.4.202:25.
# Postfix runs with its own config and queue directories under a temp dir; the system instance
# (/etc/postfix) is neither read for configuration nor touched. Everything is stopped and
# removed at exit.
set -euo pipefail

COUNT=${1:-20000}
CONCURRENCY=${2:-20}
SESSIONS=20
SIZE=4096
WAIT_SECS=${WAIT_SECS:-600}
SINK=127.0.4.201
SMTPD=127.0.4.202
WORK=$(mktemp -d /tmp/postfix-relay-bench.XXXXXX)
chmod 755 "$WORK" # Postfix's daemons run as the postfix user and need to reach their queue
SINK_PID=
SOURCE_PID=
cleanup() {
    if [ -n "$SOURCE_PID" ]; then kill "$SOURCE_PID" 2>/dev/null || true; fi
    if [ -f "$WORK/pf/main.cf" ]; then postfix -c "$WORK/pf" stop >/dev/null 2>&1 || true; fi
    if [ -n "$SINK_PID" ]; then
        kill "$SINK_PID" 2>/dev/null || true
        wait "$SINK_PID" 2>/dev/null || true
    fi
    # postfix stop returns before master has exited; give it a bounded moment
    for _ in $(seq 1 50); do
        [ -f "$WORK/pf-queue/pid/master.pid" ] || break
        kill -0 "$(tr -d ' ' <"$WORK/pf-queue/pid/master.pid")" 2>/dev/null || break
        sleep 0.1
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on $1:$2" >&2
    exit 1
}

# smtp-sink -c writes "sess=S quit=Q mesg=M\r" on stdout whenever a message's "." is received
# (flushed each time); the last mesg= is the number of messages the sink has received.
sink_count() {
    local n
    n=$(tail -c 64 "$WORK/sink.out" 2>/dev/null | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -n 1) || true
    echo "${n#mesg=}" | grep . || echo 0
}

now() { date +%s.%N; }

# 1. the sink
# smtp-sink binds with SO_REUSEPORT, so a leftover listener would silently share the traffic
for addr in "$SINK" "$SMTPD"; do
    if (exec 3<>"/dev/tcp/$addr/25") 2>/dev/null; then
        echo "something already listens on $addr:25; stop it first" >&2
        exit 1
    fi
done
smtp-sink -c -u nobody "$SINK:25" 1024 >"$WORK/sink.out" 2>"$WORK/sink.err" &
SINK_PID=$!
wait_port "$SINK" 25

# 2. the private Postfix instance
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
# master.cf binds $SMTPD:25 only; Postfix refuses 127.0.4.202 here as "no local interface"
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = relay.postfix-bench.test
mydestination =
relay_domains =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
relayhost = [$SINK]:25
default_transport = smtp
relay_transport = smtp
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
local_recipient_maps =
smtp_tls_security_level = none
smtpd_tls_security_level = none
default_destination_concurrency_limit = $CONCURRENCY
maillog_file_prefixes = $WORK
maillog_file = $WORK/maillog
${PF_EXTRA:-}
CONF
cat >"$WORK/pf/master.cf" <<CONF
$SMTPD:25 inet n - n - - smtpd
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
smtp      unix  - - n - - smtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
CONF
postfix -c "$WORK/pf" start >>"$WORK/postfix.log" 2>&1 ||
    {
        # the postfix command reports to stderr only when it is a tty
        script -qc "postfix -c $WORK/pf check" /dev/null || true
        cat "$WORK/postfix.log" "$WORK/maillog" 2>/dev/null || true
        echo "postfix start failed" >&2
        exit 1
    }
wait_port "$SMTPD" 25

echo "== postfix $(postconf -d -h mail_version) relay: $COUNT messages of $SIZE bytes," \
    "$SESSIONS smtp-source sessions -> smtpd $SMTPD:25 -> smtp (concurrency limit $CONCURRENCY)" \
    "-> smtp-sink $SINK:25"
BEFORE=$(sink_count)

# 3. feed and measure; the feed runs in the background while Postfix relays
START=$(now)
timeout "$WAIT_SECS" smtp-source -d -s "$SESSIONS" -m "$COUNT" -l "$SIZE" \
    -f sender@example.com -t rcpt@example.org "$SMTPD:25" >"$WORK/source.out" 2>&1 &
SOURCE_PID=$!
FED=
DEADLINE=$(awk -v s="$START" -v w="$WAIT_SECS" 'BEGIN { printf "%d", s + w }')
GOT=0
while :; do
    GOT=$(($(sink_count) - BEFORE))
    if [ -z "$FED" ] && ! kill -0 "$SOURCE_PID" 2>/dev/null; then
        FED=$(now)
        wait "$SOURCE_PID" || echo "smtp-source failed: $(tail -n 5 "$WORK/source.out")" >&2
    fi
    if [ "$GOT" -ge "$COUNT" ] || [ "$(date +%s)" -ge "$DEADLINE" ]; then break; fi
    sleep 0.05
done
END=$(now)
if [ -z "$FED" ]; then kill "$SOURCE_PID" 2>/dev/null || true; fi

if [ -n "$FED" ]; then
    awk -v n="$COUNT" -v s="$START" -v e="$FED" \
        'BEGIN { printf "postfix smtpd accepted: %d messages in %.1f s = %.0f msg/s\n", n, e - s, n / (e - s) }'
fi
awk -v n="$GOT" -v s="$START" -v e="$END" \
    'BEGIN { printf "postfix relay: %d messages in %.1f s = %.0f msg/s\n", n, e - s, n / (e - s) }'
QUEUED=$(find "$WORK/pf-queue/incoming" "$WORK/pf-queue/active" "$WORK/pf-queue/deferred" \
    "$WORK/pf-queue/maildrop" -type f 2>/dev/null | wc -l)
SENT=$(grep -c 'status=sent' "$WORK/maillog" 2>/dev/null || true)
echo "postfix log: ${SENT:-0} status=sent, $(grep -c 'status=deferred' "$WORK/maillog" 2>/dev/null || true) status=deferred; $QUEUED left in its queue"
if [ "$GOT" -lt "$COUNT" ]; then
    echo "only $GOT of $COUNT reached the sink within ${WAIT_SECS}s; last log lines:" >&2
    grep -v 'status=sent' "$WORK/maillog" | tail -n 10 >&2 || true
    exit 1
fi
