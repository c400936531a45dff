//! put → reserve → delete with a body no text protocol would survive: CRLF, NUL, invalid
//! UTF-8, and a body larger than one socket read.

use crate::common;

use std::time::Duration;

use beanstalk::{Client, Error};

const TTR: Duration = Duration::from_secs(60);

#[tokio::test]
async fn eight_bit_bodies_roundtrip() {
    let server = common::start();
    let mut c = Client::connect(server.url()).await.unwrap();

    let small: Vec<u8> = b"line1\r\nline2\r\n\0\xff\xfe\xc3\x28 end\r\n".to_vec();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    for body in [small, big, Vec::new()] {
        let id = c.put(&body, 10, Duration::ZERO, TTR).await.unwrap();
        let peeked = c.peek(id).await.unwrap();
        assert_eq!(peeked.body, body);
        let job = c
            .reserve_with_timeout(Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(job.id, id);
        assert_eq!(&job.body[..], &body[..]);
        c.delete(job.id).await.unwrap();
        assert!(matches!(c.peek(id).await, Err(Error::NotFound)));
    }
    // `reserve` (no timeout) and `reserve-job`.
    let a = c.put(b"a", 0, Duration::ZERO, TTR).await.unwrap();
    let b = c.put(b"b", 0, Duration::ZERO, TTR).await.unwrap();
    let job = c.reserve_job(b).await.unwrap();
    assert_eq!((job.id, &job.body[..]), (b, &b"b"[..]));
    let job = c.reserve().await.unwrap();
    assert_eq!((job.id, &job.body[..]), (a, &b"a"[..]));
    c.delete(a).await.unwrap();
    c.delete(b).await.unwrap();
    assert_eq!(c.stats().await.unwrap().total_jobs(), Some(5));
    assert!(c.is_connected());
}
