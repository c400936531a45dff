//! The beanstalkd reply parser (`beanstalk::proto::decode`) on arbitrary server output, with
//! the YAML bodies of `OK` replies read by `beanstalk::stats` and job bodies by
//! `hedwig_queue::job::Job::decode` (what the worker does with a reserved job).
//!
//! The first input byte picks the chunk size (1 to 256 octets) the stream arrives in, as reads
//! from a socket would; the rest is the stream. Checked:
//! - no panic; `Incomplete` consumes nothing and asks for more than the buffer holds;
//!   `Complete` consumes something;
//! - nothing beyond the line and body limits is ever asked for (bounded buffering);
//! - the replies do not depend on how the stream was split.
#![no_main]

use beanstalk::proto::{decode, Decoded, Reply};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

const MAX_LINE: usize = 1024;
const MAX_BODY: usize = 4096;

fn look_inside(reply: &Reply) {
    match reply {
        Reply::Ok(body) => {
            let _ = beanstalk::stats::Stats::parse(body)
                .map(|s| (s.current_jobs_ready(), s.tube().map(str::len)));
            let _ = beanstalk::stats::parse_list(body);
        }
        Reply::Reserved(job) | Reply::Found(job) => {
            assert!(job.body.len() <= MAX_BODY);
            if let Ok(job) = hedwig_queue::job::Job::decode(&job.body) {
                // A decoded job encodes and decodes to itself.
                let again = hedwig_queue::job::Job::decode(&job.encode()).expect("re-decode");
                assert_eq!(again, job);
            }
            let _ = hedwig_queue::job::decode_parts(&job.body);
        }
        _ => {}
    }
}

/// Replies read from `input` arriving `chunk` octets at a time, and how reading ended.
fn run(input: &[u8], chunk: usize) -> (Vec<Reply>, bool) {
    let mut buf = BytesMut::new();
    let mut chunks = input.chunks(chunk);
    let mut replies = Vec::new();
    for _ in 0..=2 * input.len() + 2 {
        let before = buf.len();
        match decode(&mut buf, MAX_LINE, MAX_BODY) {
            Ok(Decoded::Complete(reply)) => {
                assert!(buf.len() < before, "a reply consumed nothing");
                look_inside(&reply);
                replies.push(reply);
            }
            Ok(Decoded::Incomplete { need }) => {
                assert_eq!(buf.len(), before, "Incomplete consumed input");
                assert!(need > before, "need {need} with {before} buffered");
                assert!(need <= MAX_LINE + MAX_BODY + 64, "asks for {need} octets");
                match chunks.next() {
                    Some(bytes) => buf.extend_from_slice(bytes),
                    None => return (replies, true),
                }
            }
            Err(_) => return (replies, false),
        }
    }
    panic!("decode made no progress");
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let split = run(input, usize::from(first) + 1);
    let whole = run(input, input.len().max(1));
    assert_eq!(split, whole, "the split changed the replies");
});
