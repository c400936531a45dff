//! The console's Suppression page with entries of one mailing list (issue 19), over HTTP
//! against a real post office: an entry added with a list shows it in the List column; the
//! search by list and by `none`; removing the domain's entry leaves the list's, and removing
//! the list's entry leaves the domain's.
//!
//! Addresses: 127.0.230.40-41.

use std::net::Ipv4Addr;

use crate::console_support::{Console, PASSWORD, USER};

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 230, last)
}

#[tokio::test]
async fn the_suppression_page_adds_shows_and_removes_entries_of_one_list() {
    let console = Console::start(ip(40), |_| {}).await;
    let alice = console.client(ip(41));
    assert_eq!(console.login(&alice, USER, PASSWORD).await.status(), 303);
    let (_, page) = console.get(&alice, "/console/suppressions").await;
    let csrf = Console::csrf(&page);
    let post = |path: &str, form: Vec<(&str, &str)>| {
        let mut form = form;
        form.push(("csrf", csrf.as_str()));
        alice
            .post(format!("{}/console/suppressions/{path}", console.base))
            .form(&form)
            .send()
    };
    let bob = "bob@example.org";
    let r = post(
        "add",
        vec![
            ("recipient", bob),
            ("scope", "news.test"),
            ("list", "<Weekly.News.test>"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("bob@example.org suppressed (scope news.test, list weekly.news.test)"),
        "{text}"
    );
    let r = post("add", vec![("recipient", bob), ("scope", "news.test")])
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A list id that is none: refused, naming the field.
    let r = post(
        "add",
        vec![
            ("recipient", bob),
            ("scope", "news.test"),
            ("list", "two words"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("list"));

    let (_, page) = console.get(&alice, "/console/suppressions").await;
    assert!(page.contains("<th>List</th>"), "{page}");
    assert!(
        page.contains("<td class=\"wrap\">weekly.news.test</td>"),
        "{page}"
    );
    let rows = |page: &str| {
        page.matches("name=\"recipient\" value=\"bob@example.org\"")
            .count()
    };
    assert_eq!(rows(&page), 2);
    let (_, by_list) = console
        .get(&alice, "/console/suppressions?list=weekly.news.test")
        .await;
    assert_eq!(rows(&by_list), 1);
    assert!(
        by_list.contains("name=\"list\" value=\"weekly.news.test\""),
        "{by_list}"
    );
    let (_, whole) = console.get(&alice, "/console/suppressions?list=none").await;
    assert_eq!(rows(&whole), 1);
    assert!(whole.contains("name=\"list\" value=\"none\""), "{whole}");

    // The Remove button of the domain's entry (its form sends list=none): the list's stays.
    let r = post(
        "remove",
        vec![("recipient", bob), ("scope", "news.test"), ("list", "none")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("1 entries removed for bob@example.org (scope news.test)"));
    let (_, page) = console.get(&alice, "/console/suppressions").await;
    assert_eq!(rows(&page), 1);
    assert!(page.contains("weekly.news.test"));
    // Then the list's.
    let r = post(
        "remove",
        vec![
            ("recipient", bob),
            ("scope", "news.test"),
            ("list", "weekly.news.test"),
        ],
    )
    .await
    .unwrap();
    assert!(r.text().await.unwrap().contains(
        "1 entries removed for bob@example.org (scope news.test, list weekly.news.test)"
    ));
    let (_, page) = console.get(&alice, "/console/suppressions").await;
    assert_eq!(rows(&page), 0);
    console.stop().await;
}
