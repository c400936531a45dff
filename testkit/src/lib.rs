//! Real servers for hedwig's tests.
//!
//! Tests talk to the real thing wherever it can run on this machine. Everything here listens
//! on 127.0.0.0/8 only and is torn down when its handle is dropped.
//!
//! | module | what it runs |
//! | --- | --- |
//! | [`beanstalkd`] | a `beanstalkd` process on a free loopback port, with a binlog |
//! | [`dns`] | an authoritative DNS server (UDP + TCP) answering from an in-memory [`Zone`] (switchable at runtime, or silenced), plus a hickory resolver pointed at it |
//! | [`smtp`] | a scriptable SMTP receiver: extensions, replies per phase and recipient, drops and stalls, STARTTLS, runtime faults (random 451/421, cuts mid-DATA, pause/resume); it records what it accepted |
//! | [`tls`] | a self-signed certificate made at start (rcgen), for the SMTP receiver's STARTTLS |
//! | [`postgres`] | a PostgreSQL server (`initdb` in a temp dir, run as the `postgres` user under root) on a free loopback port, with one database |
//! | [`net`] | free loopback ports |
//! | [`docker`] | a tiny client image (the host's msmtp, `docker import`ed: no registry), bridge networks and containers removed on drop |
//! | [`postfix`] | a private Postfix smarthost in a temp dir: submission (587, STARTTLS) and smtps (465) with SMTP AUTH from Cyrus `sasldb`, a certificate from a private CA, relaying to a loopback receiver |

pub mod beanstalkd;
pub mod dns;
pub mod docker;
pub mod net;
pub mod postfix;
pub mod postgres;
pub mod smtp;
pub mod tls;

pub use beanstalkd::Beanstalkd;
pub use dns::{DnsServer, Zone};
pub use postgres::Postgres;
pub use smtp::{Behaviour, Extension, FaultCounts, Faults, Phase, Received, SmtpReceiver};
