//! `Todo.Server`: the process that owns one list. Its state lives in its own
//! memory; every change is stored before it is applied and acknowledged, so
//! a crash or an idle expiry loses nothing: `load` brings the list back.
//!
//! Hot swap: version 1 hands its state over as JSON ([`HandedOver`]);
//! version 2 (feature `v2`) adds done marks and hands over postcard
//! ([`HandedOverV2`]), reads version 1's states (`take_over_from`) and
//! writes them for a rollback (`hand_over_to`).

#[cfg(feature = "v2")]
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::list::{Entry, TodoList};
use crate::protocol::{Reply, Request};
use crate::store::{self, Store, StoreError, Write};

/// Entries read per storage scan while loading.
const LOAD_PAGE: u32 = 1_000;

pub struct TodoServer<S: Store> {
    name: String,
    list: TodoList,
    store: S,
    /// v2: the ids of the entries marked done.
    #[cfg(feature = "v2")]
    done: BTreeSet<u64>,
}

/// What version 1 hands over: JSON.
#[derive(Serialize, Deserialize)]
struct HandedOver {
    next_id: u64,
    entries: Vec<Entry>,
}

/// What version 2 hands over: postcard, with the done marks.
#[cfg(feature = "v2")]
#[derive(Serialize, Deserialize)]
struct HandedOverV2 {
    next_id: u64,
    entries: Vec<Entry>,
    done: Vec<u64>,
}

impl<S: Store> TodoServer<S> {
    /// Loads list `name` from `store`.
    pub fn load(name: &str, store: S) -> Result<Self, String> {
        validate_list_name(name)?;
        let mut entries = Vec::new();
        for (_, value) in scan_all(&store, &store::entries_prefix(name))? {
            entries.push(store::decode_entry(&value)?);
        }
        let next_id = match store.get(&store::next_id_key(name))? {
            Some(bytes) => store::decode_id(&bytes)?,
            None => 1,
        };
        let list = TodoList::from_entries(entries, next_id);
        #[cfg(feature = "v2")]
        let done = load_done(&store, name, &list)?;
        Ok(Self {
            name: name.to_string(),
            list,
            store,
            #[cfg(feature = "v2")]
            done,
        })
    }

    /// Starts from the state this version handed over (a hibernated
    /// process waking up, or a swap between builds of one version).
    #[cfg(not(feature = "v2"))]
    pub fn take_over(name: &str, state: &[u8], store: S) -> Result<Self, String> {
        validate_list_name(name)?;
        let handed = read_v1_state(state)?;
        Ok(Self {
            name: name.to_string(),
            list: TodoList::from_entries(handed.entries, handed.next_id),
            store,
        })
    }

    /// The list as an operator sees it (the console's `state NAME`).
    pub fn render_state(&self) -> String {
        #[cfg(feature = "v2")]
        let done = &self.done;
        #[cfg(not(feature = "v2"))]
        let done = &Default::default();
        crate::api::render_state(
            &self.name,
            self.list.next_id(),
            &self.list.entries(None),
            done,
        )
    }

    #[cfg(not(feature = "v2"))]
    pub fn hand_over(&self) -> Vec<u8> {
        self.v1_state()
    }

    /// The state as version 1 reads it.
    fn v1_state(&self) -> Vec<u8> {
        let handed = HandedOver {
            next_id: self.list.next_id(),
            entries: self.list.entries(None),
        };
        serde_json::to_vec(&handed).unwrap_or_default()
    }

