//! SMTP AUTH's server side (issue 17): the credentials file, the password check off the async
//! runtime, and the slowing down of clients that guess.
//!
//! The file (`auth.users_file`) has a line per login, `name:hash[:lane]`: `hash` an argon2
//! PHC string (`mailman passwd NAME` prints the line), `lane` the lane the login's mail asks
//! for. Blank lines and lines starting with `#` are skipped. Like a key file, it must not be
//! readable by others (or by a group other than mailman's): such a file is refused. It is
//! read again when it changes (size, mtime or inode, looked at on each AUTH); a new version
//! that cannot be read or parsed is logged and the last good one stays in use.
//!
//! Failures are counted per client address (an IPv6 client by its /64): each one waits
//! `failure_delay`, doubled for each earlier failure (at most [`MAX_DELAY`]), before its `535`;
//! at `max_failures` within `failure_window` the session is closed with `421`, and so is every
//! later AUTH from that address until the window has passed since its last failure. The table
//! holds at most [`MAX_TRACKED`] addresses; when full, expired entries go first, then the
//! oldest. A login that exists and one that does not cost the same argon2 work.
//!
//! Not here: the SASL exchanges ([`crate::smtp::auth`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ipnet::IpNet;
use tokio::sync::Semaphore;

use crate::smtp::{AuthOutcome, AuthPolicy, Credentials};

/// Client addresses whose failures are remembered at most.
pub const MAX_TRACKED: usize = 10_000;
/// Longest wait before a `535`.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// Password checks running at once (each takes a core for tens of milliseconds).
const CHECKS_AT_ONCE: usize = 2;

/// One login of the file.
#[derive(Clone)]
struct User {
    hash: String,
    lane: Option<String>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("lane", &self.lane)
            .finish_non_exhaustive()
    }
}

type Users = HashMap<String, User>;

/// Reads a credentials file's lines; every bad line is reported, by number.
fn parse(text: &str) -> Result<Users, Vec<String>> {
    let mut users = HashMap::new();
    let mut errors = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split(':');
        let (Some(name), Some(hash)) = (fields.next(), fields.next()) else {
            errors.push(format!("line {n}: not name:hash[:lane]"));
            continue;
        };
        let lane = fields.next().filter(|l| !l.is_empty()).map(str::to_string);
        if fields.next().is_some() {
            errors.push(format!("line {n}: more than name:hash:lane"));
            continue;
        }
        if let Err(why) = check_name(name) {
            errors.push(format!("line {n}: {why}"));
            continue;
        }
        if let Err(e) = PasswordHash::new(hash) {
            errors.push(format!("line {n}: {name}: not an argon2 PHC string ({e})"));
            continue;
        }
        if !hash.starts_with("$argon2") {
            errors.push(format!("line {n}: {name}: not an argon2 hash"));
            continue;
        }
        let user = User {
            hash: hash.to_string(),
            lane,
        };
        if users.insert(name.to_string(), user).is_some() {
            errors.push(format!("line {n}: {name} is given twice"));
        }
    }
    if errors.is_empty() {
        Ok(users)
    } else {
        Err(errors)
    }
}

/// A login name: 1 to 64 printable ASCII characters, no `:` and no space.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("login {name:?} must be 1 to 64 characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(format!(
            "login {name:?} may hold printable ASCII only, no ':' or space"
        ));
    }
    Ok(())
}

/// The argon2id PHC string of `password` (argon2's default parameters, a random salt).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the PHC string `hash` (slow: run it off the runtime).
fn verify(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash no password matches, checked for logins that do not exist so that they cost what
/// real ones do.
fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut secret);
        hash_password(&hex(&secret)).unwrap_or_default()
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads and parses the file, refusing one others may read.
fn load(path: &Path) -> Result<Users, String> {
    hedwig_core::keyfile::check("users file", path, true).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text).map_err(|errors| format!("{}: {}", path.display(), errors.join("; ")))
}

/// What identifies a version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
    ino: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: meta.len(),
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec(),
        ino: meta.ino(),
    })
}

struct Loaded {
    /// The version in use, and the last one looked at (a bad one is not read twice).
    stamp: Option<Stamp>,
    users: Arc<Users>,
}

/// Failures per client address.
struct Failures {
    by_client: HashMap<IpAddr, (u32, Instant)>,
}

/// The key a client's failures are counted under: an IPv4 address (also when mapped into
/// IPv6), or an IPv6 /64 (one host usually holds a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
        v4 => v4,
    }
}

impl Failures {
    /// Failures of `client` still within `window`.
    fn count(&mut self, client: IpAddr, now: Instant, window: Duration) -> u32 {
        match self.by_client.get(&client) {
            Some((n, last)) if now.duration_since(*last) < window => *n,
            Some(_) => {
                self.by_client.remove(&client);
                0
            }
            None => 0,
        }
    }

