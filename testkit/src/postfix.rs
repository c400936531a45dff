//! A private Postfix instance acting as a smarthost: submission (587, STARTTLS required) and
//! smtps (465, TLS from the first byte) with SMTP AUTH from Cyrus SASL's `sasldb`.
//!
//! Everything lives in a temp dir: the config directory (`postfix -c <dir>`), queue and data
//! directories, the sasldb2 file (made with `saslpasswd2`), the certificate (issued by a
//! private CA made here with rcgen) and the log (`maillog_file`, read by [`Postfix::log`]).
//! Both services listen on the given 127.0.0.0/8 address only; accepted mail is relayed to
//! `[relay_to]` (a testkit SMTP receiver on loopback), so nothing leaves the machine. The
//! packaged instance (`/etc/postfix`) is neither read nor started. Dropping the handle stops
//! the instance (`postfix -c <dir> stop`, then SIGKILL to its master if it lingers).
//!
//! Needs root (Postfix's master runs as root and drops to the `postfix` user), the `postfix`
//! package and `sasl2-bin` + `libsasl2-modules` (`scripts/install-deps`).
//!
//! ```no_run
//! # fn f(sink: std::net::SocketAddr) {
//! let pf = hedwig_testkit::postfix::Postfix::start("127.0.180.10", sink, "hedwig", "secret")
//!     .unwrap();
//! let ca = pf.ca_file(); // trust this to verify the smarthost's certificate
//! assert!(pf.log().contains("daemon started"));
//! # let _ = ca; }
//! ```

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The SASL realm the user is created in (`smtpd_sasl_local_domain`).
pub const REALM: &str = "smarthost.hedwig.test";

/// Why the instance could not start.
#[derive(Debug, thiserror::Error)]
pub enum PostfixError {
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("certificate: {0}")]
    Cert(String),
    #[error("postfix did not listen on {addr} within {after:?}; log:\n{log}")]
    NotListening {
        addr: SocketAddr,
        after: Duration,
        log: String,
    },
}

/// A running private Postfix.
#[derive(Debug)]
pub struct Postfix {
    dir: tempfile::TempDir,
    ip: IpAddr,
}

