#!/bin/bash
# smoke-sink: an SMTP server on port 25 that accepts every message and writes each one to
# its own file under /var/mail/sink (smtp-sink's dump format: X-Client-Addr, X-Helo-Args,
# X-Mail-Args, X-Rcpt-Args, then the message as received).
set -euo pipefail
mkdir -p /var/mail/sink
exec /usr/sbin/smtp-sink -u root -v -d /var/mail/sink/%Y%m%d%H%M%S. 0.0.0.0:25 100
