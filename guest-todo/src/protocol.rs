//! Messages between the HTTP front and a list's process, encoded with
//! postcard: both ends are this crate, and a list's reply can hold hundreds
//! of entries, where JSON's encoding and decoding cost more than the rest of
//! the request together (BENCHMARKS.md).
//!
//! During a hot swap the front and a list may run different versions, so
//! the protocol only grows: a version adds variants at the end and never
//! changes one it shares with an older version. An older list answers a
//! variant it does not know with `Failed("malformed request: ...")`
//! ([`Reply::is_unknown_request`]), and a newer front then falls back to
//! the variants both know. Version 2 (feature `v2`) adds done marks.

use serde::{Deserialize, Serialize};

use crate::date::Date;
use crate::list::{Entry, EntryUpdate};

/// How every version of a list begins its answer to bytes that are not a
/// request it knows.
const MALFORMED_REQUEST: &str = "malformed request";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Add {
        date: Date,
        title: String,
    },
    Entries {
        date: Option<Date>,
    },
    Get {
        id: u64,
    },
    Update {
        id: u64,
        update: EntryUpdate,
    },
    Delete {
        id: u64,
    },
    /// v2: the entries with their done marks.
    #[cfg(feature = "v2")]
    EntriesV2 {
        date: Option<Date>,
    },
    /// v2: one entry with its done mark.
    #[cfg(feature = "v2")]
    GetV2 {
        id: u64,
    },
    /// v2: a change that may also mark the entry done or not done.
    #[cfg(feature = "v2")]
    UpdateV2 {
        id: u64,
        update: EntryUpdate,
        done: Option<bool>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Entry(Entry),
    Entries(Vec<Entry>),
    Deleted,
    NoSuchEntry,
    /// The list could not do it (storage failed, malformed message).
    Failed(String),
    /// The change would take the list past its limits.
    Full(String),
    /// The change could not be stored for now (the cluster has no
    /// majority); nothing changed.
    Unavailable(String),
    /// v2: an entry and whether it is done.
    #[cfg(feature = "v2")]
    EntryV2(Entry, bool),
    /// v2: entries and whether each is done.
    #[cfg(feature = "v2")]
    EntriesV2(Vec<(Entry, bool)>),
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        postcard::from_bytes(bytes).map_err(|e| format!("{MALFORMED_REQUEST}: {e}"))
    }
}

impl Reply {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Self {
        postcard::from_bytes(bytes)
            .unwrap_or_else(|e| Reply::Failed(format!("malformed reply from the list: {e}")))
    }

    /// Whether this is how a list of an older version answers a request it
    /// does not know.
    pub fn is_unknown_request(&self) -> bool {
        matches!(self, Reply::Failed(reason) if reason.starts_with(MALFORMED_REQUEST))
    }
}

/// Encoding to a growable buffer fails only for types serde cannot
/// represent, which these are not.
fn encode(value: &impl Serialize) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_encoding() {
        let date = Date::parse("2024-01-01").expect("date");
        let request = Request::Update {
            id: 7,
            update: EntryUpdate {
                date: Some(date),
                title: Some("x".into()),
            },
        };
        assert_eq!(Request::decode(&request.encode()), Ok(request));
        let partial = Request::Update {
            id: 7,
            update: EntryUpdate {
                date: None,
                title: Some("x".into()),
            },
        };
        assert_eq!(Request::decode(&partial.encode()), Ok(partial));
        let reply = Reply::Entries(vec![Entry {
            id: 1,
            date,
            title: "Dentist".into(),
        }]);
        assert_eq!(Reply::decode(&reply.encode()), reply);
        assert!(matches!(Reply::decode(b"\xff\xff"), Reply::Failed(_)));
        assert!(Request::decode(b"").is_err());
    }
}
