//! The `List-Id:` reader intake runs on every post whose recipient has an entry of one list
//! (`hedwig_core::list_id`): a field scanned out of the header block, then RFC 2919's
//! `[phrase] <list-id>` with quoted strings and comments.
//!
//! Input: a message (header block first). Checked:
//! - no panic, on the message and on its bytes as one field value;
//! - an id found is one `valid` says is an id, its key (lowercase) too unless longer than
//!   the limit, and written as
//!   `List-Id: <id>` it is read back as itself.
#![no_main]

use hedwig_core::list_id;
use libfuzzer_sys::fuzz_target;

fn check(id: &str) {
    assert!(list_id::valid(id), "{id:?} returned but not valid");
    // Lowercasing may lengthen an id past the limit (then it is no list on either side).
    let key = list_id::key(id);
    assert!(
        key.len() > list_id::MAX_LIST_ID || list_id::valid(&key),
        "{id:?}: key {key:?}"
    );
    assert_eq!(list_id::parse(&format!("<{id}>")).as_deref(), Some(id));
    let message = format!("List-Id: Some list <{id}>\r\n\r\nbody");
    assert_eq!(list_id::of(message.as_bytes()).as_deref(), Some(id));
}

fuzz_target!(|data: &[u8]| {
    if let Some(id) = list_id::of(data) {
        check(&id);
    }
    if let Some(id) = list_id::parse(&String::from_utf8_lossy(data)) {
        check(&id);
    }
});
