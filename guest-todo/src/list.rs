//! `Todo.List` from the book: entries with ids, a date and a title.
//!
//! Pure data, no storage: the server decides what to persist and applies a
//! change here only once it is stored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::date::Date;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    pub date: Date,
    pub title: String,
}

/// A change to an entry: the fields to replace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryUpdate {
    pub date: Option<Date>,
    pub title: Option<String>,
}

/// Most entries one list holds. With [`MAX_LIST_TITLE_BYTES`], this keeps a
/// whole list, a copy of it in a reply and its encoding well inside a
/// process's memory cap (64 MiB by default): a list that could outgrow its
/// process could never be loaded again.
pub const MAX_ENTRIES: usize = 10_000;
/// Most bytes of titles one list holds, all entries together.
pub const MAX_LIST_TITLE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TodoList {
    next_id: u64,
    entries: BTreeMap<u64, Entry>,
    /// The titles' length, all entries together.
    title_bytes: usize,
}

impl Default for TodoList {
    fn default() -> Self {
        Self {
            next_id: 1,
            entries: BTreeMap::new(),
            title_bytes: 0,
        }
    }
}

impl TodoList {
    /// A list holding `entries`, whose next id is `next_id` (or one past the
    /// largest id, whichever is larger: ids are never reused).
    pub fn from_entries(entries: impl IntoIterator<Item = Entry>, next_id: u64) -> Self {
        let entries: BTreeMap<u64, Entry> = entries.into_iter().map(|e| (e.id, e)).collect();
        let after_last = entries.keys().next_back().map_or(1, |id| id + 1);
        let title_bytes = entries.values().map(|e| e.title.len()).sum();
        Self {
            next_id: next_id.max(after_last),
            entries,
            title_bytes,
        }
    }

    /// Whether the list stays within [`MAX_ENTRIES`] and [`MAX_LIST_TITLE_BYTES`]
    /// once `entry` is inserted (as a new entry, or replacing the one with
    /// its id). A list loaded over its limits keeps everything it has; it
    /// only takes nothing more that would grow it.
    pub fn has_room_for(&self, entry: &Entry) -> Result<(), String> {
        let replaced = self.entries.get(&entry.id);
        if replaced.is_some_and(|old| entry.title.len() <= old.title.len()) {
            return Ok(()); // the list does not grow
        }
        let count = self.entries.len() + usize::from(replaced.is_none());
        let title_bytes =
            self.title_bytes - replaced.map_or(0, |e| e.title.len()) + entry.title.len();
        if count > MAX_ENTRIES {
            return Err(format!(
                "the list is full: it holds at most {MAX_ENTRIES} entries"
            ));
        }
        if title_bytes > MAX_LIST_TITLE_BYTES {
            return Err(format!(
                "the list is full: its titles may take at most {MAX_LIST_TITLE_BYTES} bytes together"
            ));
        }
        Ok(())
    }

    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// The entry an add would create, without adding it.
    pub fn new_entry(&self, date: Date, title: String) -> Entry {
        Entry {
            id: self.next_id,
            date,
            title,
        }
    }

    /// Adds an entry made by [`TodoList::new_entry`].
    pub fn insert(&mut self, entry: Entry) {
        self.next_id = self.next_id.max(entry.id + 1);
        self.title_bytes += entry.title.len();
        if let Some(replaced) = self.entries.insert(entry.id, entry) {
            self.title_bytes -= replaced.title.len();
        }
    }

    /// Entries for `date` (all entries when none), in the order they were added.
    pub fn entries(&self, date: Option<Date>) -> Vec<Entry> {
        self.entries
            .values()
            .filter(|entry| date.is_none_or(|date| entry.date == date))
            .cloned()
            .collect()
    }

    /// The entry `id` would become after `update`, without changing it.
    pub fn updated_entry(&self, id: u64, update: EntryUpdate) -> Option<Entry> {
        let mut entry = self.entries.get(&id)?.clone();
        if let Some(date) = update.date {
            entry.date = date;
        }
        if let Some(title) = update.title {
            entry.title = title;
        }
        Some(entry)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.entries.contains_key(&id)
    }