    pub fn handle(&mut self, request: Request) -> Reply {
        match request {
            Request::Add { date, title } => {
                let entry = self.list.new_entry(date, title);
                if let Err(full) = self.list.has_room_for(&entry) {
                    return Reply::Full(full);
                }
                let writes = vec![
                    Write::Put(
                        store::entry_key(&self.name, entry.id),
                        store::encode_entry(&entry),
                    ),
                    Write::Put(
                        store::next_id_key(&self.name),
                        (entry.id + 1).to_be_bytes().to_vec(),
                    ),
                ];
                self.store_then(writes, |server| {
                    server.list.insert(entry.clone());
                    Reply::Entry(entry)
                })
            }
            Request::Entries { date } => Reply::Entries(self.list.entries(date)),
            Request::Get { id } => match self.list.updated_entry(id, Default::default()) {
                Some(entry) => Reply::Entry(entry),
                None => Reply::NoSuchEntry,
            },
            Request::Update { id, update } => match self.list.updated_entry(id, update) {
                Some(entry) => {
                    if let Err(full) = self.list.has_room_for(&entry) {
                        return Reply::Full(full);
                    }
                    let writes = vec![Write::Put(
                        store::entry_key(&self.name, id),
                        store::encode_entry(&entry),
                    )];
                    self.store_then(writes, |server| {
                        server.list.insert(entry.clone());
                        Reply::Entry(entry)
                    })
                }
                None => Reply::NoSuchEntry,
            },
            Request::Delete { id } => {
                if !self.list.contains(id) {
                    return Reply::NoSuchEntry;
                }
                #[allow(unused_mut)]
                let mut writes = vec![Write::Delete(store::entry_key(&self.name, id))];
                #[cfg(feature = "v2")]
                writes.push(Write::Delete(store::done_key(&self.name, id)));
                self.store_then(writes, |server| {
                    server.list.delete(id);
                    #[cfg(feature = "v2")]
                    server.done.remove(&id);
                    Reply::Deleted
                })
            }
            #[cfg(feature = "v2")]
            Request::EntriesV2 { date } => Reply::EntriesV2(
                self.list
                    .entries(date)
                    .into_iter()
                    .map(|entry| {
                        let done = self.done.contains(&entry.id);
                        (entry, done)
                    })
                    .collect(),
            ),
            #[cfg(feature = "v2")]
            Request::GetV2 { id } => match self.list.updated_entry(id, Default::default()) {
                Some(entry) => Reply::EntryV2(entry, self.done.contains(&id)),
                None => Reply::NoSuchEntry,
            },
            #[cfg(feature = "v2")]
            Request::UpdateV2 { id, update, done } => self.update_v2(id, update, done),
        }
    }

    /// Stores `writes`; only once they are stored does `apply` change the
    /// list. A failed write leaves memory and storage agreeing.
    fn store_then(&mut self, writes: Vec<Write>, apply: impl FnOnce(&mut Self) -> Reply) -> Reply {
        match self.store.apply(writes) {
            Ok(()) => apply(self),
            Err(StoreError::Unavailable(reason)) => {
                Reply::Unavailable(format!("cannot store the change: {reason}"))
            }
            Err(StoreError::Failed(reason)) => {
                Reply::Failed(format!("cannot store the change: {reason}"))
            }
        }
    }
}

#[cfg(feature = "v2")]
impl<S: Store> TodoServer<S> {
    /// Starts from a state version 2 handed over.
    pub fn take_over(name: &str, state: &[u8], store: S) -> Result<Self, String> {
        validate_list_name(name)?;
        let handed: HandedOverV2 = postcard::from_bytes(state)
            .map_err(|e| format!("cannot read handed-over state: {e}"))?;
        Ok(Self {
            name: name.to_string(),
            list: TodoList::from_entries(handed.entries, handed.next_id),
            store,
            done: handed.done.into_iter().collect(),
        })
    }

    /// Starts from a state `from_version` handed over: version 1's JSON
    /// (its done marks, which version 1 never touches, come from storage),
    /// or version 2's own.
    pub fn take_over_from(
        name: &str,
        state: &[u8],
        from_version: &str,
        store: S,
    ) -> Result<Self, String> {
        match major(from_version) {
            "1" => {
                validate_list_name(name)?;
                let handed = read_v1_state(state)?;
                let list = TodoList::from_entries(handed.entries, handed.next_id);
                let done = load_done(&store, name, &list)?;
                Ok(Self {
                    name: name.to_string(),
                    list,
                    store,
                    done,
                })
            }
            "2" => Self::take_over(name, state, store),
            _ => Err(format!(
                "version 2 reads the states of versions 1 and 2, not of version {from_version}"
            )),
        }
    }

    pub fn hand_over(&self) -> Vec<u8> {
        let handed = HandedOverV2 {
            next_id: self.list.next_id(),
            entries: self.list.entries(None),
            done: self.done.iter().copied().collect(),
        };
        postcard::to_allocvec(&handed).unwrap_or_default()
    }

