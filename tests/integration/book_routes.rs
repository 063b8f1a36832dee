//! The book's routes, byte for byte.

use crate::support::NodeBuilder;

#[test]
fn add_entry_and_entries_answer_as_the_book() {
    let node = NodeBuilder::todo().start();

    let added = node.request(
        "POST",
        "/add_entry?list=bob&date=2023-12-19&title=Dentist",
        &[],
        b"",
    );
    assert_eq!(added.status, 200);
    assert_eq!(added.body, b"OK");
    assert_eq!(
        added.header("content-type"),
        Some("text/plain; charset=utf-8")
    );

    node.request(
        "POST",
        "/add_entry?list=bob&date=2023-12-20&title=Shopping",
        &[],
        b"",
    );
    node.request(
        "POST",
        "/add_entry?list=bob&date=2023-12-19&title=Movies%20night",
        &[],
        b"",
    );
    node.request(
        "POST",
        "/add_entry?list=alice&date=2023-12-19&title=Gym",
        &[],
        b"",
    );

    let entries = node.get("/entries?list=bob&date=2023-12-19");
    assert_eq!(entries.status, 200);
    assert_eq!(entries.body, b"2023-12-19 Dentist\n2023-12-19 Movies night");
    assert_eq!(
        entries.header("content-type"),
        Some("text/plain; charset=utf-8")
    );

    let none = node.get("/entries?list=bob&date=2023-12-21");
    assert_eq!((none.status, none.body.as_slice()), (200, &b""[..]));

    let alice = node.get("/entries?list=alice&date=2023-12-19");
    assert_eq!(alice.body, b"2023-12-19 Gym");
}

#[test]
fn everything_else_is_404_not_found() {
    let node = NodeBuilder::todo().start();
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/add_entry?list=a&date=2023-12-19&title=x"),
        ("POST", "/entries?list=a&date=2023-12-19"),
        ("GET", "/entries/extra"),
        ("DELETE", "/whatever"),
    ] {
        let response = node.request(method, path, &[], b"");
        assert_eq!(
            (response.status, response.text().as_str()),
            (404, "not found"),
            "{method} {path}"
        );
    }
}

#[test]
fn missing_parameters_and_bad_dates_are_400_with_a_reason() {
    let node = NodeBuilder::todo().start();
    let cases = [
        (
            "POST",
            "/add_entry?date=2023-12-19&title=x",
            "missing query parameter `list`",
        ),
        (
            "POST",
            "/add_entry?list=a&title=x",
            "missing query parameter `date`",
        ),
        (
            "POST",
            "/add_entry?list=a&date=2023-12-19",
            "missing query parameter `title`",
        ),
        ("GET", "/entries?list=a", "missing query parameter `date`"),
        (
            "GET",
            "/entries?date=2023-12-19",
            "missing query parameter `list`",
        ),
    ];
    for (method, path, reason) in cases {
        let response = node.request(method, path, &[], b"");
        assert_eq!(
            (response.status, response.text().as_str()),
            (400, reason),
            "{method} {path}"
        );
    }
    for date in ["2023-02-30", "2023-13-01", "yesterday", "2023-1-1"] {
        let response = node.request(
            "POST",
            &format!("/add_entry?list=a&date={date}&title=x"),
            &[],
            b"",
        );
        assert_eq!(response.status, 400, "{date}");
        assert!(
            response.text().contains(date),
            "{date}: {}",
            response.text()
        );
    }
    // Nothing was stored by the rejected requests.
    assert_eq!(node.get("/entries?list=a&date=2023-12-19").body, b"");
}
