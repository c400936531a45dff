//! The `List-Id:` of a message (RFC 2919): what a list-scoped suppression entry and a
//! one-click unsubscribe token name.
//!
//! RFC 2919 §2: `List-Id: [phrase] "<" list-label "." list-id-namespace ">"`. The phrase may
//! hold quoted strings and comments, which may hold `<` and `>` themselves, so the id is the
//! first `<…>` outside them. List ids compare case-insensitively ([`key`]).
//!
//! Only the header block is read ([`crate::summary::header_block`], at most 64 KiB), with a
//! plain byte scan: cheap enough for intake, and nothing here fails (an unreadable field is
//! `None`).
//!
//! Not here: the list-scoped entries (`hedwig_ledger::suppress`), the token
//! ([`crate::unsubscribe`]).

/// Longest list id taken (RFC 2919 gives none; a domain name is at most 253 octets, and the
/// token carries at most 256).
pub const MAX_LIST_ID: usize = 256;

/// The id of the first `List-Id:` field of `message` (raw bytes, header block first), as
/// written.
pub fn of(message: &[u8]) -> Option<String> {
    use crate::summary::{field, header_block};
    parse(&field(header_block(message), b"list-id")?)
}

/// The list id in a `List-Id:` field's value: the first `<…>` outside quoted strings and
/// comments, without its brackets and white space. `None` when there is none, or it is
/// empty, longer than [`MAX_LIST_ID`], or holds a character a dot-atom cannot (white space
/// inside, control characters, brackets, quotes).
pub fn parse(value: &str) -> Option<String> {
    let mut chars = value.chars();
    let mut depth = 0usize; // comment nesting
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted || depth > 0 => {
                chars.next();
            }
            '"' if depth == 0 => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            '<' if !quoted && depth == 0 => {
                let rest = chars.as_str();
                let end = rest.find('>')?;
                let id = rest[..end].trim_matches([' ', '\t', '\r', '\n']);
                return valid(id).then(|| id.to_owned());
            }
            _ => {}
        }
    }
    None
}

/// A list id as lists are keyed and compared: trimmed, lowercase.
pub fn key(id: &str) -> String {
    id.trim().to_lowercase()
}

/// Whether `id` can be a list id (dot-atom-text of RFC 5322, UTF-8 allowed as RFC 6532 does).
pub fn valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LIST_ID
        && !id.starts_with('.')
        && !id.ends_with('.')
        && !id.contains("..")
        && id.chars().all(|c| {
            !c.is_control()
                && !c.is_whitespace()
                && !matches!(
                    c,
                    '(' | ')' | '<' | '>' | '[' | ']' | ':' | ';' | '@' | '\\' | ',' | '"'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_with_or_without_a_phrase() {
        assert_eq!(
            parse("<news.example.com>").as_deref(),
            Some("news.example.com")
        );
        assert_eq!(
            parse(" Weekly news <weekly.news.example.com>").as_deref(),
            Some("weekly.news.example.com")
        );
        assert_eq!(
            parse("\"Acme <sales> list\" <Sales.Acme.COM>").as_deref(),
            Some("Sales.Acme.COM")
        );
        assert_eq!(
            parse("Acme (the <old> one) < old.acme.com >").as_deref(),
            Some("old.acme.com")
        );
        assert_eq!(
            parse("\"quoted \\\" <x.y>\" <real.list.test>").as_deref(),
            Some("real.list.test")
        );
        assert_eq!(
            parse("=?utf-8?q?Caf=C3=A9?= <cafe.example.com>").as_deref(),
            Some("cafe.example.com")
        );
        assert_eq!(key(" News.Example.COM "), "news.example.com");
    }

    #[test]
    fn no_id_or_a_bad_one() {
        for value in [
            "",
            "no brackets",
            "<>",
            "< >",
            "<unclosed.example.com",
            "\"only <in.quotes>\"",
            "(only <in.comment>)",
            "<two words.example.com>",
            "<a..b>",
            "<.a.b>",
            "<a@b.test>",
        ] {
            assert_eq!(parse(value), None, "{value:?}");
        }
        assert_eq!(parse(&format!("<{}>", "l".repeat(MAX_LIST_ID + 1))), None);
        assert!(parse(&format!("<{}>", "l".repeat(MAX_LIST_ID))).is_some());
    }

    #[test]
    fn the_field_of_a_message() {
        let m = b"From: a@b.test\r\nlist-ID: Weekly\r\n news <Weekly.News.example.com>\r\n\
                  Subject: x\r\n\r\nList-Id: <in.the.body>\r\n";
        assert_eq!(of(m).as_deref(), Some("Weekly.News.example.com"));
        assert_eq!(of(b"Subject: x\r\n\r\nList-Id: <in.the.body>\r\n"), None);
        assert_eq!(of(b"List-Id: <bare.lf>\n\n"), Some("bare.lf".into()));
        assert_eq!(of(b"no header block at all"), None);
        assert_eq!(
            of(b"List-Id-Extra: <not.it>\r\nList-Id : <spaced.name>\r\n\r\n"),
            Some("spaced.name".into())
        );
    }
}
