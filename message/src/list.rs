//! The list headers of a message (RFC 2369, RFC 2919, RFC 8058), for the worker's one-click
//! unsubscribe: whether the app set its own `List-Unsubscribe:` (then it is kept and nothing is
//! added), and the `List-Id:` a token names. Only the header block is read
//! (`hedwig_core::summary::header_block`, at most 64 KiB).

/// What a message's header block says about its list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListHeaders {
    /// The message has a `List-Unsubscribe:` field of its own.
    pub has_unsubscribe: bool,
    /// The `<…>` part of `List-Id:` (without the brackets), when there is one.
    pub list_id: Option<String>,
}

impl ListHeaders {
    pub fn of(message: &[u8]) -> ListHeaders {
        let block = hedwig_core::summary::header_block(message);
        let Some(parsed) = mail_parser::MessageParser::new().parse_headers(block) else {
            return ListHeaders::default();
        };
        // RFC 2919: a phrase (quoted strings and comments may hold brackets), then `<id>`.
        let list_id = parsed
            .header_raw("List-Id")
            .and_then(hedwig_core::list_id::parse);
        ListHeaders {
            has_unsubscribe: parsed.header_raw("List-Unsubscribe").is_some(),
            list_id,
        }
    }
}

/// The two header fields of RFC 8058 for `url` (which must hold no `>` or line break; the
/// caller makes it from a checked base URL and a base64url token), CRLF-terminated, to put
/// before the message's own fields.
pub fn one_click_fields(url: &str) -> Vec<u8> {
    format!("List-Unsubscribe: <{url}>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_list_id_and_an_own_unsubscribe_field() {
        let m = b"From: a@b.test\r\nList-Id: Weekly news <weekly.news.example.com>\r\n\
                  Subject: x\r\n\r\nList-Unsubscribe: <in the body, not a header>\r\n";
        assert_eq!(
            ListHeaders::of(m),
            ListHeaders {
                has_unsubscribe: false,
                list_id: Some("weekly.news.example.com".into())
            }
        );
        let m = b"list-unsubscribe: <mailto:u@b.test>\r\nFrom: a@b.test\r\n\r\nhi\r\n";
        assert!(ListHeaders::of(m).has_unsubscribe);
        assert_eq!(ListHeaders::of(b"no header block at all").list_id, None);
        assert_eq!(
            ListHeaders::of(b"List-Id: no brackets\r\n\r\n").list_id,
            None
        );
        assert_eq!(
            one_click_fields("https://po.example.com/unsubscribe/abc"),
            b"List-Unsubscribe: <https://po.example.com/unsubscribe/abc>\r\n\
              List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
                .to_vec()
        );
    }
}
