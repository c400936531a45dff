//! A real `beanstalkd` (Debian package) on a free loopback port, with its binlog in a
//! temporary directory so that a restart keeps the queued jobs.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the server binary lives; override with `BEANSTALKD` for a non-Debian layout.
fn binary() -> PathBuf {
    std::env::var_os("BEANSTALKD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/beanstalkd"))
}

/// A running beanstalkd. Dropping it kills the process and removes the binlog.
pub struct Beanstalkd {
    addr: SocketAddr,
    max_job_size: usize,
    binlog: tempfile::TempDir,
    child: Option<Child>,
    started_once: bool,
}

impl Beanstalkd {
    /// Starts beanstalkd with a binlog and a 30 MB job size limit (hedwig's default message
    /// limit is 25 MB).
    pub fn start() -> Self {
        Self::start_with_max_job_size(30 * 1024 * 1024)
    }

    /// Starts beanstalkd with `-z max_job_size`.
    pub fn start_with_max_job_size(max_job_size: usize) -> Self {
        Self::start_on_with_max_job_size(Ipv4Addr::LOCALHOST, max_job_size)
    }

    /// Starts beanstalkd on a free port of `ip` (a 127.0.0.0/8 address), like [`start`](Self::start).
    pub fn start_on(ip: Ipv4Addr) -> Self {
        Self::start_on_with_max_job_size(ip, 30 * 1024 * 1024)
    }

    /// Starts beanstalkd on a free port of `ip` with `-z max_job_size`.
    pub fn start_on_with_max_job_size(ip: Ipv4Addr, max_job_size: usize) -> Self {
        let binlog = tempfile::tempdir().expect("binlog tempdir");
        let addr = SocketAddr::from((ip, crate::net::free_port(ip)));
        let mut server = Beanstalkd {
            addr,
            max_job_size,
            binlog,
            child: None,
            started_once: false,
        };
        server.spawn();
        server
    }

    /// The server's address (ip:port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port` as a string, the form hedwig's configs take.
    pub fn url(&self) -> String {
        self.addr.to_string()
    }

    /// The `-z` limit the server runs with.
    pub fn max_job_size(&self) -> usize {
        self.max_job_size
    }

    /// Kills the server (SIGKILL, like a crash). The binlog stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same binlog.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The process id while it runs (e.g. to SIGSTOP it and hold a reply back).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the process and waits until it answers the protocol. A port that another
    /// process grabbed in the meantime (the `free_port` race) makes the first start pick a new
    /// port; a restart keeps its port and retries.
    fn spawn(&mut self) {
        let first_start = self.child.is_none() && !self.started_once;
        for attempt in 0..10 {
            if first_start && attempt > 0 {
                let ip = match self.addr.ip() {
                    IpAddr::V4(ip) => ip,
                    IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
                };
                self.addr = SocketAddr::from((ip, crate::net::free_port(ip)));
            }
            let mut child = Command::new(binary())
                .arg("-l")
                .arg(self.addr.ip().to_string())
                .arg("-p")
                .arg(self.addr.port().to_string())
                .arg("-b")
                .arg(self.binlog.path())
                .arg("-z")
                .arg(self.max_job_size.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start beanstalkd (apt-get install beanstalkd)");
            if wait_ready(self.addr, &mut child) {
                self.child = Some(child);
                self.started_once = true;
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("beanstalkd did not come up on {}", self.addr);
    }
}

/// Whether our child answers `list-tube-used` with `USING default` within 5 s.
fn wait_ready(addr: SocketAddr, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false; // exited: the port was taken
        }
        if let Ok(mut stream) = TcpStream::connect(addr) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let mut reply = [0u8; 64];
            if stream.write_all(b"list-tube-used\r\n").is_ok() {
                if let Ok(n) = stream.read(&mut reply) {
                    if reply[..n].starts_with(b"USING default") {
                        return true;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

impl Drop for Beanstalkd {
    fn drop(&mut self) {
        self.stop();
    }
}
