//! Key rules: keys are printable ASCII, so byte order equals string order in
//! both SQLite (BINARY) and PostgreSQL (`COLLATE "C"`), and a prefix's end is
//! the prefix with its last byte incremented.

use crate::StoreError;

/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 1024;

/// Check that `key` is 1..=1024 printable ASCII characters without spaces.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidKey(key.chars().take(64).collect()))
    }
}

/// The smallest key greater than every key starting with `prefix`, or `None`
/// when the prefix is empty (no upper bound).
pub fn prefix_end(prefix: &str) -> Option<String> {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8(bytes).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end("/a/"), Some("/a0".to_owned()));
        assert_eq!(prefix_end("abc"), Some("abd".to_owned()));
        assert_eq!(prefix_end(""), None);
    }

    #[test]
    fn keys_are_printable_ascii() {
        assert!(validate_key("/registry/x/y").is_ok());
        for bad in ["", "a b", "é", "a\0b", &"x".repeat(MAX_KEY_LEN + 1)] {
            assert!(validate_key(bad).is_err(), "{bad:?} accepted");
        }
    }
}
