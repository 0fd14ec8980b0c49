//! Text as both databases can hold it. PostgreSQL `text` refuses U+0000 (NUL), the one Unicode
//! scalar value it cannot store, while SQLite keeps it: every string the gateway stores or sends
//! has its NULs removed here, so both databases hold the same thing and neither refuses a row.
//! (Raw message payloads are stored as JSON, where a NUL is the escape `\u0000` and is kept.)

use std::borrow::Cow;

/// `text` without its NUL characters; borrowed (no copy) when it has none, the usual case.
pub fn without_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', ""))
    } else {
        Cow::Borrowed(text)
    }
}

/// [`without_nul`] in place, for an owned string.
pub fn strip_nul(text: &mut String) {
    if text.contains('\0') {
        text.retain(|c| c != '\0');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_removed_and_nothing_else() {
        assert_eq!(without_nul("a\0b\0"), "ab");
        assert!(matches!(without_nul("plain ✓"), Cow::Borrowed("plain ✓")));
        let mut s = String::from("\0x\u{1}\0");
        strip_nul(&mut s);
        assert_eq!(s, "x\u{1}");
    }
}
