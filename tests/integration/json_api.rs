//! The JSON API beside the book's routes.

use serde_json::json;

use crate::support::NodeBuilder;

#[test]
fn entries_can_be_created_read_updated_and_deleted() {
    let node = NodeBuilder::todo().start();

    let created = node.post(
        "/lists/work%20stuff/entries",
        r#"{"date":"2023-12-19","title":"Standup"}"#,
    );
    assert_eq!(created.status, 201);
    assert_eq!(created.header("content-type"), Some("application/json"));
    assert_eq!(
        created.json(),
        json!({"id": 1, "date": "2023-12-19", "title": "Standup"})
    );
    assert_eq!(
        created.header("location"),
        Some("/lists/work%20stuff/entries/1")
    );

    let second = node.post(
        "/lists/work%20stuff/entries",
        r#"{"date":"2023-12-20","title":"Review"}"#,
    );
    assert_eq!(second.json()["id"], 2);

    // The book's route sees the same list.
    assert_eq!(
        node.get("/entries?list=work%20stuff&date=2023-12-19")
            .text(),
        "2023-12-19 Standup"
    );

    let all = node.get("/lists/work%20stuff/entries");
    assert_eq!(all.status, 200);
    assert_eq!(all.json().as_array().map(Vec::len), Some(2));
    let on_date = node.get("/lists/work%20stuff/entries?date=2023-12-20");
    assert_eq!(
        on_date.json(),
        json!([{"id": 2, "date": "2023-12-20", "title": "Review"}])
    );

    let updated = node.request(
        "PUT",
        "/lists/work%20stuff/entries/1",
        &[],
        br#"{"date":"2023-12-21"}"#,
    );
    assert_eq!(updated.status, 200);
    assert_eq!(
        updated.json(),
        json!({"id": 1, "date": "2023-12-21", "title": "Standup"})
    );
    assert_eq!(
        node.get("/lists/work%20stuff/entries/1").json()["date"],
        "2023-12-21"
    );

    let deleted = node.request("DELETE", "/lists/work%20stuff/entries/1", &[], b"");
    assert_eq!(deleted.status, 204);
    assert!(deleted.body.is_empty());
    let gone = node.get("/lists/work%20stuff/entries/1");
    assert_eq!(gone.status, 404);
    assert!(
        gone.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("no entry 1"))
    );
}

#[test]
fn bad_requests_get_json_errors_with_fitting_statuses() {
    let node = NodeBuilder::todo().start();
    let cases: [(&str, &str, &[u8], u16); 8] = [
        ("POST", "/lists/a/entries", b"{not json", 400),
        (
            "POST",
            "/lists/a/entries",
            br#"{"date":"2023-02-30","title":"x"}"#,
            400,
        ),
        ("POST", "/lists/a/entries", br#"{"date":"2023-02-03"}"#, 400),
        ("PUT", "/lists/a/entries/7", br#"{"title":"x"}"#, 404),
        ("DELETE", "/lists/a/entries/7", b"", 404),
        ("GET", "/lists/a/entries/not-a-number", b"", 404),
        ("PATCH", "/lists/a/entries", b"", 405),
        ("GET", "/lists/%FF/entries", b"", 400),
    ];
    for (method, path, body, status) in cases {
        let response = node.request(method, path, &[], body);
        assert_eq!(
            response.status,
            status,
            "{method} {path}: {}",
            response.text()
        );
        assert!(
            response.json()["error"].is_string(),
            "{method} {path}: {}",
            response.text()
        );
    }
    let not_allowed = node.request("PATCH", "/lists/a/entries", &[], b"");
    assert_eq!(not_allowed.header("allow"), Some("GET, POST"));
}
