//! Messages between the HTTP front and a list's process, encoded with
//! postcard: both ends are this crate, and a list's reply can hold hundreds
//! of entries, where JSON's encoding and decoding cost more than the rest of
//! the request together (BENCHMARKS.md).

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
    /// The change would take the list past its limits.
    Full(String),
    /// The change could not be stored for now (the cluster has no
    /// majority); nothing changed.
    Unavailable(String),
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        postcard::from_bytes(bytes).map_err(|e| format!("malformed request: {e}"))
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
