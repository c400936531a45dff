//! A real `beanstalkd` (Debian package) on a free loopback port, with its binlog in a
//! temporary directory so that a restart keeps the queued jobs.

use std::net::{SocketAddr, TcpStream};
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
}

impl Beanstalkd {
    /// Starts beanstalkd with a binlog and a 30 MB job size limit (hedwig's default message
    /// limit is 25 MB).
    pub fn start() -> Self {
        Self::start_with_max_job_size(30 * 1024 * 1024)
    }

    /// Starts beanstalkd with `-z max_job_size`.
    pub fn start_with_max_job_size(max_job_size: usize) -> Self {
        let binlog = tempfile::tempdir().expect("binlog tempdir");
        let addr = crate::net::free_addr();
        let mut server = Beanstalkd {
            addr,
            max_job_size,
            binlog,
            child: None,
        };
        server.spawn();
        server
    }

    /// The server's address (127.0.0.1:port).
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

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) {
        let child = Command::new(binary())
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
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start beanstalkd (apt-get install beanstalkd)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "beanstalkd did not listen on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Beanstalkd {
    fn drop(&mut self) {
        self.stop();
    }
}
