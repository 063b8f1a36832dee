//! The observer page, in a real headless browser: it loads, lists the
//! processes of a running node, updates by itself when new lists are
//! added, and drills down into one process (its state, its messages).
//!
//! `OBSERVER_SCREENSHOT=FILE` saves what the browser shows (the README's
//! picture is made this way).

use std::time::Duration;

use crate::support::browser::Browser;
use crate::support::{NodeBuilder, request};

const LIMIT: Duration = Duration::from_secs(20);

fn listed(name: &str) -> String {
    format!(
        "[...document.querySelectorAll('[data-process]')].some(e => e.dataset.process === 'guest_todo/{name}')"
    )
}

#[test]
fn the_observer_lists_processes_live_and_drills_down() {
    let node = NodeBuilder::todo().start();
    let url = node
        .observer_url
        .clone()
        .expect("the ready line gives the observer's address");
    for list in ["alpha", "beta"] {
        let added = node.post(
            &format!("/add_entry?list={list}&date=2023-01-01&title=Plan"),
            "",
        );
        assert_eq!(added.status, 200);
    }

    // The page needs its token.
    let port: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("an observer port");
    assert_eq!(request(port, "GET", "/", &[], b"").status, 403);
    assert_eq!(
        request(port, "GET", "/api/overview?token=wrong", &[], b"").status,
        403
    );

    let mut browser = Browser::open(&url);
    browser.wait_for(&listed("alpha"), LIMIT, "alpha is listed");
    browser.wait_for(&listed("beta"), LIMIT, "beta is listed");
    // Each process's version, and the node's versions with their figures.
    browser.wait_for(
        "document.querySelector('[data-process=\"guest_todo/alpha\"]')?.innerText.includes('1.0.0')",
        LIMIT,
        "alpha's version is shown",
    );
    browser.wait_for(
        "document.getElementById('versions').innerText.includes('current: 1.0.0')",
        LIMIT,
        "the versions are shown",
    );
    browser.wait_for(
        "document.querySelector('[data-node]')?.innerText.includes('test@')",
        LIMIT,
        "the node is listed",
    );

    // Live: a list added now shows up without reloading.
    assert!(!browser.evaluate(&listed("gamma")).as_bool().unwrap_or(true));
    assert_eq!(
        node.post("/add_entry?list=gamma&date=2023-01-02&title=Ship", "")
            .status,
        200
    );
    browser.wait_for(&listed("gamma"), LIMIT, "gamma appears by itself");

    // Drill-down: state, then the messages of a request sent meanwhile.
    browser.evaluate("document.querySelector('[data-process=\"guest_todo/alpha\"]').click(); true");
    browser.wait_for(
        "document.getElementById('drill-state').innerText.includes('list \"alpha\": 1 entry')",
        LIMIT,
        "alpha's state is shown",
    );
    browser.wait_for(
        "document.getElementById('messages').innerText.includes('tracing guest_todo/alpha')",
        LIMIT,
        "alpha's trace started",
    );
    assert_eq!(
        node.get("/entries?list=alpha&date=2023-01-01").text(),
        "2023-01-01 Plan"
    );
    browser.wait_for(
        "document.getElementById('messages').innerText.includes('call: entries 2023-01-01')",
        LIMIT,
        "alpha's message is shown",
    );
    if let Some(path) = std::env::var_os("OBSERVER_SCREENSHOT") {
        std::fs::write(path, browser.screenshot()).expect("write the screenshot");
    }
}
