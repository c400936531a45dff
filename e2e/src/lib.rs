//! Nothing here: the end-to-end suite lives in `tests/`, one scenario per file, on the shared
//! fixture in `tests/common/` (`Stack::start`: beanstalkd, a DNS server, two SMTP receivers on
//! port 25, the postoffice, the worker and mailman, all on `127.0.<net>.x`).
//!
//! | file | scenario |
//! | --- | --- |
//! | `msmtp_plain.rs` | `msmtp rcpt < msg`: bytes, `Received:`, DKIM (python3-dkim), BODY=8BITMIME |
//! | `msmtp_t.rs` | `msmtp -t`: To/Cc/Bcc recipients, LF input sent as CRLF, Bcc removed |
//! | `php_mail.rs` | PHP `mail()` with `sendmail_path = msmtp -t ...` returns true; the mail arrives |
//! | `swaks.rs` | swaks, two recipient domains: each MX gets its own copy once |
//! | `bounce.rs` | a 550 for one recipient: RFC 3464 DSN at the sender's MX, the other gets it once |
//! | `ledger_events.rs` | the ledger's events: `queued` with mailman's id and client address, Message-ID, Subject; then `sent` |
//! | `mail_loop.rs` | the recipients' MX is mailman itself: the loop stops at `hop_limit` with one `5.4.6` bounce |
//! | `postoffice_outage.rs` | postoffice down: 250 from mailman, spooled, delivered once when it is back |
//!
//! `examples/fault_run.rs` is the fault-injection run (`scripts/fault-run`, see
//! docs/reliability.md): not a test of `cargo test`, it runs the real binaries as processes
//! and kills them.
//!
//! Needs (Debian packages): `beanstalkd msmtp swaks php-cli python3-dkim python3-dnspython`,
//! and root (the SMTP receivers listen on port 25 of 127.0.<net>.2 and .3, where the worker
//! delivers by default).
