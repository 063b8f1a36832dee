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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TodoList {
    next_id: u64,
    entries: BTreeMap<u64, Entry>,
}

impl Default for TodoList {
    fn default() -> Self {
        Self {
            next_id: 1,
            entries: BTreeMap::new(),
        }
    }
}

impl TodoList {
    /// A list holding `entries`, whose next id is `next_id` (or one past the
    /// largest id, whichever is larger: ids are never reused).
    pub fn from_entries(entries: impl IntoIterator<Item = Entry>, next_id: u64) -> Self {
        let entries: BTreeMap<u64, Entry> = entries.into_iter().map(|e| (e.id, e)).collect();
        let after_last = entries.keys().next_back().map_or(1, |id| id + 1);
        Self {
            next_id: next_id.max(after_last),
            entries,
        }
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
        self.entries.insert(entry.id, entry);
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
        self.entries.remove(&id)
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
