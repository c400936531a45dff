//! The queue schema of hedwig: everything about how a message sits in beanstalkd, in one
//! place. The post office (intake and admin commands) and the worker use it; no other crate
//! names a tube or reads a job body by itself.
//!
//! Layout:
//! - [`tubes`]: the tube names (outbound, failed, held, holds, admin probe), all from one
//!   prefix (the `tube_prefix` setting, default `hedwig`), as typed [`Tube`]s.
//! - [`job`]: the body of a job: the envelope and history as one JSON line, then the message
//!   bytes untouched. Bodies written by earlier releases still decode (optional fields absent).
//!   Recipients come out parsed ([`Recipient`](hedwig_core::address::Recipient)).
//! - [`hold`]: the hold list of held sending hosts: format, reading and writing it in
//!   beanstalkd, the intake's [`HoldCache`](hold::HoldCache) and a worker task's
//!   [`Snapshot`](hold::Snapshot).
//! - [`event`]: ledger events (queued, each recipient's outcomes, bounces) as they travel
//!   through the events tube to the ledger writer.
//! - [`emit`]: the [`Emitter`](emit::Emitter) that puts events into the events tube with
//!   group commit (many callers' events in one job), one per server
//!   ([`Emitters`](emit::Emitters)).
//! - [`lane`]: the lanes (issue 17): their priorities, fairness spread, retry schedules;
//!   shared by the post office's and the worker's `lanes:` settings.
//! - [`scan`]: reading the tubes no worker watches (failed, held) and sampling recent jobs,
//!   for the admin commands.
//!
//! Built on `hedwig-beanstalk` (the client). Not here: which server a host's mail goes to and
//! the intake's pools (`postoffice::queue`), the delivery loop (`worker::queue`), what happens
//! to a job after an attempt (`worker::plan`).

pub mod emit;
pub mod event;
pub mod hold;
pub mod job;
pub mod lane;
pub mod scan;
pub mod tubes;

pub use job::{Envelope, Job, JobError};
pub use tubes::{Tube, Tubes};
