//! Reading DKIM key records (RFC 6376 §3.6.1) and DMARC records (RFC 7489 §6.3) as found in
//! DNS, and deciding whether they are right. Pure functions: the caller does the lookups.

/// `tag=value` pairs of a tag list (RFC 6376 §3.2), names lowercase, values trimmed.
pub fn tags(record: &str) -> Vec<(String, String)> {
    record
        .split(';')
        .filter_map(|part| {
            let (name, value) = part.split_once('=')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_string()))
        })
        .collect()
}

fn tag<'a>(tags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    tags.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Base64 without the folding whitespace DNS publishers put in (RFC 6376 §3.6.1).
fn squeeze(value: &str) -> String {
    value.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Whether the TXT records `published` at a key's `<selector>._domainkey.<domain>` publish
/// the key whose record is `expected` (as [`hedwig_message::dkim::txt_record`] makes it).
/// `Err` says what is wrong. `published` must not be empty (that is "missing").
pub fn compare_dkim(published: &[String], expected: &str) -> Result<(), String> {
    let record = match published {
        [one] => one,
        [] => return Err("no TXT record".into()),
        more => {
            return Err(format!(
                "{} TXT records; publish exactly one (RFC 6376 §3.6.2.2)",
                more.len()
            ))
        }
    };
    let found = tags(record);
    let want = tags(expected);
    if let Some(v) = tag(&found, "v") {
        if v != "DKIM1" || found.first().is_some_and(|(n, _)| n != "v") {
            return Err(format!("v={v} is not a first v=DKIM1 tag"));
        }
    }
    let want_k = tag(&want, "k").unwrap_or("rsa");
    let found_k = tag(&found, "k").unwrap_or("rsa");
    if !found_k.eq_ignore_ascii_case(want_k) {
        return Err(format!(
            "publishes k={found_k}, the configured key is {want_k}"
        ));
    }
    if let Some(h) = tag(&found, "h") {
        if !h
            .split(':')
            .any(|a| a.trim().eq_ignore_ascii_case("sha256"))
        {
            return Err(format!(
                "h={h} excludes sha256, which the worker signs with"
            ));
        }
    }
    if let Some(s) = tag(&found, "s") {
        if !s.split(':').any(|t| matches!(t.trim(), "*" | "email")) {
            return Err(format!("s={s} does not allow email"));
        }
    }
    let found_p = match tag(&found, "p") {
        None => return Err("no p= tag (not a DKIM key record)".into()),
        Some(p) => squeeze(p),
    };
    if found_p.is_empty() {
        return Err("p= is empty: the key is revoked".into());
    }
    let want_p = squeeze(tag(&want, "p").unwrap_or_default());
    if found_p != want_p {
        return Err("p= is a different public key than the configured key's".into());
    }
    Ok(())
}

/// The one DMARC record among the TXT records at `_dmarc.<domain>`: `Ok(None)` when there is
/// none, `Err` when it is unusable (several records, RFC 7489 §6.6.3; no valid `p=`).
pub fn dmarc_record(txts: &[String]) -> Result<Option<&str>, String> {
    let records: Vec<&String> = txts
        .iter()
        .filter(|t| {
            tags(t)
                .first()
                .is_some_and(|(n, v)| n == "v" && v.eq_ignore_ascii_case("DMARC1"))
        })
        .collect();
    let record = match records.as_slice() {
        [] => return Ok(None),
        [one] => one.as_str(),
        more => {
            return Err(format!(
                "{} DMARC records; receivers ignore them all (RFC 7489 §6.6.3)",
                more.len()
            ))
        }
    };
    match tag(&tags(record), "p") {
        Some(p)
            if matches!(
                p.to_ascii_lowercase().as_str(),
                "none" | "quarantine" | "reject"
            ) =>
        {
            Ok(Some(record))
        }
        Some(p) => Err(format!("p={p} is not none, quarantine or reject")),
        None => Err("no p= tag".into()),
    }
}

/// The DMARC record to suggest: monitoring only, aggregate reports to `dmarc@<domain>`.
pub fn suggested_dmarc(domain: &str) -> String {
    format!("v=DMARC1; p=none; rua=mailto:dmarc@{domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAq";

    fn one(s: &str) -> Vec<String> {
        vec![s.to_string()]
    }

    #[test]
    fn dkim_records_that_match() {
        assert_eq!(compare_dkim(&one(KEY), KEY), Ok(()));
        // k= defaults to rsa, v= is optional, whitespace inside p= is folding, tags in any order.
        assert_eq!(
            compare_dkim(
                &one("p=MIIBIjANBgkqhkiG9w0B AQEFAAOCAQ8AMIIBCgKCAQEAq ; h=sha1:sha256"),
                KEY
            ),
            Ok(())
        );
        assert_eq!(
            compare_dkim(
                &one("v=DKIM1;p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAq;s=*"),
                KEY
            ),
            Ok(())
        );
    }

    #[test]
    fn dkim_records_that_differ_say_why() {
        let err = |published: Vec<String>| compare_dkim(&published, KEY).unwrap_err();
        assert!(err(one("v=DKIM1; k=rsa; p=MIIBother")).contains("different public key"));
        assert!(err(one("v=DKIM1; k=rsa; p=")).contains("revoked"));
        assert!(err(one(
            "v=DKIM1; k=ed25519; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAq"
        ))
        .contains("k=ed25519"));
        assert!(err(one("v=DKIM1; k=rsa")).contains("no p="));
        assert!(err(one("v=DKIM2; p=x")).contains("v=DKIM2"));
        assert!(err(one("k=rsa; v=DKIM1; p=x")).contains("first"));
        assert!(err(one("v=DKIM1; h=sha1; p=x")).contains("sha256"));
        assert!(err(one("v=DKIM1; s=tlsrpt; p=x")).contains("email"));
        assert!(err(vec![KEY.into(), KEY.into()]).contains("2 TXT records"));
        assert!(err(vec![]).contains("no TXT"));
    }

    #[test]
    fn dmarc_records() {
        let txts = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(dmarc_record(&txts(&[])), Ok(None));
        assert_eq!(dmarc_record(&txts(&["something else"])), Ok(None));
        assert_eq!(
            dmarc_record(&txts(&[
                "v=DMARC1; p=reject; rua=mailto:d@example.com",
                "x"
            ])),
            Ok(Some("v=DMARC1; p=reject; rua=mailto:d@example.com"))
        );
        assert!(dmarc_record(&txts(&["v=DMARC1; rua=mailto:d@example.com"]))
            .unwrap_err()
            .contains("no p="));
        assert!(dmarc_record(&txts(&["v=DMARC1; p=maybe"]))
            .unwrap_err()
            .contains("p=maybe"));
        assert!(
            dmarc_record(&txts(&["v=DMARC1; p=none", "v=DMARC1; p=reject"]))
                .unwrap_err()
                .contains("2 DMARC")
        );
        // The suggestion is itself valid.
        let s = suggested_dmarc("example.com");
        assert_eq!(dmarc_record(&txts(&[&s])), Ok(Some(s.as_str())));
    }
}
