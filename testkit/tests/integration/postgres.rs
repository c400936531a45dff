//! The PostgreSQL server: starts as the right user, takes connections, stops and starts again
//! with its data.

use std::net::{Ipv4Addr, TcpStream};
use std::process::Command;

use hedwig_testkit::Postgres;

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 130, 1);

/// Runs one SQL command with Debian's `psql` and returns what it printed.
fn psql(url: &str, sql: &str) -> Result<String, String> {
    let output = Command::new("/usr/lib/postgresql/15/bin/psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qtA", "-c", sql])
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[test]
fn serves_a_database_and_survives_a_restart() {
    let mut pg = Postgres::start_on(IP);
    assert_eq!(pg.addr().ip(), IP);
    assert!(pg.url().starts_with("postgres://hedwig@127.0.130.1:"));
    psql(
        &pg.url(),
        "CREATE TABLE t (x BIGINT); INSERT INTO t VALUES (42)",
    )
    .unwrap();

    pg.stop();
    assert!(!pg.is_running());
    assert!(TcpStream::connect(pg.addr()).is_err(), "still listening");
    assert!(psql(&pg.url(), "SELECT 1").is_err());

    pg.restart();
    assert_eq!(psql(&pg.url(), "SELECT x FROM t").unwrap(), "42");

    let addr = pg.addr();
    drop(pg);
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after drop"
    );
}
