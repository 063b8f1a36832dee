//! The typed API (`todo:app/todo`) and what an operator sees of a list
//! (`otp:platform/introspect`), in plain Rust: `lib.rs` converts to and from
//! the WIT types.
//!
//! The API functions are the book's `Todo.Server` client functions: each
//! reaches the list's process by name through [`Lists`], exactly as the
//! HTTP routes do, so a console call and a request see the same list.

use crate::date::Date;
use crate::list::{Entry, EntryUpdate};
use crate::protocol::{Reply, Request};
use crate::server::validate_list_name;
use crate::web::{Failure, Lists, reply_failure, validate_title};

pub fn add_entry(
    lists: &impl Lists,
    list: &str,
    date: &str,
    title: String,
) -> Result<Entry, String> {
    let date = parse_date(date)?;
    let title = validate_title(title).map_err(Failure::into_message)?;
    match ask(lists, list, &Request::Add { date, title })? {
        Reply::Entry(entry) => Ok(entry),
        other => Err(unexpected(other)),
    }
}

pub fn entries(lists: &impl Lists, list: &str, date: Option<&str>) -> Result<Vec<Entry>, String> {
    let date = date.map(parse_date).transpose()?;
    match ask(lists, list, &Request::Entries { date })? {
        Reply::Entries(entries) => Ok(entries),
        other => Err(unexpected(other)),
    }
}

pub fn update_entry(
    lists: &impl Lists,
    list: &str,
    id: u64,
    date: Option<&str>,
    title: Option<String>,
) -> Result<Entry, String> {
    let update = EntryUpdate {
        date: date.map(parse_date).transpose()?,
        title: title
            .map(validate_title)
            .transpose()
            .map_err(Failure::into_message)?,
    };
    match ask(lists, list, &Request::Update { id, update })? {
        Reply::Entry(entry) => Ok(entry),
        other => Err(unexpected(other)),
    }
}

pub fn delete_entry(lists: &impl Lists, list: &str, id: u64) -> Result<(), String> {
    match ask(lists, list, &Request::Delete { id })? {
        Reply::Deleted => Ok(()),
        other => Err(unexpected(other)),
    }
}

fn ask(lists: &impl Lists, list: &str, request: &Request) -> Result<Reply, String> {
    validate_list_name(list)?;
    lists
        .call(list, request)
        .map_err(|error| Failure::from(error).into_message())
}

fn parse_date(text: &str) -> Result<Date, String> {
    Date::parse(text)
}

fn unexpected(reply: Reply) -> String {
    match reply {
        Reply::NoSuchEntry => "no such entry".to_string(),
        other => reply_failure(other).into_message(),
    }
}

/// A list's state, as `state NAME` shows it: one line for the list, one per
/// entry (the first [`SHOWN_ENTRIES`]), those in `done` marked so.
pub fn render_state(
    name: &str,
    next_id: u64,
    entries: &[Entry],
    done: &std::collections::BTreeSet<u64>,
) -> String {
    let mut out = format!(
        "list {name:?}: {} {}, next id {next_id}",
        entries.len(),
        if entries.len() == 1 {
            "entry"
        } else {
            "entries"
        }
    );
    for entry in entries.iter().take(SHOWN_ENTRIES) {
        out.push_str(&format!(
            "\n  {:>5}  {}  {}{}",
            entry.id,
            entry.date,
            entry.title,
            if done.contains(&entry.id) {
                "  (done)"
            } else {
                ""
            }
        ));
    }
    if entries.len() > SHOWN_ENTRIES {
        out.push_str(&format!("\n  ... {} more", entries.len() - SHOWN_ENTRIES));
    }
    out
}

/// Entries `render_state` shows; a list holds up to 10,000.
const SHOWN_ENTRIES: usize = 50;

/// A message between the front and a list, as a trace shows it; none for
/// bytes that are not one.
pub fn render_request(message: &[u8]) -> Option<String> {
    let request = Request::decode(message).ok()?;
    Some(match request {
        Request::Add { date, title } => format!("add {date} {title:?}"),
        Request::Entries { date: Some(date) } => format!("entries {date}"),
        Request::Entries { date: None } => "entries (all)".to_string(),
        Request::Get { id } => format!("get {id}"),
        Request::Update { id, update } => format!("update {id}{}", render_update(&update)),
        Request::Delete { id } => format!("delete {id}"),
        #[cfg(feature = "v2")]
        Request::EntriesV2 { date: Some(date) } => format!("entries {date} (with done marks)"),
        #[cfg(feature = "v2")]
        Request::EntriesV2 { date: None } => "entries (all, with done marks)".to_string(),
        #[cfg(feature = "v2")]
        Request::GetV2 { id } => format!("get {id} (with its done mark)"),
        #[cfg(feature = "v2")]
        Request::UpdateV2 { id, update, done } => {
            let done = match done {
                Some(true) => " done",
                Some(false) => " not done",
                None => "",
            };
            format!("update {id}{}{done}", render_update(&update))
        }
    })
}

