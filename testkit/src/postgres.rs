//! A real PostgreSQL server (Debian's `postgresql-15` package) on a free loopback port, its
//! cluster made by `initdb` in a temporary directory, with one database for the test.
//!
//! PostgreSQL refuses to run as root. When the test runs as root (CI, the dev containers),
//! `initdb` and `postgres` run as the `postgres` system user (created by the Debian package)
//! and the temporary directory is handed to it; otherwise they run as the current user.
//!
//! The server runs for speed, not durability (`fsync=off`): a test cluster is thrown away.
//! [`Postgres::stop`] and [`Postgres::restart`] take the server down and back up on the same
//! port with the same data, for tests of a store that goes away.
//!
//! Not here: any schema; the code under test makes its own.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The user the cluster belongs to (the database superuser's name, not a system user).
pub const USER: &str = "hedwig";
/// The database made for the test.
pub const DATABASE: &str = "hedwig";

/// Where the server binaries live; override with `PG_BINDIR` for a non-Debian layout.
fn bindir() -> PathBuf {
    std::env::var_os("PG_BINDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// Whether the PostgreSQL server binaries are installed (`scripts/install-deps`).
pub fn available() -> bool {
    bindir().join("initdb").exists() && bindir().join("postgres").exists()
}

/// A running PostgreSQL. Dropping it stops the server and removes its files.
pub struct Postgres {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// uid/gid to run as (the `postgres` user) when we are root.
    run_as: Option<(u32, u32)>,
}

impl Postgres {
    /// Starts a server on a free port of 127.0.0.1 with an empty database [`DATABASE`].
    pub fn start() -> Self {
        Self::start_on(Ipv4Addr::LOCALHOST)
    }

    /// Starts a server on a free port of `ip` (a 127.0.0.0/8 address) with an empty database
    /// [`DATABASE`].
    pub fn start_on(ip: Ipv4Addr) -> Self {
        assert!(
            available(),
            "PostgreSQL is not installed in {} (scripts/install-deps)",
            bindir().display()
        );
        let dir = tempfile::Builder::new()
            .prefix("hedwig-pg")
            .tempdir()
            .expect("postgres tempdir");
        let run_as = if is_root() {
            let ids = postgres_user().expect(
                "running as root, and there is no `postgres` user to run PostgreSQL as \
                 (apt-get install postgresql)",
            );
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))
                .expect("chown the postgres tempdir");
            Some(ids)
        } else {
            None
        };
        let mut server = Postgres {
            addr: SocketAddr::from((ip, crate::net::free_port(ip))),
            dir,
            child: None,
            run_as,
        };
        server.initdb();
        server.spawn(true);
        server.create_database();
        server
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `postgres://hedwig@ip:port/hedwig`: the test database, no password (trust auth on
    /// loopback).
    pub fn url(&self) -> String {
        self.url_of(DATABASE)
    }

    /// The URL of another database of this server (made by the test, e.g. with `psql`).
    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://{USER}@{}/{database}", self.addr)
    }

    /// Whether the server process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the server (a fast shutdown: clients are disconnected). The data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again (stopping it first if it runs) on the same port with the
    /// same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn(false);
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .env("LC_ALL", "C.UTF-8");
        if let Some((uid, gid)) = self.run_as {
            // std drops the supplementary groups too when root changes uid.
            command.uid(uid).gid(gid);
        }
        command
    }

    fn initdb(&self) {
        let output = self
            .command(bindir().join("initdb"))
            .arg("-D")
            .arg(self.data())
            .args(["-U", USER, "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"])
            .arg("--no-sync")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts `postgres` and waits until it accepts connections. On the first start a port
    /// taken in the meantime (the `free_port` race) makes it pick another.
    fn spawn(&mut self, first_start: bool) {
        let ip = match self.addr.ip() {
            std::net::IpAddr::V4(ip) => ip,
            std::net::IpAddr::V6(_) => unreachable!("started on an IPv4 address"),
        };
        for attempt in 0..10 {
            if first_start && attempt > 0 {
                self.addr = SocketAddr::from((ip, crate::net::free_port(ip)));
            }
            let log = std::fs::File::create(self.dir.path().join("postgres.log"))
                .expect("postgres log file");
            let mut child = self
                .command(bindir().join("postgres"))
                .arg("-D")
                .arg(self.data())
                .arg("-h")
                .arg(ip.to_string())
                .arg("-p")
                .arg(self.addr.port().to_string())
                // The Unix socket goes in the temp dir, not /var/run/postgresql.
                .arg("-k")
                .arg(self.dir.path())
                .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
                .args(["-c", "synchronous_commit=off", "-c", "max_connections=50"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start postgres");
            if wait_ready(self.addr, &mut child, self.dir.path()) {
                self.child = Some(child);
                return;
            }
            signal(&child, libc::SIGQUIT);
            let _ = child.wait();
            if !first_start {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        panic!(
            "postgres did not come up on {}: {}",
            self.addr,
            std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
        );
    }

    fn create_database(&self) {
        let output = self
            .command(bindir().join("psql"))
            .arg(self.url_of("postgres"))
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
            .arg(format!("CREATE DATABASE {DATABASE}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "CREATE DATABASE failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Sends `sig` to the child (postgres shuts down on SIGINT fast, on SIGQUIT at once).
fn signal(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn is_root() -> bool {
    // SAFETY: getuid(2) cannot fail and touches no memory.
    unsafe { libc::getuid() == 0 }
}

/// The `postgres` user's uid and gid, from /etc/passwd.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && fields[0] == "postgres" {
            Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
        } else {
            None
        }
    })
}

/// Whether the server accepts TCP connections and has written its "ready" pid file line
/// within 30 s (a first start runs crash recovery or bootstrap work).
fn wait_ready(addr: SocketAddr, child: &mut Child, dir: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    let pidfile = dir.join("data").join("postmaster.pid");
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false; // exited: the port was taken, or the data is bad
        }
        // postmaster.pid's last line says `ready` once connections are accepted.
        let ready = std::fs::read_to_string(&pidfile)
            .map(|pid| pid.lines().nth(7).map(str::trim) == Some("ready"))
            .unwrap_or(false);
        if ready && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Immediate shutdown: the data is thrown away anyway.
            signal(&child, libc::SIGQUIT);
            let _ = child.wait();
        }
    }
}
