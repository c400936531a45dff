//! Real containers for tests, on a machine whose Docker engine cannot pull from a registry.
//!
//! [`client_image`] builds (once; later calls find it) a tiny image by `docker import` of a
//! root filesystem made from the host's own `msmtp` and `sleep` and the libraries `ldd` names:
//! no registry, no package download, a second or two. [`Network`] and [`Container`] are
//! guards that remove what they created when dropped, also when a test fails. Every name
//! starts with the prefix the caller gives (tests use `hedwig-test-<who>-`), so leftovers of a
//! killed run are easy to find and remove.
//!
//! Tests that need Docker call [`require`] first: without an engine they fail with a message
//! that says so (CI has Docker; a silently skipped test would hide a broken setup).
//!
//! Not here: Docker's Engine API (mailman's `docker` module talks to it; here the `docker`
//! command line is the simplest honest client).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Why a Docker helper failed: the command and what it said.
#[derive(Debug, thiserror::Error)]
#[error("{command}: {message}")]
pub struct DockerError {
    pub command: String,
    pub message: String,
}

fn docker(args: &[&str]) -> Result<String, DockerError> {
    let command = format!("docker {}", args.join(" "));
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DockerError {
            command: command.clone(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(DockerError {
            command,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Panics with a clear message when no Docker engine answers.
pub fn require() {
    if let Err(e) = docker(&["info", "--format", "{{.ServerVersion}}"]) {
        panic!(
            "these tests need a running Docker engine and the `docker` command (CI has both); \
             it is not available here: {e}"
        );
    }
}

/// The image [`client_image`] builds.
pub const CLIENT_IMAGE: &str = "hedwig-test-client:msmtp";

/// An image holding `/usr/bin/msmtp` and `/bin/sleep` (the host's, with their libraries),
/// built by `docker import` unless it exists. Returns its name.
pub fn client_image() -> Result<String, DockerError> {
    // Tests of one binary run in parallel: one builds, the others wait and find it.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _building = BUILDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if docker(&["image", "inspect", CLIENT_IMAGE]).is_ok() {
        return Ok(CLIENT_IMAGE.to_string());
    }
    let err = |message: String| DockerError {
        command: "building the client image".into(),
        message,
    };
    let msmtp = which("msmtp").ok_or_else(|| err("msmtp is not installed on the host".into()))?;
    let sleep = which("sleep").ok_or_else(|| err("sleep is not on PATH".into()))?;
    let root = tempfile::tempdir().map_err(|e| err(e.to_string()))?;
    let mut files = BTreeSet::new();
    for binary in [&msmtp, &sleep] {
        files.insert(binary.clone());
        files.extend(libraries(binary).map_err(err)?);
    }
    for file in &files {
        let target = root.path().join(file.strip_prefix("/").unwrap_or(file));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
        }
        // Follow symlinks: the image gets the files themselves.
        std::fs::copy(file, &target).map_err(|e| err(format!("{}: {e}", file.display())))?;
    }
    for (dir, link) in [("usr/bin/msmtp", msmtp), ("bin/sleep", sleep)] {
        let at = root.path().join(dir);
        if !at.exists() {
            std::fs::create_dir_all(at.parent().unwrap_or(root.path()))
                .map_err(|e| err(e.to_string()))?;
            std::fs::copy(&link, &at).map_err(|e| err(e.to_string()))?;
        }
    }
    // msmtp looks its user up (home directory for ~/.msmtprc); glibc reads these files.
    let etc = root.path().join("etc");
    std::fs::create_dir_all(&etc).map_err(|e| err(e.to_string()))?;
    std::fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/sh\n")
        .map_err(|e| err(e.to_string()))?;
    std::fs::write(etc.join("group"), "root:x:0:\n").map_err(|e| err(e.to_string()))?;
    std::fs::create_dir_all(root.path().join("root")).map_err(|e| err(e.to_string()))?;
    std::fs::create_dir_all(root.path().join("tmp")).map_err(|e| err(e.to_string()))?;
    let tar = Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .args(["-cf", "-", "."])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("tar: {e}")))?;
    let stdout = tar.stdout.ok_or_else(|| err("tar: no stdout".into()))?;
    let import = Command::new("docker")
        .args(["import", "-", CLIENT_IMAGE])
        .stdin(stdout)
        .output()
        .map_err(|e| err(format!("docker import: {e}")))?;
    if !import.status.success() {
        return Err(err(format!(
            "docker import: {}",
            String::from_utf8_lossy(&import.stderr).trim()
        )));
    }
    Ok(CLIENT_IMAGE.to_string())
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The shared libraries (and the loader) `binary` needs, as `ldd` lists them.
fn libraries(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("ldd: {e}"))?;
    if !out.status.success() {
        return Err(format!("ldd {}: failed", binary.display()));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux… (0x…)`
            line.split_whitespace()
                .find(|word| word.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect())
}

/// A bridge network, removed on drop.
pub struct Network {
    pub name: String,
    /// The bridge's address on the host: where containers reach a server on the host.
    pub gateway: std::net::Ipv4Addr,
    /// The network's subnet (`172.18.0.0/16`).
    pub subnet: String,
}

impl Network {
    /// Creates a bridge network `name`; Docker picks the subnet.
    pub fn create(name: &str) -> Result<Network, DockerError> {
        // A leftover of a killed run under the same name goes first.
        let _ = docker(&["network", "rm", name]);
        docker(&["network", "create", "--driver", "bridge", name])?;
        let mut network = Network {
            name: name.to_string(),
            gateway: std::net::Ipv4Addr::UNSPECIFIED,
            subnet: String::new(),
        };
        let info = docker(&[
            "network",
            "inspect",
            name,
            "--format",
            "{{range .IPAM.Config}}{{.Gateway}} {{.Subnet}}{{end}}",
        ])?;
        let mut words = info.split_whitespace();
        let parsed = words.next().and_then(|g| g.parse().ok());
        network.subnet = words.next().unwrap_or_default().to_string();
        network.gateway = parsed.ok_or_else(|| DockerError {
            command: format!("docker network inspect {name}"),
            message: format!("no IPv4 gateway in {info:?}"),
        })?;
        Ok(network)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.name]);
    }
}

/// A container running `sleep` (so that commands can be run in it), removed on drop.
pub struct Container {
    pub name: String,
    /// Its address on the network it was started on.
    pub ip: std::net::Ipv4Addr,
}

impl Container {
    /// Starts `name` from `image` on `network` with `labels`, running `sleep 600`.
    pub fn start(
        name: &str,
        image: &str,
        network: &Network,
        labels: &[(&str, &str)],
    ) -> Result<Container, DockerError> {
        let _ = docker(&["rm", "-f", name]);
        let mut args: Vec<String> = ["run", "-d", "--name", name, "--network", &network.name]
            .map(String::from)
            .to_vec();
        for (key, value) in labels {
            args.push("--label".into());
            args.push(format!("{key}={value}"));
        }
        args.extend([image.to_string(), "/bin/sleep".into(), "600".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args)?;
        // From here on the guard removes it, also when the inspect fails.
        let mut container = Container {
            name: name.to_string(),
            ip: std::net::Ipv4Addr::UNSPECIFIED,
        };
        let format = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            network.name
        );
        let ip = docker(&["inspect", "--format", &format, name])?;
        container.ip = ip.parse().map_err(|_| DockerError {
            command: format!("docker inspect {name}"),
            message: format!("no IPv4 address on {}: {ip:?}", network.name),
        })?;
        Ok(container)
    }

    /// Runs `command` in the container with `stdin`, at most `limit`; the process output.
    pub async fn exec(
        &self,
        command: &[&str],
        stdin: &[u8],
        limit: Duration,
    ) -> Result<Output, DockerError> {
        use tokio::io::AsyncWriteExt;
        let err = |message: String| DockerError {
            command: format!("docker exec {} {}", self.name, command.join(" ")),
            message,
        };
        let mut child = tokio::process::Command::new("docker")
            .args(["exec", "-i", &self.name])
            .args(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| err(e.to_string()))?;
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(stdin)
                .await
                .map_err(|e| err(e.to_string()))?;
        }
        tokio::time::timeout(limit, child.wait_with_output())
            .await
            .map_err(|_| err(format!("still running after {limit:?}")))?
            .map_err(|e| err(e.to_string()))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}