impl Postfix {
    /// Starts Postfix on `ip` (ports 587 and 465), relaying what it accepts to `relay_to`,
    /// with one SASL user `user@REALM` whose password is `password`. Waits (at most 20s) until
    /// both ports accept connections.
    pub fn start(
        ip: &str,
        relay_to: SocketAddr,
        user: &str,
        password: &str,
    ) -> Result<Postfix, PostfixError> {
        let ip: IpAddr = ip.parse().map_err(|_| PostfixError::Command {
            what: "address".into(),
            detail: format!("{ip:?} is not an IP address"),
        })?;
        if !ip.is_loopback() {
            return Err(PostfixError::Command {
                what: "address".into(),
                detail: format!("{ip} is not a loopback address; the test smarthost stays local"),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("hedwig-postfix-")
            .tempdir()
            .map_err(|e| PostfixError::Io("temp dir".into(), e))?;
        let root = dir.path().to_path_buf();
        // The postfix user must reach its queue, data dir and sasldb2 below the temp dir.
        set_mode(&root, 0o755)?;
        let conf = root.join("conf");
        for d in [&conf, &conf.join("sasl"), &root.join("queue")] {
            mkdir(d)?;
        }
        let data = root.join("data");
        mkdir(&data)?;
        chown_postfix(&data)?;

        let (ca_pem, cert_pem, key_pem) = certificates(ip)?;
        write(&root.join("ca.pem"), &ca_pem, 0o644)?;
        write(&conf.join("cert.pem"), &cert_pem, 0o644)?;
        write(&conf.join("key.pem"), &key_pem, 0o600)?;

        let sasldb = root.join("sasldb2");
        let mut child = Command::new("saslpasswd2")
            .args(["-f"])
            .arg(&sasldb)
            .args(["-p", "-c", "-u", REALM, user])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| PostfixError::Io("saslpasswd2 (apt-get install sasl2-bin)".into(), e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(password.as_bytes())
                .map_err(|e| PostfixError::Io("saslpasswd2 stdin".into(), e))?;
        }
        check_output("saslpasswd2", child.wait_with_output())?;
        chown_postfix(&sasldb)?;

        // Debian's Postfix reads the Cyrus application config from <config_directory>/sasl/.
        write(
            &conf.join("sasl").join("smtpd.conf"),
            &format!(
                "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\n\
                 sasldb_path: {}\n",
                sasldb.display()
            ),
            0o644,
        )?;
        write(&conf.join("main.cf"), &main_cf(&root, relay_to), 0o644)?;
        write(&conf.join("master.cf"), &master_cf(ip), 0o644)?;

        let pf = Postfix { dir, ip };
        let out = Command::new("postfix")
            .arg("-c")
            .arg(&conf)
            .arg("start")
            .stdin(Stdio::null())
            .output();
        // The reason of a failed start is in the log (postfix prints to a tty only).
        if let Err(e) = check_output("postfix start", out) {
            return Err(PostfixError::Command {
                what: "postfix start".into(),
                detail: format!("{e}; log:\n{}", pf.log()),
            });
        }
        let after = Duration::from_secs(20);
        for addr in [pf.submission(), pf.smtps()] {
            let deadline = Instant::now() + after;
            while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if Instant::now() > deadline {
                    return Err(PostfixError::NotListening {
                        addr,
                        after,
                        log: pf.log(),
                    });
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(pf)
    }

    /// The submission service (STARTTLS required, then AUTH).
    pub fn submission(&self) -> SocketAddr {
        SocketAddr::new(self.ip, 587)
    }

    /// The smtps service (TLS from the first byte, then AUTH).
    pub fn smtps(&self) -> SocketAddr {
        SocketAddr::new(self.ip, 465)
    }

    /// The PEM file of the private CA that issued the smarthost's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Postfix's log so far (`maillog_file`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Waits (at most `within`) until the log contains `needle`; the log either way.
    pub fn wait_log(&self, needle: &str, within: Duration) -> Result<String, String> {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return Ok(log);
            }
            if Instant::now() > deadline {
                return Err(log);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn master_pid(&self) -> Option<libc::pid_t> {
        std::fs::read_to_string(self.dir.path().join("queue/pid/master.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let pid = self.master_pid();
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(self.dir.path().join("conf"))
            .arg("stop")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let Some(pid) = pid.filter(|&p| p > 1) else {
            return;
        };
        // The master exits after its children; give it 5s, then kill it (this instance's
        // master only, by the pid it wrote into our queue directory).
        let deadline = Instant::now() + Duration::from_secs(5);
        // SAFETY: kill(2) with signal 0 only checks that the process exists.
        while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; SIGKILL to our own instance's master.
        if unsafe { libc::kill(pid, 0) } == 0 {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn main_cf(root: &Path, relay_to: SocketAddr) -> String {
    let r = root.display();
    format!(
        "compatibility_level = 3.6
queue_directory = {r}/queue
data_directory = {r}/data
mail_owner = postfix
setgid_group = postdrop
# The services below name their address; the rest listens on nothing outside loopback.
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = smarthost.hedwig.test
mydomain = hedwig.test
mydestination =
mynetworks = 127.0.180.254/32
alias_maps =
alias_database =
local_recipient_maps =
relayhost = [{ip}]:{port}
smtp_tls_security_level = none
maillog_file = {r}/maillog
maillog_file_prefixes = {r}
smtpd_tls_cert_file = {r}/conf/cert.pem
smtpd_tls_key_file = {r}/conf/key.pem
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
smtpd_sasl_local_domain = {REALM}
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
",
        ip = relay_to.ip(),
        port = relay_to.port(),
    )
}

fn master_cf(ip: IpAddr) -> String {
    format!(
        "{ip}:587 inet n - n - - smtpd -o smtpd_tls_security_level=encrypt
{ip}:465 inet n - n - - smtpd -o smtpd_tls_wrappermode=yes
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"
    )
}

/// A private CA and a server certificate for `ip` issued by it: (CA PEM, cert PEM, key PEM).
fn certificates(ip: IpAddr) -> Result<(String, String, String), PostfixError> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let err = |e: rcgen::Error| PostfixError::Cert(e.to_string());
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hedwig test CA");
    let ca = ca_params.self_signed(&ca_key).map_err(err)?;
    let key = KeyPair::generate().map_err(err)?;
    let params = CertificateParams::new(vec![ip.to_string(), "smarthost.hedwig.test".into()])
        .map_err(err)?;
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(err)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

fn mkdir(path: &Path) -> Result<(), PostfixError> {
    std::fs::create_dir_all(path).map_err(|e| PostfixError::Io(path.display().to_string(), e))?;
    set_mode(path, 0o755)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), PostfixError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| PostfixError::Io(path.display().to_string(), e))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), PostfixError> {
    std::fs::write(path, text).map_err(|e| PostfixError::Io(path.display().to_string(), e))?;
    set_mode(path, mode)
}

fn chown_postfix(path: &Path) -> Result<(), PostfixError> {
    let out = Command::new("chown").arg("postfix").arg(path).output();
    check_output("chown postfix", out)
}

fn check_output(
    what: &str,
    out: std::io::Result<std::process::Output>,
) -> Result<(), PostfixError> {
    let out = out.map_err(|e| PostfixError::Io(what.into(), e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(PostfixError::Command {
        what: what.into(),
        detail: format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}
