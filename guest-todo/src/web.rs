//! `Todo.Web`: the book's routes, byte for byte, and a JSON API beside them.
//!
//! Book routes (text/plain):
//! - `POST /add_entry?list=L&date=YYYY-MM-DD&title=T` → 200 `OK`
//! - `GET /entries?list=L&date=YYYY-MM-DD` → 200, `YYYY-MM-DD Title` lines
//!   joined by `\n`
//! - anything else → 404 `not found`
//!
//! Where the book answers 500 with an empty body (a missing parameter, a bad
//! date) these answer 400 and say what is wrong.
//!
//! JSON API: `GET|POST /lists/{list}/entries[?date=]`,
//! `GET|PUT|DELETE /lists/{list}/entries/{id}`; errors are
//! `{"error": "..."}` with a fitting status.
//!
//! Version 2 (feature `v2`) adds done marks to the JSON API: entries carry
//! `"done"`, and `PUT` takes `{"done": true}` (with or without `date` and
//! `title`). The book's routes do not change by a byte. While a swap runs, a
//! version 2 front may reach a version 1 list: reads then leave `done` out,
//! and marking an entry answers 503 (not done; try again after the swap).

use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::json;

use guest_sdk::CallError;
use guest_sdk::http::{Request, Response};

use crate::date::Date;
use crate::list::{Entry, EntryUpdate};
use crate::protocol::{Reply, Request as ListRequest};
use crate::server::validate_list_name;

/// Longest title accepted.
const MAX_TITLE_BYTES: usize = 4096;

/// How the front reaches a list: a call to its process.
pub trait Lists {
    fn call(&self, list: &str, request: &ListRequest) -> Result<Reply, CallError>;
}

/// Whether a response is for the book's plain-text routes or the JSON API.
#[derive(Clone, Copy)]
enum Style {
    Text,
    Json,
}

/// An answer other than success, in either style.
pub(crate) struct Failure {
    status: u16,
    message: String,
}

impl Failure {
    /// What went wrong, in one line (the console shows it as is).
    pub(crate) fn into_message(self) -> String {
        self.message
    }
}

fn failure(status: u16, message: impl Into<String>) -> Failure {
    Failure {
        status,
        message: message.into(),
    }
}

impl Failure {
    fn into_response(self, style: Style) -> Response {
        match style {
            Style::Text => Response::text(self.status, self.message),
            Style::Json => json_response(self.status, &json!({ "error": self.message })),
        }
    }
}

pub fn route(lists: &impl Lists, request: &Request) -> Response {
    let segments: Vec<&str> = request.path.split('/').skip(1).collect();
    let method = request.method.as_str();
    let (style, result) = match (method, segments.as_slice()) {
        ("POST", ["add_entry"]) => (Style::Text, book_add_entry(lists, &request.query)),
        ("GET", ["entries"]) => (Style::Text, book_entries(lists, &request.query)),
        (_, ["lists", list, "entries"]) => (Style::Json, entries_api(lists, method, list, request)),
        (_, ["lists", list, "entries", id]) => {
            (Style::Json, entry_api(lists, method, list, id, request))
        }
        _ => (Style::Text, Err(failure(404, "not found"))),
    };
    result.unwrap_or_else(|failure| failure.into_response(style))
}

fn book_add_entry(lists: &impl Lists, query: &str) -> Result<Response, Failure> {
    let params = Params::parse(query)?;
    let list = params.list()?;
    let date = params.date()?;
    let title = validate_title(params.required("title")?)?;
    match lists.call(&list, &ListRequest::Add { date, title })? {
        Reply::Entry(_) => Ok(Response::text(200, "OK")),
        other => Err(reply_failure(other)),
    }
}