    /// The state as `to_version` reads it: version 1 gets its JSON (the
    /// done marks stay in storage, for the next upgrade).
    pub fn hand_over_to(&self, to_version: &str) -> Result<Vec<u8>, String> {
        match major(to_version) {
            "1" => Ok(self.v1_state()),
            "2" => Ok(self.hand_over()),
            _ => Err(format!(
                "version 2 hands its state to versions 1 and 2, not to version {to_version}"
            )),
        }
    }

    /// Changes entry `id` and marks it done or not, in one write.
    fn update_v2(
        &mut self,
        id: u64,
        update: crate::list::EntryUpdate,
        done: Option<bool>,
    ) -> Reply {
        let Some(entry) = self.list.updated_entry(id, update) else {
            return Reply::NoSuchEntry;
        };
        if let Err(full) = self.list.has_room_for(&entry) {
            return Reply::Full(full);
        }
        let mut writes = vec![Write::Put(
            store::entry_key(&self.name, id),
            store::encode_entry(&entry),
        )];
        match done {
            Some(true) => writes.push(Write::Put(store::done_key(&self.name, id), Vec::new())),
            Some(false) => writes.push(Write::Delete(store::done_key(&self.name, id))),
            None => {}
        }
        self.store_then(writes, |server| {
            server.list.insert(entry.clone());
            match done {
                Some(true) => {
                    server.done.insert(id);
                }
                Some(false) => {
                    server.done.remove(&id);
                }
                None => {}
            }
            Reply::EntryV2(entry, server.done.contains(&id))
        })
    }
}

/// The major part of a version label: `1` of `1.0.0`.
#[cfg(feature = "v2")]
fn major(version: &str) -> &str {
    version.split('.').next().unwrap_or(version)
}

fn read_v1_state(state: &[u8]) -> Result<HandedOver, String> {
    serde_json::from_slice(state).map_err(|e| format!("cannot read handed-over state: {e}"))
}

/// Every pair under `prefix`, a page at a time.
fn scan_all(store: &impl Store, prefix: &[u8]) -> Result<Vec<store::Pair>, String> {
    let mut pairs = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.scan(prefix, after.as_deref(), LOAD_PAGE)?;
        let full = page.len() == LOAD_PAGE as usize;
        after = page.last().map(|(key, _)| key.clone()).or(after);
        pairs.extend(page);
        if !full {
            return Ok(pairs);
        }
    }
}

/// The done marks of list `name` whose entries it holds.
#[cfg(feature = "v2")]
fn load_done(store: &impl Store, name: &str, list: &TodoList) -> Result<BTreeSet<u64>, String> {
    let mut done = BTreeSet::new();
    for (key, _) in scan_all(store, &store::done_prefix(name))? {
        let id = store::done_id(&key)?;
        if list.contains(id) {
            done.insert(id);
        }
    }
    Ok(done)
}