    /// One more failure of `client`; its count now.
    fn record(&mut self, client: IpAddr, now: Instant, window: Duration) -> u32 {
        let n = self.count(client, now, window) + 1;
        if !self.by_client.contains_key(&client) && self.by_client.len() >= MAX_TRACKED {
            self.by_client
                .retain(|_, (_, last)| now.duration_since(*last) < window);
            if self.by_client.len() >= MAX_TRACKED {
                if let Some(oldest) = self
                    .by_client
                    .iter()
                    .min_by_key(|(_, (_, last))| *last)
                    .map(|(ip, _)| *ip)
                {
                    self.by_client.remove(&oldest);
                }
            }
        }
        self.by_client.insert(client, (n, now));
        n
    }
}

/// The wait before the `n`th failure's answer: `delay`, doubled for each earlier failure.
pub fn delay_for(n: u32, delay: Duration) -> Duration {
    let doublings = n.saturating_sub(1).min(16);
    delay.saturating_mul(1 << doublings).min(MAX_DELAY)
}

/// The checked `auth` settings and the state behind them.
pub struct Auth {
    path: PathBuf,
    loaded: Mutex<Loaded>,
    failures: Mutex<Failures>,
    checks: Semaphore,
    /// `auth.require`.
    pub require: bool,
    /// `auth.plaintext_networks`.
    pub plaintext_networks: Vec<IpNet>,
    /// `auth.max_failures`.
    pub max_failures: u32,
    /// `auth.failure_delay`.
    pub failure_delay: Duration,
    /// `auth.failure_window`.
    pub failure_window: Duration,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("users_file", &self.path)
            .field("require", &self.require)
            .finish_non_exhaustive()
    }
}

/// The `auth` settings other than the file.
#[derive(Debug, Clone)]
pub struct Limits {
    pub require: bool,
    pub plaintext_networks: Vec<IpNet>,
    pub max_failures: u32,
    pub failure_delay: Duration,
    pub failure_window: Duration,
}

impl Auth {
    /// Reads `path` (refused when others may read it) and keeps the settings.
    pub fn open(path: &Path, limits: Limits) -> Result<Auth, String> {
        let before = stamp(path);
        let users = load(path)?;
        Ok(Auth {
            path: path.to_path_buf(),
            loaded: Mutex::new(Loaded {
                stamp: before,
                users: Arc::new(users),
            }),
            failures: Mutex::new(Failures {
                by_client: HashMap::new(),
            }),
            checks: Semaphore::new(CHECKS_AT_ONCE),
            require: limits.require,
            plaintext_networks: limits.plaintext_networks,
            max_failures: limits.max_failures,
            failure_delay: limits.failure_delay,
            failure_window: limits.failure_window,
        })
    }

    /// Logins in the file in use.
    pub fn logins(&self) -> usize {
        self.loaded.lock().map(|l| l.users.len()).unwrap_or(0)
    }