fn book_entries(lists: &impl Lists, query: &str) -> Result<Response, Failure> {
    let params = Params::parse(query)?;
    let list = params.list()?;
    let date = params.date()?;
    match lists.call(&list, &ListRequest::Entries { date: Some(date) })? {
        Reply::Entries(entries) => {
            let mut body = String::with_capacity(entries.iter().map(|e| e.title.len() + 12).sum());
            for (index, entry) in entries.iter().enumerate() {
                if index > 0 {
                    body.push('\n');
                }
                entry.date.push_onto(&mut body);
                body.push(' ');
                body.push_str(&entry.title);
            }
            Ok(Response::text(200, body))
        }
        other => Err(reply_failure(other)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEntry {
    date: String,
    title: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangedEntry {
    date: Option<String>,
    title: Option<String>,
    #[cfg(feature = "v2")]
    done: Option<bool>,
}

/// What PUT says when it is given nothing to change.
#[cfg(not(feature = "v2"))]
const NOTHING_TO_CHANGE: &str = "give `date`, `title` or both";
#[cfg(feature = "v2")]
const NOTHING_TO_CHANGE: &str = "give `date`, `title`, `done` or several of them";

/// v2: an entry as the JSON API shows it, with its done mark.
#[cfg(feature = "v2")]
#[derive(serde::Serialize)]
struct WithDone<'a> {
    #[serde(flatten)]
    entry: &'a Entry,
    done: bool,
}

#[cfg(feature = "v2")]
impl<'a> From<&'a (Entry, bool)> for WithDone<'a> {
    fn from((entry, done): &'a (Entry, bool)) -> Self {
        Self { entry, done: *done }
    }
}

/// v2: asks `list` with `request`; when the list runs version 1, which
/// does not know it, with `older` instead (if there is one).
#[cfg(feature = "v2")]
fn call_newest(
    lists: &impl Lists,
    list: &str,
    request: &ListRequest,
    older: Option<&ListRequest>,
) -> Result<Reply, Failure> {
    let reply = lists.call(list, request)?;
    match older {
        Some(older) if reply.is_unknown_request() => Ok(lists.call(list, older)?),
        _ => Ok(reply),
    }
}

fn entries_api(
    lists: &impl Lists,
    method: &str,
    list: &str,
    request: &Request,
) -> Result<Response, Failure> {
    let list = decode_list(list)?;
    match method {
        "GET" => {
            let params = Params::parse(&request.query)?;
            let date = match params.get("date") {
                Some(text) => Some(Date::parse(text).map_err(|e| failure(400, e))?),
                None => None,
            };
            #[cfg(feature = "v2")]
            let reply = call_newest(
                lists,
                &list,
                &ListRequest::EntriesV2 { date },
                Some(&ListRequest::Entries { date }),
            )?;
            #[cfg(not(feature = "v2"))]
            let reply = lists.call(&list, &ListRequest::Entries { date })?;
            match reply {
                Reply::Entries(entries) => Ok(json_response(200, &entries)),
                #[cfg(feature = "v2")]
                Reply::EntriesV2(entries) => {
                    let entries: Vec<WithDone> = entries.iter().map(WithDone::from).collect();
                    Ok(json_response(200, &entries))
                }
                other => Err(reply_failure(other)),
            }
        }
        "POST" => {
            let new: NewEntry = parse_json(&request.body)?;
            let date = Date::parse(&new.date).map_err(|e| failure(400, e))?;
            let title = validate_title(new.title)?;
            match lists.call(&list, &ListRequest::Add { date, title })? {
                Reply::Entry(entry) => Ok(entry_created(&list, &entry)),
                other => Err(reply_failure(other)),
            }
        }
        _ => {
            let f = failure(
                405,
                format!("{method} is not allowed here; use GET or POST"),
            );
            Ok(method_not_allowed(f, "GET, POST"))
        }
    }
}

fn entry_api(
    lists: &impl Lists,
    method: &str,
    list: &str,
    id: &str,
    request: &Request,
) -> Result<Response, Failure> {
    let list = decode_list(list)?;
    let id: u64 = id
        .parse()
        .map_err(|_| failure(404, format!("`{id}` is not an entry id")))?;
    let list_request = match method {
        "GET" => ListRequest::Get { id },
        "PUT" => {
            let changed: ChangedEntry = parse_json(&request.body)?;
            #[cfg(feature = "v2")]
            let nothing = changed.done.is_none();
            #[cfg(not(feature = "v2"))]
            let nothing = true;
            if changed.date.is_none() && changed.title.is_none() && nothing {
                return Err(failure(400, NOTHING_TO_CHANGE));
            }
            let date = match changed.date {
                Some(text) => Some(Date::parse(&text).map_err(|e| failure(400, e))?),
                None => None,
            };
            let title = changed.title.map(validate_title).transpose()?;
            #[cfg(feature = "v2")]
            if changed.done.is_some() {
                let update = EntryUpdate { date, title };
                let done = changed.done;
                return entry_reply(
                    &list,
                    id,
                    lists.call(&list, &ListRequest::UpdateV2 { id, update, done })?,
                );
            }
            ListRequest::Update {
                id,
                update: EntryUpdate { date, title },
            }
        }
        "DELETE" => ListRequest::Delete { id },
        _ => {
            let f = failure(
                405,
                format!("{method} is not allowed here; use GET, PUT or DELETE"),
            );
            return Ok(method_not_allowed(f, "GET, PUT, DELETE"));
        }
    };
    // Version 2 reads and changes entries with their done marks, falling
    // back to version 1's requests for a list that runs it.
    #[cfg(feature = "v2")]
    let reply = match &list_request {
        ListRequest::Get { id } => call_newest(
            lists,
            &list,
            &ListRequest::GetV2 { id: *id },
            Some(&list_request),
        )?,
        ListRequest::Update { id, update } => {
            let newest = ListRequest::UpdateV2 {
                id: *id,
                update: update.clone(),
                done: None,
            };
            call_newest(lists, &list, &newest, Some(&list_request))?
        }
        _ => lists.call(&list, &list_request)?,
    };
    #[cfg(not(feature = "v2"))]
    let reply = lists.call(&list, &list_request)?;
    entry_reply(&list, id, reply)
}

/// The answer to a request about entry `id` of `list`.
fn entry_reply(list: &str, id: u64, reply: Reply) -> Result<Response, Failure> {
    match reply {
        Reply::Entry(entry) => Ok(json_response(200, &entry)),
        #[cfg(feature = "v2")]
        Reply::EntryV2(entry, done) => Ok(json_response(200, &WithDone::from(&(entry, done)))),
        Reply::Deleted => Ok(Response::new(204, "application/json", Vec::new())),
        Reply::NoSuchEntry => Err(failure(404, format!("list `{list}` has no entry {id}"))),
        other => Err(reply_failure(other)),
    }
}

fn entry_created(list: &str, entry: &Entry) -> Response {
    let location = format!(
        "/lists/{}/entries/{}",
        percent_encoding::utf8_percent_encode(list, percent_encoding::NON_ALPHANUMERIC),
        entry.id
    );
    // A new entry is never done, whichever version its list runs.
    #[cfg(feature = "v2")]
    let response = json_response(201, &WithDone { entry, done: false });
    #[cfg(not(feature = "v2"))]
    let response = json_response(201, entry);
    response.with_header("location", &location)
}

fn method_not_allowed(failure: Failure, allow: &str) -> Response {
    failure
        .into_response(Style::Json)
        .with_header("allow", allow)
}

fn json_response(status: u16, value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response::new(status, "application/json", body)
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| failure(400, format!("invalid JSON body: {e}")))
}

fn decode_list(segment: &str) -> Result<String, Failure> {
    let list = percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| failure(400, "the list name is not valid UTF-8"))?
        .into_owned();
    validate_list_name(&list).map_err(|e| failure(400, e))?;
    Ok(list)
}

