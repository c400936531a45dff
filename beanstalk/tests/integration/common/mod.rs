//! Shared test helper: a beanstalkd that is verified to be ours.
//!
//! `Beanstalkd::start`/`restart` wait until *something* accepts on the port. On this shared
//! machine other test processes bind ephemeral loopback ports all the time, and one can
//! briefly hold the port our server is about to take; the probe then connects to the
//! wrong listener. So after starting we also ask the server a real question and start
//! again (bounded) if the answer is not beanstalkd's.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use hedwig_testkit::Beanstalkd;

fn answers(server: &Beanstalkd) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&server.addr(), Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"list-tube-used\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line == "USING default\r\n"
}

pub fn start() -> Beanstalkd {
    start_with_max_job_size(30 * 1024 * 1024)
}

pub fn start_with_max_job_size(n: usize) -> Beanstalkd {
    for _ in 0..5 {
        let server = Beanstalkd::start_with_max_job_size(n);
        if answers(&server) {
            return server;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("could not start a beanstalkd that answers");
}

pub fn restart(server: &mut Beanstalkd) {
    for _ in 0..5 {
        server.restart();
        if answers(server) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("could not restart beanstalkd on {}", server.addr());
}