    /// What a session for `client` offers.
    pub fn policy(&self, client: IpAddr) -> AuthPolicy {
        let ip = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(client),
            v4 => v4,
        };
        AuthPolicy {
            offered: true,
            plaintext: self.plaintext_networks.iter().any(|n| n.contains(&ip)),
            required: self.require,
        }
    }

    /// The logins in use, read again first when the file changed.
    fn users(&self) -> Arc<Users> {
        let now = stamp(&self.path);
        let Ok(mut loaded) = self.loaded.lock() else {
            return Arc::new(HashMap::new());
        };
        if now.is_some() && now != loaded.stamp {
            loaded.stamp = now;
            match load(&self.path) {
                Ok(users) => {
                    tracing::info!(file = %self.path.display(), logins = users.len(), "auth users file read again");
                    loaded.users = Arc::new(users);
                }
                Err(why) => tracing::error!(
                    %why,
                    "auth users file changed but cannot be used; the last good version stays in use"
                ),
            }
        }
        loaded.users.clone()
    }

    /// Checks `credentials` from `client`: the verdict, after the delay a failure earns.
    pub async fn check(&self, client: IpAddr, credentials: Credentials) -> AuthOutcome {
        let key = client_key(client);
        let window = self.failure_window;
        let failed = self
            .failures
            .lock()
            .map(|mut f| f.count(key, Instant::now(), window))
            .unwrap_or(0);
        if failed >= self.max_failures {
            tracing::debug!(%client, "AUTH from a client over auth.max_failures refused");
            return AuthOutcome::Blocked;
        }
        let user = self.users().get(&credentials.login).cloned();
        let hash = user
            .as_ref()
            .map(|u| u.hash.clone())
            .unwrap_or_else(|| decoy().to_string());
        let Ok(_permit) = self.checks.acquire().await else {
            return AuthOutcome::Unavailable;
        };
        let password = credentials.password;
        let right = tokio::task::spawn_blocking(move || verify(&password, &hash))
            .await
            .unwrap_or(false);
        drop(_permit);
        if let (true, Some(user)) = (right, user) {
            if let Ok(mut f) = self.failures.lock() {
                f.by_client.remove(&key);
            }
            tracing::info!(%client, login = ?credentials.login, "SMTP AUTH succeeded");
            return AuthOutcome::Accepted { lane: user.lane };
        }
        let n = self
            .failures
            .lock()
            .map(|mut f| f.record(key, Instant::now(), window))
            .unwrap_or(self.max_failures);
        let closing = n >= self.max_failures;
        tracing::warn!(
            %client,
            login = ?credentials.login,
            failures = n,
            closing,
            "SMTP AUTH failed"
        );
        tokio::time::sleep(delay_for(n, self.failure_delay)).await;
        if closing {
            AuthOutcome::Blocked
        } else {
            AuthOutcome::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn limits(max_failures: u32) -> Limits {
        Limits {
            require: false,
            plaintext_networks: vec!["127.0.0.0/8".parse().unwrap()],
            max_failures,
            failure_delay: Duration::from_millis(1),
            failure_window: Duration::from_secs(600),
        }
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn creds(login: &str, password: &str) -> Credentials {
        Credentials {
            login: login.into(),
            password: password.into(),
        }
    }

    #[test]
    fn the_file_format() {
        let hash = hash_password("pw").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        let users = parse(&format!(
            "# comment\n\nbilling:{hash}:transactional\nnews:{hash}\n"
        ))
        .unwrap();
        assert_eq!(users["billing"].lane.as_deref(), Some("transactional"));
        assert_eq!(users["news"].lane, None);
        assert!(verify("pw", &users["news"].hash) && !verify("pW", &users["news"].hash));
        let errors = parse(&format!(
            "nohash\nx:plaintext\nbad name:{hash}\ny:{hash}:l:extra\nz:{hash}\nz:{hash}\n"
        ))
        .unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:?}");
        for (i, n) in [1, 2, 3, 4, 6].iter().enumerate() {
            assert!(errors[i].starts_with(&format!("line {n}:")), "{errors:?}");
        }
        assert!(!errors.join(" ").contains("pw"));
    }

    #[test]
    fn a_file_others_may_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        write(&path, &format!("a:{}\n", hash_password("pw").unwrap()));
        assert!(Auth::open(&path, limits(3)).is_ok());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).unwrap();
        let err = Auth::open(&path, limits(3)).unwrap_err();
        assert!(err.contains("others"), "{err}");
    }

    #[test]
    fn clients_are_counted_by_address_and_ipv6_by_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(delay_for(1, Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(delay_for(3, Duration::from_secs(1)), Duration::from_secs(4));
        assert_eq!(delay_for(99, Duration::from_secs(1)), MAX_DELAY);
    }

    #[test]
    fn the_failure_table_stays_bounded() {
        let mut f = Failures {
            by_client: HashMap::new(),
        };
        let now = Instant::now();
        let window = Duration::from_secs(60);
        for i in 0..(MAX_TRACKED as u32 + 500) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            f.record(ip, now + Duration::from_millis(i as u64), window);
        }
        assert_eq!(f.by_client.len(), MAX_TRACKED);
        // the newest are kept, the oldest went
        let newest = IpAddr::V4(std::net::Ipv4Addr::from(
            0x0a00_0000 + MAX_TRACKED as u32 + 499,
        ));
        assert_eq!(f.count(newest, now + Duration::from_secs(11), window), 1);
        let oldest = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000));
        assert_eq!(f.count(oldest, now + Duration::from_secs(11), window), 0);
        // and a failure outside the window no longer counts
        assert_eq!(f.count(newest, now + Duration::from_secs(600), window), 0);
    }

    #[tokio::test]
    async fn right_wrong_unknown_blocked_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        write(
            &path,
            &format!(
                "billing:{}:transactional\n",
                hash_password("right").unwrap()
            ),
        );
        let auth = Auth::open(&path, limits(3)).unwrap();
        let client: IpAddr = "127.0.0.9".parse().unwrap();
        assert_eq!(
            auth.check(client, creds("billing", "right")).await,
            AuthOutcome::Accepted {
                lane: Some("transactional".into())
            }
        );
        assert_eq!(
            auth.check(client, creds("billing", "wrong")).await,
            AuthOutcome::Refused
        );
        assert_eq!(
            auth.check(client, creds("nobody", "right")).await,
            AuthOutcome::Refused
        );
        // the third failure closes, and so does any AUTH after it, even a right one
        assert_eq!(
            auth.check(client, creds("billing", "x")).await,
            AuthOutcome::Blocked
        );
        assert_eq!(
            auth.check(client, creds("billing", "right")).await,
            AuthOutcome::Blocked
        );
        // another client is not affected
        let other: IpAddr = "127.0.0.10".parse().unwrap();
        assert!(matches!(
            auth.check(other, creds("billing", "right")).await,
            AuthOutcome::Accepted { .. }
        ));
        // a changed file is read again; a broken one leaves the last good one in use
        write(&path, &format!("news:{}\n", hash_password("pw2").unwrap()));
        assert_eq!(
            auth.check(other, creds("news", "pw2")).await,
            AuthOutcome::Accepted { lane: None }
        );
        write(&path, "broken line\n");
        assert_eq!(
            auth.check(other, creds("news", "pw2")).await,
            AuthOutcome::Accepted { lane: None }
        );
        assert!(auth.policy(other).plaintext);
        assert!(!auth.policy("10.0.0.1".parse().unwrap()).plaintext);
    }
}