fn render_update(update: &crate::list::EntryUpdate) -> String {
    let date = update
        .date
        .map(|d| format!(" date {d}"))
        .unwrap_or_default();
    let title = update
        .title
        .as_ref()
        .map(|t| format!(" title {t:?}"))
        .unwrap_or_default();
    format!("{date}{title}")
}

fn render_count(count: usize) -> String {
    format!("{count} {}", if count == 1 { "entry" } else { "entries" })
}

/// A list's reply, as a trace shows it.
pub fn render_reply(message: &[u8]) -> Option<String> {
    let reply: Reply = postcard::from_bytes(message).ok()?;
    Some(match reply {
        Reply::Entry(entry) => format!("entry {} {} {:?}", entry.id, entry.date, entry.title),
        Reply::Entries(entries) => render_count(entries.len()),
        Reply::Deleted => "deleted".to_string(),
        Reply::NoSuchEntry => "no such entry".to_string(),
        Reply::Failed(reason) => format!("failed: {reason}"),
        Reply::Full(reason) => format!("full: {reason}"),
        Reply::Unavailable(reason) => format!("unavailable: {reason}"),
        #[cfg(feature = "v2")]
        Reply::EntryV2(entry, done) => format!(
            "entry {} {} {:?}{}",
            entry.id,
            entry.date,
            entry.title,
            if done { " (done)" } else { "" }
        ),
        #[cfg(feature = "v2")]
        Reply::EntriesV2(entries) => render_count(entries.len()),
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use guest_sdk::CallError;

    use super::*;
    use crate::server::TodoServer;
    use crate::store::memory::MemoryStore;

    /// Lists held in this test, reached as the host would reach processes.
    struct LocalLists(RefCell<std::collections::HashMap<String, TodoServer<MemoryStore>>>);

    impl LocalLists {
        fn new() -> Self {
            Self(RefCell::new(Default::default()))
        }
    }

    impl Lists for LocalLists {
        fn call(&self, list: &str, request: &Request) -> Result<Reply, CallError> {
            let mut lists = self.0.borrow_mut();
            if !lists.contains_key(list) {
                let server =
                    TodoServer::load(list, MemoryStore::default()).map_err(CallError::Refused)?;
                lists.insert(list.to_string(), server);
            }
            let server = lists.get_mut(list).ok_or(CallError::TimedOut)?;
            Ok(server.handle(request.clone()))
        }
    }

    #[test]
    fn the_api_adds_lists_updates_and_deletes() {
        let lists = LocalLists::new();
        let added =
            add_entry(&lists, "production_list", "2023-01-01", "Deploy".into()).expect("added");
        assert_eq!(added.id, 1);
        add_entry(&lists, "production_list", "2023-01-02", "Celebrate".into()).expect("added");
        let on_first = entries(&lists, "production_list", Some("2023-01-01")).expect("entries");
        assert_eq!(on_first, vec![added.clone()]);
        assert_eq!(
            entries(&lists, "production_list", None).expect("all").len(),
            2
        );
        let updated = update_entry(&lists, "production_list", 1, None, Some("Deployed".into()))
            .expect("updated");
        assert_eq!(
            (updated.title.as_str(), updated.date),
            ("Deployed", added.date)
        );
        delete_entry(&lists, "production_list", 1).expect("deleted");
        assert_eq!(
            delete_entry(&lists, "production_list", 1),
            Err("no such entry".to_string())
        );
    }

    #[test]
    fn bad_input_is_one_clear_line() {
        let lists = LocalLists::new();
        let bad_date = add_entry(&lists, "l", "2023-13-01", "x".into()).unwrap_err();
        assert!(bad_date.contains("2023-13-01"), "{bad_date}");
        let bad_title = add_entry(&lists, "l", "2023-01-01", "a\nb".into()).unwrap_err();
        assert!(bad_title.contains("control characters"), "{bad_title}");
        assert!(
            entries(&lists, "", None).is_err(),
            "an empty list name is refused"
        );
    }

    #[test]
    fn messages_and_state_render_for_an_operator() {
        let date = Date::parse("2023-01-01").expect("date");
        let add = Request::Add {
            date,
            title: "Deploy Successful".into(),
        };
        assert_eq!(
            render_request(&add.encode()).as_deref(),
            Some("add 2023-01-01 \"Deploy Successful\"")
        );
        let entry = Entry {
            id: 3,
            date,
            title: "Deploy Successful".into(),
        };
        assert_eq!(
            render_reply(&Reply::Entry(entry.clone()).encode()).as_deref(),
            Some("entry 3 2023-01-01 \"Deploy Successful\"")
        );
        assert_eq!(render_request(b"\xff\xff\xff"), None);
        let state = render_state("production_list", 4, &[entry], &Default::default());
        assert!(
            state.starts_with("list \"production_list\": 1 entry, next id 4"),
            "{state}"
        );
        assert!(state.contains("2023-01-01  Deploy Successful"), "{state}");
    }
}