pub(crate) fn validate_title(title: String) -> Result<String, Failure> {
    if title.len() > MAX_TITLE_BYTES {
        return Err(failure(
            400,
            format!("a title must be at most {MAX_TITLE_BYTES} bytes"),
        ));
    }
    if title.chars().any(char::is_control) {
        return Err(failure(400, "a title must not contain control characters"));
    }
    Ok(title)
}

/// The failure a reply other than the one hoped for means.
pub(crate) fn reply_failure(reply: Reply) -> Failure {
    match reply {
        Reply::Full(message) => failure(409, message),
        reply if reply.is_unknown_request() => failure(
            503,
            "not applied: the list runs an older version of the Todo component, which cannot do this: \
             nothing changed; try again once the swap of versions is over",
        ),
        Reply::Failed(message) => failure(500, format!("not applied: {message}")),
        Reply::Unavailable(message) => failure(503, format!("not applied: {message}")),
        other => failure(500, format!("unexpected reply from the list: {other:?}")),
    }
}

impl From<CallError> for Failure {
    fn from(error: CallError) -> Self {
        match error {
            CallError::TimedOut => failure(
                504,
                "outcome unknown: the list did not answer in time; the request may or may not \
                 have been applied (read before trying again)",
            ),
            CallError::Crashed(reason) => failure(
                500,
                format!(
                    "outcome unknown: the list ended while it held the request, which may or \
                     may not have been applied (read before trying again): {reason}"
                ),
            ),
            CallError::Refused(reason) => failure(
                503,
                format!("not applied: the list is unavailable: {reason}"),
            ),
            CallError::NoSuchComponent(name) => {
                failure(500, format!("not applied: no component `{name}`"))
            }
        }
    }
}