/// List names become part of storage keys, where a zero byte separates them
/// from the rest.
pub fn validate_list_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 256 {
        return Err("a list name must be 1 to 256 bytes".to_string());
    }
    if name.chars().any(char::is_control) {
        return Err("a list name must not contain control characters".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::date::Date;
    use crate::list::EntryUpdate;
    use crate::store::memory::MemoryStore;

    fn add(server: &mut TodoServer<MemoryStore>, date: &str, title: &str) -> Reply {
        server.handle(Request::Add {
            date: Date::parse(date).expect("valid date"),
            title: title.to_string(),
        })
    }

    #[test]
    fn a_reloaded_list_has_every_change() {
        let store = MemoryStore::default();
        let mut server = TodoServer::load("groceries", store.clone()).expect("load");
        add(&mut server, "2023-01-01", "Milk");
        add(&mut server, "2023-01-01", "Eggs");
        add(&mut server, "2023-01-02", "Bread");
        server.handle(Request::Delete { id: 2 });
        server.handle(Request::Update {
            id: 3,
            update: EntryUpdate {
                date: None,
                title: Some("Rye bread".into()),
            },
        });

        let mut reloaded = TodoServer::load("groceries", store).expect("reload");
        let Reply::Entries(entries) = reloaded.handle(Request::Entries { date: None }) else {
            panic!("expected entries");
        };
        let titles: Vec<&str> = entries.iter().map(|e| e.title.as_str()).collect();
        assert_eq!(titles, ["Milk", "Rye bread"]);
        // The deleted id is not handed out again after a reload.
        let Reply::Entry(entry) = add(&mut reloaded, "2023-01-03", "Tea") else {
            panic!("expected the new entry");
        };
        assert_eq!(entry.id, 4);
    }

    #[test]
    fn an_add_writes_one_entry_not_the_whole_list() {
        let store = MemoryStore::default();
        let mut server = TodoServer::load("l", store.clone()).expect("load");
        for i in 0..50 {
            add(&mut server, "2023-01-01", &format!("entry {i}"));
        }
        // 50 entries and one counter: each add wrote its own key.
        assert_eq!(store.map.borrow().len(), 51);
    }

    #[test]
    fn lists_do_not_share_entries() {
        let store = MemoryStore::default();
        let mut a = TodoServer::load("a", store.clone()).expect("load");
        let mut b = TodoServer::load("a b", store.clone()).expect("load");
        add(&mut a, "2023-01-01", "only in a");
        assert_eq!(
            b.handle(Request::Entries { date: None }),
            Reply::Entries(vec![])
        );
        assert!(
            TodoServer::load("a\u{0}b", store).is_err(),
            "a zero byte is refused"
        );
    }

    #[test]
    fn missing_entries_are_reported() {
        let mut server = TodoServer::load("l", MemoryStore::default()).expect("load");
        assert_eq!(server.handle(Request::Delete { id: 7 }), Reply::NoSuchEntry);
        assert_eq!(server.handle(Request::Get { id: 7 }), Reply::NoSuchEntry);
        let update = Request::Update {
            id: 7,
            update: EntryUpdate::default(),
        };
        assert_eq!(server.handle(update), Reply::NoSuchEntry);
    }

    #[test]
    fn a_change_that_cannot_be_stored_changes_nothing() {
        let store = MemoryStore::default();
        let mut server = TodoServer::load("l", store.clone()).expect("load");
        add(&mut server, "2023-01-01", "Milk");
        *store.failing.borrow_mut() = Some(StoreError::Unavailable("no majority".into()));
        let reply = add(&mut server, "2023-01-01", "Eggs");
        assert!(
            matches!(&reply, Reply::Unavailable(reason) if reason.contains("no majority")),
            "{reply:?}"
        );
        assert_eq!(
            server.handle(Request::Delete { id: 1 }),
            Reply::Unavailable("cannot store the change: no majority".into())
        );
        *store.failing.borrow_mut() = None;
        let Reply::Entries(entries) = server.handle(Request::Entries { date: None }) else {
            panic!("expected entries");
        };
        assert_eq!(entries.len(), 1, "neither the add nor the delete happened");
        // The id the failed add would have used is still the next one.
        let Reply::Entry(entry) = add(&mut server, "2023-01-01", "Bread") else {
            panic!("added");
        };
        assert_eq!(entry.id, 2);
    }

    #[test]
    fn state_survives_a_hand_over() {
        let mut old = TodoServer::load("l", MemoryStore::default()).expect("load");
        add(&mut old, "2023-01-01", "Milk");
        let state = old.hand_over();
        let mut new =
            TodoServer::take_over("l", &state, MemoryStore::default()).expect("take over");
        assert_eq!(
            new.handle(Request::Entries { date: None }),
            old.handle(Request::Entries { date: None })
        );
        let Reply::Entry(entry) = add(&mut new, "2023-01-01", "Eggs") else {
            panic!("added")
        };
        assert_eq!(entry.id, 2);
    }
}

/// Version 2: done marks, and the moves between versions 1 and 2.
#[cfg(all(test, feature = "v2"))]
mod v2_tests {
    use super::*;
    use crate::date::Date;
    use crate::list::EntryUpdate;
    use crate::store::memory::MemoryStore;

    fn add(server: &mut TodoServer<MemoryStore>, title: &str) -> Entry {
        let request = Request::Add {
            date: Date::parse("2023-01-01").expect("valid date"),
            title: title.to_string(),
        };
        match server.handle(request) {
            Reply::Entry(entry) => entry,
            other => panic!("not added: {other:?}"),
        }
    }

    fn mark(server: &mut TodoServer<MemoryStore>, id: u64, done: bool) -> Reply {
        server.handle(Request::UpdateV2 {
            id,
            update: EntryUpdate::default(),
            done: Some(done),
        })
    }

    /// `(title, done)` of every entry, as version 2 answers.
    fn marks(server: &mut TodoServer<MemoryStore>) -> Vec<(String, bool)> {
        match server.handle(Request::EntriesV2 { date: None }) {
            Reply::EntriesV2(entries) => entries
                .into_iter()
                .map(|(entry, done)| (entry.title, done))
                .collect(),
            other => panic!("no entries: {other:?}"),
        }
    }

    #[test]
    fn marks_are_stored_and_survive_a_reload_and_a_delete() {
        let store = MemoryStore::default();
        let mut server = TodoServer::load("l", store.clone()).expect("load");
        add(&mut server, "Milk");
        add(&mut server, "Eggs");
        let Reply::EntryV2(entry, true) = mark(&mut server, 1, true) else {
            panic!("marked done");
        };
        assert_eq!(entry.title, "Milk");
        assert_eq!(mark(&mut server, 9, true), Reply::NoSuchEntry);
        let mut reloaded = TodoServer::load("l", store.clone()).expect("reload");
        assert_eq!(
            marks(&mut reloaded),
            [("Milk".to_string(), true), ("Eggs".to_string(), false)]
        );
        reloaded.handle(Request::Delete { id: 1 });
        assert!(
            !store
                .map
                .borrow()
                .keys()
                .any(|k| k.ends_with(&1u64.to_be_bytes())),
            "the entry and its mark are gone"
        );
        mark(&mut reloaded, 2, true);
        mark(&mut reloaded, 2, false);
        assert_eq!(marks(&mut reloaded), [("Eggs".to_string(), false)]);
    }

    #[test]
    fn a_version_1_state_is_taken_over_with_the_marks_in_storage() {
        let store = MemoryStore::default();
        let mut v2 = TodoServer::load("l", store.clone()).expect("load");
        add(&mut v2, "Milk");
        add(&mut v2, "Eggs");
        mark(&mut v2, 2, true);
        // Down to version 1, which knows nothing of marks...
        let down = v2.hand_over_to("1.0.0").expect("handed down");
        let v1: serde_json::Value = serde_json::from_slice(&down).expect("version 1's JSON");
        assert_eq!(v1["next_id"], 3);
        assert_eq!(v1["entries"][1]["title"], "Eggs");
        assert!(v1["entries"][1].get("done").is_none());
        // ...and up again: the mark comes back from storage.
        let mut up = TodoServer::take_over_from("l", &down, "1.0.0", store).expect("up");
        assert_eq!(
            marks(&mut up),
            [("Milk".to_string(), false), ("Eggs".to_string(), true)]
        );
        assert_eq!(add(&mut up, "Tea").id, 3);
    }

    #[test]
    fn its_own_state_keeps_the_marks_and_other_versions_are_refused() {
        let mut old = TodoServer::load("l", MemoryStore::default()).expect("load");
        add(&mut old, "Milk");
        mark(&mut old, 1, true);
        let state = old.hand_over();
        assert!(
            serde_json::from_slice::<serde_json::Value>(&state).is_err(),
            "not JSON"
        );
        let mut new = TodoServer::take_over_from("l", &state, "2.0.0", MemoryStore::default())
            .expect("take over");
        assert_eq!(marks(&mut new), [("Milk".to_string(), true)]);
        let refused = TodoServer::take_over_from("l", &state, "3.1.0", MemoryStore::default());
        assert!(refused.is_err_and(|e| e.contains("version 3.1.0")));
        assert!(new.hand_over_to("0.9.0").is_err());
        assert!(
            TodoServer::take_over_from("l", b"{}", "1.0.0", MemoryStore::default()).is_err(),
            "a broken state is an error, not an empty list"
        );
    }
}
