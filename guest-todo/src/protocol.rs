//! Messages between the HTTP front and a list's process. JSON, because both
//! ends are this crate and it keeps traces readable.

use serde::{Deserialize, Serialize};

use crate::date::Date;
use crate::list::{Entry, EntryUpdate};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Add { date: Date, title: String },
    Entries { date: Option<Date> },
    Get { id: u64 },
    Update { id: u64, update: EntryUpdate },
    Delete { id: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Entry(Entry),
    Entries(Vec<Entry>),
    Deleted,
    NoSuchEntry,
    /// The list could not do it (storage failed, malformed message).
    Failed(String),
}