/// Query parameters, decoded.
struct Params(Vec<(String, String)>);

impl Params {
    /// The query's pairs, decoded (`+` is a space, `%XX` a byte). A name or
    /// value whose bytes are not UTF-8 is refused rather than mended: `%FF`
    /// and `%FE` must not both become U+FFFD and name the same list.
    fn parse(query: &str) -> Result<Self, Failure> {
        let decode = |part: &str| {
            let spaced = part.replace('+', " ");
            percent_decode_str(&spaced)
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| failure(400, format!("query parameter `{part}` is not valid UTF-8")))
        };
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                Ok((decode(name)?, decode(value)?))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> Result<String, Failure> {
        self.get(name)
            .map(str::to_string)
            .ok_or_else(|| failure(400, format!("missing query parameter `{name}`")))
    }

    fn list(&self) -> Result<String, Failure> {
        let list = self.required("list")?;
        validate_list_name(&list).map_err(|e| failure(400, e))?;
        Ok(list)
    }

    fn date(&self) -> Result<Date, Failure> {
        Date::parse(&self.required("date")?).map_err(|e| failure(400, e))
    }
}

/// Lists served in-process, for native tests and the fuzz targets.
#[cfg(any(test, feature = "fuzzing"))]
pub mod local {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::{CallError, ListRequest, Lists, Reply};
    use crate::server::TodoServer;
    use crate::store::memory::MemoryStore;

    /// Lists served in-process, over one in-memory store.
    #[derive(Default)]
    pub struct LocalLists {
        pub store: MemoryStore,
        servers: RefCell<HashMap<String, TodoServer<MemoryStore>>>,
    }

    impl Lists for LocalLists {
        fn call(&self, list: &str, request: &ListRequest) -> Result<Reply, CallError> {
            let mut servers = self.servers.borrow_mut();
            if !servers.contains_key(list) {
                let server =
                    TodoServer::load(list, self.store.clone()).map_err(CallError::Refused)?;
                servers.insert(list.to_string(), server);
            }
            let server = servers.get_mut(list).ok_or(CallError::TimedOut)?;
            Ok(server.handle(request.clone()))
        }
    }

