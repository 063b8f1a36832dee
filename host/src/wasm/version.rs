//! What identifies a version of a component: the SHA-256 of its bytes, and
//! a label for people, read from its `otp-version` custom section (which
//! guest-sdk's `version!` writes) or given by the operator, else made from
//! the hash.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmparser::{Parser, Payload};

/// The custom section a version's label is written in.
const LABEL_SECTION: &str = "otp-version";

/// Longest label kept: it appears in every `ps` row and log line.
const MAX_LABEL_BYTES: usize = 64;

/// A version of a component.
#[derive(Clone, PartialEq, Eq)]
pub struct VersionId {
    pub hash: [u8; 32],
    pub label: Arc<str>,
}

impl VersionId {
    /// The version of `bytes`: labelled `given`, else by its own section,
    /// else `sha256:` and the first 12 hex digits of its hash.
    pub fn of(bytes: &[u8], given: Option<&str>) -> Self {
        let hash: [u8; 32] = Sha256::digest(bytes).into();
        let label = given
            .map(str::to_string)
            .or_else(|| label_in(bytes))
            .unwrap_or_else(|| format!("sha256:{}", &hex(&hash)[..12]));
        Self {
            hash,
            label: Arc::from(label.as_str()),
        }
    }

    /// The hash as 64 hex digits.
    pub fn hash_hex(&self) -> String {
        hex(&self.hash)
    }
}

impl fmt::Debug for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.label, &self.hash_hex()[..12])
    }
}

/// `bytes` as lowercase hex digits.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The label in the first `otp-version` custom section of the component
/// or of a module inside it, if one holds printable text.
fn label_in(bytes: &[u8]) -> Option<String> {
    // Nested modules and components are visited by the same parser: their
    // payloads follow their section's header in the stream.
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(Payload::CustomSection(section)) = payload else {
            continue;
        };
        if section.name() != LABEL_SECTION {
            continue;
        }
        let text = std::str::from_utf8(section.data())
            .ok()?
            .trim_end_matches('\0');
        let valid = !text.is_empty()
            && text.len() <= MAX_LABEL_BYTES
            && text.chars().all(|c| c.is_ascii_graphic());
        return valid.then(|| text.to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core module holding one custom section.
    fn module_with(name: &str, data: &[u8]) -> Vec<u8> {
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        let mut section = vec![name.len() as u8];
        section.extend_from_slice(name.as_bytes());
        section.extend_from_slice(data);
        module.push(0);
        module.push(section.len() as u8);
        module.extend_from_slice(&section);
        module
    }

    #[test]
    fn the_label_comes_from_the_section_or_the_operator_or_the_hash() {
        let labelled = module_with(LABEL_SECTION, b"2.0.0");
        assert_eq!(&*VersionId::of(&labelled, None).label, "2.0.0");
        assert_eq!(&*VersionId::of(&labelled, Some("given")).label, "given");
        let plain = module_with("other", b"x");
        let id = VersionId::of(&plain, None);
        assert!(id.label.starts_with("sha256:"), "{:?}", id);
        assert_eq!(id.label.len(), "sha256:".len() + 12);
        assert_ne!(VersionId::of(&labelled, None), VersionId::of(&plain, None));
    }

    #[test]
    fn a_label_that_is_not_printable_text_is_not_taken() {
        let bad = module_with(LABEL_SECTION, b"two words");
        assert!(VersionId::of(&bad, None).label.starts_with("sha256:"));
    }
}
