//! The four DNS questions the checks ask, behind [`Dns`], and [`HickoryDns`] answering them
//! with hickory-resolver.
//!
//! "No such name" and "no record of that type" both answer an empty list: for every check
//! here they mean the same thing, "not published". Anything else (timeout, SERVFAIL,
//! refused) is an [`Error::Dns`], reported as "could not check" rather than "missing".
//! The trait exists because the checks are also unit-tested against an in-memory table.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use crate::Error;

/// The lookups the checks need. Names are given and returned lowercase without the trailing
/// dot.
pub trait Dns {
    /// Each TXT record at `name`, its strings concatenated (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
    fn txt(&self, name: &str) -> impl Future<Output = Result<Vec<String>, Error>> + Send;
    /// The A and AAAA addresses of `name`.
    fn ips(&self, name: &str) -> impl Future<Output = Result<Vec<IpAddr>, Error>> + Send;
    /// The MX records of `name` as (preference, exchange); a null MX has exchange `""`.
    fn mx(&self, name: &str) -> impl Future<Output = Result<Vec<(u16, String)>, Error>> + Send;
    /// The PTR names of `ip`.
    fn ptr(&self, ip: IpAddr) -> impl Future<Output = Result<Vec<String>, Error>> + Send;
}

/// [`Dns`] over a hickory resolver.
#[derive(Clone)]
pub struct HickoryDns {
    resolver: hedwig_dns::Dns,
}

impl std::fmt::Debug for HickoryDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HickoryDns")
    }
}

impl HickoryDns {
    /// A resolver asking `nameservers` (UDP, then TCP when an answer is truncated), or the
    /// system's (`/etc/resolv.conf`) when the list is empty. `timeout` bounds each query
    /// attempt; there are two attempts. No cache: every run sees what is published now.
    pub fn new(nameservers: &[SocketAddr], timeout: Duration) -> Result<Self, Error> {
        let resolver = hedwig_dns::resolver(nameservers, timeout, hedwig_dns::Cache::Off)
            .map_err(Error::Resolver)?;
        Ok(HickoryDns { resolver })
    }

    async fn rdata(&self, name: Name, rtype: RecordType) -> Result<Vec<RData>, Error> {
        let shown = name.to_ascii().trim_end_matches('.').to_string();
        match self.resolver.lookup(name, rtype).await {
            // The answer may hold a CNAME chain before the records asked for.
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() == rtype)
                .map(|r| r.data.clone())
                .collect()),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(failed(&shown, &e)),
        }
    }
}

fn failed(name: &str, e: &NetError) -> Error {
    Error::Dns {
        name: name.to_string(),
        detail: e.to_string(),
    }
}

fn absolute(name: &str) -> Result<Name, Error> {
    Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).map_err(|e| Error::InvalidDomain {
        domain: name.to_string(),
        why: e.to_string(),
    })
}

/// A name from DNS data, lowercase without the trailing dot.
fn plain(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

impl Dns for HickoryDns {
    async fn txt(&self, name: &str) -> Result<Vec<String>, Error> {
        let data = self.rdata(absolute(name)?, RecordType::TXT).await?;
        Ok(data
            .into_iter()
            .filter_map(|d| match d {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    }

    async fn ips(&self, name: &str) -> Result<Vec<IpAddr>, Error> {
        let name = absolute(name)?;
        let (v4, v6) = tokio::join!(
            self.rdata(name.clone(), RecordType::A),
            self.rdata(name, RecordType::AAAA)
        );
        let mut ips = Vec::new();
        for data in [v4?, v6?].into_iter().flatten() {
            match data {
                RData::A(a) => ips.push(IpAddr::V4(a.0)),
                RData::AAAA(a) => ips.push(IpAddr::V6(a.0)),
                _ => {}
            }
        }
        Ok(ips)
    }

    async fn mx(&self, name: &str) -> Result<Vec<(u16, String)>, Error> {
        let data = self.rdata(absolute(name)?, RecordType::MX).await?;
        Ok(data
            .into_iter()
            .filter_map(|d| match d {
                RData::MX(mx) => Some((mx.preference, plain(&mx.exchange))),
                _ => None,
            })
            .collect())
    }

    async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, Error> {
        let data = self.rdata(Name::from(ip), RecordType::PTR).await?;
        Ok(data
            .into_iter()
            .filter_map(|d| match d {
                RData::PTR(ptr) => Some(plain(&ptr.0)),
                _ => None,
            })
            .collect())
    }
}