    impl LocalLists {
        /// Each list as it is served, beside the same list loaded again
        /// from the store.
        pub fn served_and_stored(&self) -> Vec<(String, String)> {
            self.servers
                .borrow()
                .iter()
                .map(|(name, server)| {
                    let stored = TodoServer::load(name, self.store.clone())
                        .map_or_else(|e| format!("not loaded: {e}"), |s| s.render_state());
                    (server.render_state(), stored)
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use local::LocalLists;

    /// Lists that always fail with `error`.
    struct FailingLists(CallError);

    impl Lists for FailingLists {
        fn call(&self, _: &str, _: &ListRequest) -> Result<Reply, CallError> {
            Err(self.0.clone())
        }
    }

    fn request(method: &str, target: &str, body: &str) -> Request {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn send(lists: &impl Lists, method: &str, target: &str, body: &str) -> (u16, String) {
        let response = route(lists, &request(method, target, body));
        (
            response.status,
            String::from_utf8(response.body).expect("utf-8 body"),
        )
    }

    #[test]
    fn the_book_routes_answer_as_the_book_does() {
        let lists = LocalLists::default();
        let add = |date: &str, title: &str| {
            send(
                &lists,
                "POST",
                &format!("/add_entry?list=bob&date={date}&title={title}"),
                "",
            )
        };
        assert_eq!(add("2023-12-19", "Dentist"), (200, "OK".into()));
        assert_eq!(add("2023-12-20", "Shopping"), (200, "OK".into()));
        assert_eq!(add("2023-12-19", "Movies%20night"), (200, "OK".into()));
        assert_eq!(
            send(&lists, "GET", "/entries?list=bob&date=2023-12-19", ""),
            (200, "2023-12-19 Dentist\n2023-12-19 Movies night".into())
        );
        assert_eq!(
            send(&lists, "GET", "/entries?list=bob&date=2023-12-21", ""),
            (200, String::new())
        );
        assert_eq!(
            send(&lists, "GET", "/entries?list=alice&date=2023-12-19", ""),
            (200, String::new())
        );
        assert_eq!(
            send(
                &lists,
                "GET",
                "/add_entry?list=bob&date=2023-12-19&title=x",
                ""
            ),
            (404, "not found".into())
        );
        assert_eq!(
            send(&lists, "GET", "/nowhere", ""),
            (404, "not found".into())
        );
        let text = route(
            &lists,
            &request("GET", "/entries?list=bob&date=2023-12-19", ""),
        );
        assert_eq!(
            text.headers[0],
            ("content-type".into(), "text/plain; charset=utf-8".into())
        );
    }

    #[test]
    fn query_bytes_that_are_not_utf8_are_refused_not_mended() {
        let lists = LocalLists::default();
        for query in [
            "list=%FF&date=2023-01-01&title=a",
            "list=%FE&date=2023-01-01&title=a",
            "list=%C0%80&date=2023-01-01&title=a",
            "list=bob&date=2023-01-01&title=%C3%28",
        ] {
            let (status, body) = send(&lists, "POST", &format!("/add_entry?{query}"), "");
            assert_eq!(status, 400, "{query}: {body}");
            assert!(body.contains("not valid UTF-8"), "{query}: {body}");
        }
        // Nothing was stored; valid escapes and `+` still decode.
        assert_eq!(
            send(&lists, "GET", "/entries?list=bob&date=2023-01-01", ""),
            (200, String::new())
        );
        assert_eq!(
            send(
                &lists,
                "POST",
                "/add_entry?list=bob&date=2023-01-01&title=caf%C3%A9+au+lait",
                ""
            )
            .0,
            200
        );
        assert_eq!(
            send(&lists, "GET", "/entries?list=bob&date=2023-01-01", ""),
            (200, "2023-01-01 café au lait".into())
        );
    }

    #[test]
    fn the_book_routes_say_what_is_wrong() {
        let lists = LocalLists::default();
        let (status, body) = send(&lists, "POST", "/add_entry?date=2023-12-19&title=x", "");
        assert_eq!(
            (status, body.as_str()),
            (400, "missing query parameter `list`")
        );
        let (status, body) = send(
            &lists,
            "POST",
            "/add_entry?list=a&date=2023-13-01&title=x",
            "",
        );
        assert_eq!(status, 400);
        assert!(body.contains("2023-13-01"), "{body}");
        let (status, body) = send(&lists, "GET", "/entries?list=a", "");
        assert_eq!(
            (status, body.as_str()),
            (400, "missing query parameter `date`")
        );
        let (status, _) = send(
            &lists,
            "POST",
            "/add_entry?list=a&date=2023-12-19&title=a%0Ab",
            "",
        );
        assert_eq!(status, 400);
    }

    /// Version 1's JSON, exactly (version 2's adds `done`).
    #[cfg(not(feature = "v2"))]
    #[test]
    fn the_json_api_creates_reads_updates_and_deletes() {
        let lists = LocalLists::default();
        let response = route(
            &lists,
            &request(
                "POST",
                "/lists/my%20list/entries",
                r#"{"date":"2023-12-19","title":"Dentist"}"#,
            ),
        );
        assert_eq!(response.status, 201);
        assert!(
            response
                .headers
                .contains(&("location".into(), "/lists/my%20list/entries/1".into()))
        );
        let created: serde_json::Value = serde_json::from_slice(&response.body).expect("json");
        assert_eq!(
            created,
            json!({"id": 1, "date": "2023-12-19", "title": "Dentist"})
        );

        send(
            &lists,
            "POST",
            "/lists/my%20list/entries",
            r#"{"date":"2023-12-20","title":"Shopping"}"#,
        );
        let (status, body) = send(
            &lists,
            "GET",
            "/lists/my%20list/entries?date=2023-12-20",
            "",
        );
        assert_eq!(status, 200);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).expect("json"),
            json!([{"id": 2, "date": "2023-12-20", "title": "Shopping"}])
        );

        let (status, body) = send(
            &lists,
            "PUT",
            "/lists/my%20list/entries/1",
            r#"{"title":"Dentist at 9"}"#,
        );
        assert_eq!(status, 200);
        assert!(body.contains("Dentist at 9"));
        assert_eq!(
            send(&lists, "DELETE", "/lists/my%20list/entries/1", ""),
            (204, String::new())
        );
        let (status, body) = send(&lists, "GET", "/lists/my%20list/entries/1", "");
        assert_eq!(status, 404);
        assert!(body.contains("\"error\""), "{body}");
        let (_, body) = send(&lists, "GET", "/lists/my%20list/entries", "");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body)
                .expect("json")
                .as_array()
                .map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn the_json_api_rejects_bad_input_with_json_errors() {
        let lists = LocalLists::default();
        for (method, target, body, status) in [
            ("POST", "/lists/a/entries", "not json", 400),
            (
                "POST",
                "/lists/a/entries",
                r#"{"date":"2023-02-30","title":"x"}"#,
                400,
            ),
            ("POST", "/lists/a/entries", r#"{"title":"x"}"#, 400),
            (
                "POST",
                "/lists/a/entries",
                r#"{"date":"2023-02-03","title":"x","extra":1}"#,
                400,
            ),
            ("PUT", "/lists/a/entries/1", r#"{}"#, 400),
            ("PUT", "/lists/a/entries/1", r#"{"title":"x"}"#, 404),
            ("DELETE", "/lists/a/entries/abc", "", 404),
            ("PATCH", "/lists/a/entries", "", 405),
            ("POST", "/lists/a/entries/1", "", 405),
            ("GET", "/lists/a/entries?date=tomorrow", "", 400),
        ] {
            let response = route(&lists, &request(method, target, body));
            assert_eq!(response.status, status, "{method} {target} {body}");
            let error: serde_json::Value =
                serde_json::from_slice(&response.body).expect("a JSON error");
            assert!(error["error"].is_string(), "{method} {target}: {error}");
        }
        let response = route(&lists, &request("PATCH", "/lists/a/entries", ""));
        assert!(
            response
                .headers
                .contains(&("allow".into(), "GET, POST".into()))
        );
    }

    #[test]
    fn a_full_list_answers_409_on_both_apis_and_keeps_serving() {
        let lists = LocalLists::default();
        // Titles as long as one may be, until they fill the list.
        let long = "t".repeat(MAX_TITLE_BYTES);
        let body = format!(r#"{{"date":"2023-01-01","title":"{long}"}}"#);
        for _ in 0..crate::list::MAX_LIST_TITLE_BYTES / MAX_TITLE_BYTES {
            assert_eq!(send(&lists, "POST", "/lists/full/entries", &body).0, 201);
        }
        let (status, text) = send(&lists, "POST", "/lists/full/entries", &body);
        assert_eq!(status, 409, "{text}");
        assert!(text.contains("the list is full"), "{text}");
        let (status, text) = send(
            &lists,
            "POST",
            "/add_entry?list=full&date=2023-01-01&title=more",
            "",
        );
        assert_eq!((status, text.contains("the list is full")), (409, true));
        assert_eq!(
            send(&lists, "GET", "/entries?list=full&date=2023-01-02", "").0,
            200
        );
        assert_eq!(send(&lists, "DELETE", "/lists/full/entries/1", "").0, 204);
        assert_eq!(send(&lists, "POST", "/lists/full/entries", &body).0, 201);
    }

    #[test]
    fn a_write_the_host_cannot_make_answers_503_with_the_reason() {
        let lists = LocalLists::default();
        *lists.store.failing.borrow_mut() = Some(crate::store::StoreError::Unavailable(
            "this node is cut off from the cluster".into(),
        ));
        let (status, text) = send(
            &lists,
            "POST",
            "/add_entry?list=a&date=2023-01-01&title=t",
            "",
        );
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("cut off from the cluster"), "{text}");
        let (status, text) = send(
            &lists,
            "POST",
            "/lists/a/entries",
            r#"{"date":"2023-01-01","title":"t"}"#,
        );
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("cut off"), "{text}");
        // Reads are unaffected.
        assert_eq!(send(&lists, "GET", "/lists/a/entries", "").0, 200);
    }

    #[test]
    fn call_errors_map_to_statuses_that_say_not_applied_or_outcome_unknown() {
        for (error, status, says) in [
            (CallError::TimedOut, 504, "outcome unknown: "),
            (CallError::Crashed("trap".into()), 500, "outcome unknown: "),
            (
                CallError::Refused("cooling down".into()),
                503,
                "not applied: ",
            ),
        ] {
            let lists = FailingLists(error);
            let book = send(&lists, "GET", "/entries?list=a&date=2023-01-01", "");
            assert_eq!(book.0, status);
            assert!(book.1.starts_with(says), "{}", book.1);
            let json = send(
                &lists,
                "POST",
                "/lists/a/entries",
                r#"{"date":"2023-01-01","title":"t"}"#,
            );
            assert_eq!(json.0, status);
            assert!(json.1.contains(says), "{}", json.1);
        }
    }

    /// A version 1 list: it knows none of version 2's requests.
    #[cfg(feature = "v2")]
    #[derive(Default)]
    struct Version1Lists(LocalLists);

    #[cfg(feature = "v2")]
    impl Lists for Version1Lists {
        fn call(&self, list: &str, request: &ListRequest) -> Result<Reply, CallError> {
            match request {
                ListRequest::EntriesV2 { .. }
                | ListRequest::GetV2 { .. }
                | ListRequest::UpdateV2 { .. } => Ok(Reply::Failed(
                    "malformed request: Found an enum discriminant that was out of range".into(),
                )),
                older => self.0.call(list, older),
            }
        }
    }

    #[cfg(feature = "v2")]
    fn json_of(body: &str) -> serde_json::Value {
        serde_json::from_str(body).expect("json")
    }

    #[cfg(feature = "v2")]
    #[test]
    fn version_2_marks_entries_done_on_the_json_api_only() {
        let lists = LocalLists::default();
        let new = r#"{"date":"2023-12-19","title":"Dentist"}"#;
        let (status, body) = send(&lists, "POST", "/lists/l/entries", new);
        assert_eq!(status, 201);
        assert_eq!(
            json_of(&body),
            json!({"id": 1, "date": "2023-12-19", "title": "Dentist", "done": false})
        );
        let (status, body) = send(&lists, "PUT", "/lists/l/entries/1", r#"{"done":true}"#);
        assert_eq!(status, 200, "{body}");
        assert_eq!(json_of(&body)["done"], true);
        let (_, body) = send(&lists, "GET", "/lists/l/entries", "");
        assert_eq!(
            json_of(&body),
            json!([{"id": 1, "date": "2023-12-19", "title": "Dentist", "done": true}])
        );
        let changed = r#"{"title":"Dentist at 10"}"#;
        let (_, body) = send(&lists, "PUT", "/lists/l/entries/1", changed);
        assert_eq!(json_of(&body)["done"], true, "a change keeps the mark");
        let (_, body) = send(&lists, "GET", "/lists/l/entries/1", "");
        assert_eq!(json_of(&body)["title"], "Dentist at 10");
        assert_eq!(json_of(&body)["done"], true);
        // The book's routes do not change by a byte.
        let (status, body) = send(&lists, "GET", "/entries?list=l&date=2023-12-19", "");
        assert_eq!((status, body.as_str()), (200, "2023-12-19 Dentist at 10"));
        let (status, body) = send(&lists, "PUT", "/lists/l/entries/1", "{}");
        assert_eq!(status, 400);
        assert!(body.contains("done"), "{body}");
        let (status, _) = send(&lists, "PUT", "/lists/l/entries/1", r#"{"done":"yes"}"#);
        assert_eq!(status, 400);
    }

    #[cfg(feature = "v2")]
    #[test]
    fn version_2_serves_version_1_lists_without_marks() {
        let lists = Version1Lists::default();
        let new = r#"{"date":"2023-12-19","title":"Dentist"}"#;
        assert_eq!(send(&lists, "POST", "/lists/l/entries", new).0, 201);
        let (status, body) = send(&lists, "GET", "/lists/l/entries", "");
        assert_eq!(status, 200);
        assert_eq!(
            json_of(&body),
            json!([{"id": 1, "date": "2023-12-19", "title": "Dentist"}])
        );
        let (status, body) = send(&lists, "GET", "/lists/l/entries/1", "");
        assert_eq!((status, json_of(&body).get("done")), (200, None));
        let changed = r#"{"title":"Dentist at 10"}"#;
        assert_eq!(send(&lists, "PUT", "/lists/l/entries/1", changed).0, 200);
        let (status, body) = send(&lists, "PUT", "/lists/l/entries/1", r#"{"done":true}"#);
        assert_eq!(status, 503, "not done, and says so: {body}");
        assert!(body.contains("older version"), "{body}");
        let (_, body) = send(&lists, "GET", "/lists/l/entries/1", "");
        assert_eq!(json_of(&body)["title"], "Dentist at 10");
    }
}
