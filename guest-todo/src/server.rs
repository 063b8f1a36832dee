//! `Todo.Server`: the process that owns one list. Its state lives in its own
//! memory; every change is stored before it is applied and acknowledged, so
//! a crash or an idle expiry loses nothing: `load` brings the list back.

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
}

/// What a server hands to its next version in a hot swap.
#[derive(Serialize, Deserialize)]
struct HandedOver {
    next_id: u64,
    entries: Vec<Entry>,
}

impl<S: Store> TodoServer<S> {
    /// Loads list `name` from `store`.
    pub fn load(name: &str, store: S) -> Result<Self, String> {
        validate_list_name(name)?;
        let mut entries = Vec::new();
        let prefix = store::entries_prefix(name);
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = store.scan(&prefix, after.as_deref(), LOAD_PAGE)?;
            let full = page.len() == LOAD_PAGE as usize;
            for (key, value) in &page {
                entries.push(store::decode_entry(value)?);
                after = Some(key.clone());
            }
            if !full {
                break;
            }
        }
        let next_id = match store.get(&store::next_id_key(name))? {
            Some(bytes) => store::decode_id(&bytes)?,
            None => 1,
        };
        Ok(Self {
            name: name.to_string(),
            list: TodoList::from_entries(entries, next_id),
            store,
        })
    }

    /// Starts from the state an older version handed over.
    pub fn take_over(name: &str, state: &[u8], store: S) -> Result<Self, String> {
        validate_list_name(name)?;
        let handed: HandedOver = serde_json::from_slice(state)
            .map_err(|e| format!("cannot read handed-over state: {e}"))?;
        Ok(Self {
            name: name.to_string(),
            list: TodoList::from_entries(handed.entries, handed.next_id),
            store,
        })
    }

    /// The list as an operator sees it (the console's `state NAME`).
    pub fn render_state(&self) -> String {
        crate::api::render_state(&self.name, self.list.next_id(), &self.list.entries(None))
    }

    pub fn hand_over(&self) -> Vec<u8> {
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
                self.store_then(writes, |list| {
                    list.insert(entry.clone());
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
                    self.store_then(writes, |list| {
                        list.insert(entry.clone());
                        Reply::Entry(entry)
                    })
                }
                None => Reply::NoSuchEntry,
            },
            Request::Delete { id } => {
                if !self.list.contains(id) {
                    return Reply::NoSuchEntry;
                }
                let writes = vec![Write::Delete(store::entry_key(&self.name, id))];
                self.store_then(writes, |list| {
                    list.delete(id);
                    Reply::Deleted
                })
            }
        }
    }

    /// Stores `writes`; only once they are stored does `apply` change the
    /// list. A failed write leaves memory and storage agreeing.
    fn store_then(
        &mut self,
        writes: Vec<Write>,
        apply: impl FnOnce(&mut TodoList) -> Reply,
    ) -> Reply {
        match self.store.apply(writes) {
            Ok(()) => apply(&mut self.list),
            Err(StoreError::Unavailable(reason)) => {
                Reply::Unavailable(format!("cannot store the change: {reason}"))
            }
            Err(StoreError::Failed(reason)) => {
                Reply::Failed(format!("cannot store the change: {reason}"))
            }
        }
    }
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