    pub fn delete(&mut self, id: u64) -> Option<Entry> {
        let deleted = self.entries.remove(&id)?;
        self.title_bytes -= deleted.title.len();
        Some(deleted)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> Date {
        Date::parse(text).expect("valid date")
    }

    fn add(list: &mut TodoList, day: &str, title: &str) -> Entry {
        let entry = list.new_entry(date(day), title.to_string());
        list.insert(entry.clone());
        entry
    }

    #[test]
    fn adds_entries_with_increasing_ids() {
        let mut list = TodoList::default();
        assert_eq!(add(&mut list, "2023-12-19", "Dentist").id, 1);
        assert_eq!(add(&mut list, "2023-12-20", "Shopping").id, 2);
        assert_eq!(add(&mut list, "2023-12-19", "Movies").id, 3);
        assert_eq!(list.len(), 3);
    }

    #[test]
    fn entries_for_a_date_keep_their_order() {
        let mut list = TodoList::default();
        add(&mut list, "2023-12-19", "Dentist");
        add(&mut list, "2023-12-20", "Shopping");
        add(&mut list, "2023-12-19", "Movies");
        let titles: Vec<String> = list
            .entries(Some(date("2023-12-19")))
            .into_iter()
            .map(|e| e.title)
            .collect();
        assert_eq!(titles, ["Dentist", "Movies"]);
        assert!(list.entries(Some(date("2023-12-21"))).is_empty());
        assert_eq!(list.entries(None).len(), 3);
    }

    #[test]
    fn updates_change_only_the_given_fields() {
        let mut list = TodoList::default();
        add(&mut list, "2023-12-19", "Dentist");
        let update = EntryUpdate {
            date: Some(date("2023-12-24")),
            title: None,
        };
        let updated = list.updated_entry(1, update).expect("entry 1 exists");
        assert_eq!(updated.title, "Dentist");
        assert_eq!(updated.date, date("2023-12-24"));
        // Nothing changes until the updated entry is inserted.
        assert_eq!(list.entries(Some(date("2023-12-19"))).len(), 1);
        list.insert(updated);
        assert_eq!(list.entries(Some(date("2023-12-24"))).len(), 1);
        assert!(list.updated_entry(42, EntryUpdate::default()).is_none());
    }

    #[test]
    fn deleted_ids_are_never_reused() {
        let mut list = TodoList::default();
        add(&mut list, "2023-12-19", "Dentist");
        add(&mut list, "2023-12-19", "Movies");
        assert!(list.delete(2).is_some());
        assert!(list.delete(2).is_none());
        assert_eq!(add(&mut list, "2023-12-19", "Gym").id, 3);
    }

    /// Entry `id` of `list` with its title changed to `title`.
    fn retitled(list: &TodoList, id: u64, title: &str) -> Entry {
        let update = EntryUpdate {
            date: None,
            title: Some(title.to_string()),
        };
        list.updated_entry(id, update).expect("the entry exists")
    }

    #[test]
    fn a_full_list_takes_nothing_that_would_grow_it() {
        let mut list = TodoList::default();
        for _ in 0..MAX_ENTRIES {
            add(&mut list, "2023-12-19", "x");
        }
        let one_more = list.new_entry(date("2023-12-19"), "y".into());
        assert!(list.has_room_for(&one_more).is_err());
        // Changing an entry in place is fine; deleting makes room.
        assert!(list.has_room_for(&retitled(&list, 1, "z")).is_ok());
        list.delete(2);
        assert!(list.has_room_for(&one_more).is_ok());
    }

    #[test]
    fn titles_are_bounded_all_together() {
        let mut list = TodoList::default();
        let long = "t".repeat(4096);
        for _ in 0..MAX_LIST_TITLE_BYTES / 4096 {
            let entry = list.new_entry(date("2023-12-19"), long.clone());
            assert!(list.has_room_for(&entry).is_ok());
            list.insert(entry);
        }
        let one_more = list.new_entry(date("2023-12-19"), "y".into());
        assert!(list.has_room_for(&one_more).is_err());
        let shorter = retitled(&list, 1, "short");
        assert!(
            list.has_room_for(&shorter).is_ok(),
            "shrinking is always fine"
        );
        list.insert(shorter);
        assert!(list.has_room_for(&one_more).is_ok());
    }

    #[test]
    fn a_restored_list_continues_after_its_largest_id() {
        let entries = vec![
            Entry {
                id: 4,
                date: date("2023-01-01"),
                title: "a".into(),
            },
            Entry {
                id: 9,
                date: date("2023-01-01"),
                title: "b".into(),
            },
        ];
        assert_eq!(TodoList::from_entries(entries.clone(), 1).next_id(), 10);
        assert_eq!(TodoList::from_entries(entries, 12).next_id(), 12);
    }
}
