//! An in-memory [`Dns`] for unit tests of the checks (the integration tests use a real DNS
//! server from hedwig-testkit).

use std::collections::HashMap;
use std::net::IpAddr;

use super::lookup::Dns;
use crate::Error;

#[derive(Debug, Default)]
pub(crate) struct TestDns {
    txt: HashMap<String, Vec<String>>,
    ips: HashMap<String, Vec<IpAddr>>,
    mx: HashMap<String, Vec<(u16, String)>>,
    ptr: HashMap<IpAddr, Vec<String>>,
    /// Names at or under these fail like a SERVFAIL.
    fail: Vec<String>,
}

impl TestDns {
    pub(crate) fn txt(mut self, name: &str, text: &str) -> Self {
        self.txt.entry(name.into()).or_default().push(text.into());
        self
    }
    pub(crate) fn a(mut self, name: &str, ip: &str) -> Self {
        self.ips
            .entry(name.into())
            .or_default()
            .push(ip.parse().unwrap());
        self
    }
    pub(crate) fn mx(mut self, name: &str, preference: u16, exchange: &str) -> Self {
        self.mx
            .entry(name.into())
            .or_default()
            .push((preference, exchange.into()));
        self
    }
    pub(crate) fn ptr(mut self, ip: &str, name: &str) -> Self {
        self.ptr
            .entry(ip.parse().unwrap())
            .or_default()
            .push(name.into());
        self
    }
    pub(crate) fn fail(mut self, name: &str) -> Self {
        self.fail.push(name.into());
        self
    }
    pub(crate) fn first_txt(&self, name: &str) -> &str {
        &self.txt[name][0]
    }

    fn check(&self, name: &str) -> Result<(), Error> {
        if self
            .fail
            .iter()
            .any(|f| name == f || name.ends_with(&format!(".{f}")))
        {
            return Err(Error::Dns {
                name: name.into(),
                detail: "SERVFAIL".into(),
            });
        }
        Ok(())
    }
}

impl Dns for TestDns {
    async fn txt(&self, name: &str) -> Result<Vec<String>, Error> {
        self.check(name)?;
        Ok(self.txt.get(name).cloned().unwrap_or_default())
    }
    async fn ips(&self, name: &str) -> Result<Vec<IpAddr>, Error> {
        self.check(name)?;
        Ok(self.ips.get(name).cloned().unwrap_or_default())
    }
    async fn mx(&self, name: &str) -> Result<Vec<(u16, String)>, Error> {
        self.check(name)?;
        Ok(self.mx.get(name).cloned().unwrap_or_default())
    }
    async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, Error> {
        Ok(self.ptr.get(&ip).cloned().unwrap_or_default())
    }
}
