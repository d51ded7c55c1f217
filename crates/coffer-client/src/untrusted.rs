//! Text that came from the server (or from another user through it) on its
//! way to a terminal.
//!
//! A compromised server chooses owner names, error messages and anything
//! echoed in them; a sender chooses file names. Printed raw, such text can
//! move the cursor, rewrite earlier lines ("from alice (verified)"), set the
//! window title, or reorder what is shown with Unicode bidi controls. So
//! every such string is shown through [`printable`], which writes the
//! characters [`crate::names::unprintable`] names (controls, bidi and
//! zero-width characters) as `\u{…}` escapes and leaves the rest alone.

use std::borrow::Cow;

use crate::names::unprintable as is_unsafe;

/// `text` with control and bidi characters escaped (borrowed when clean).
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn terminal_controls_and_bidi_are_escaped() {
        assert_eq!(printable("alice"), "alice");
        assert_eq!(printable("Zoë 東京 report.pdf"), "Zoë 東京 report.pdf");
        assert_eq!(
            printable("mallory\r\x1b[2Kalice (verified)"),
            "mallory\\u{d}\\u{1b}[2Kalice (verified)"
        );
        assert_eq!(printable("a\u{202E}fdp.exe"), "a\\u{202e}fdp.exe");
        assert_eq!(printable("x\u{7}\u{9b}y\n"), "x\\u{7}\\u{9b}y\\u{a}");
        assert_eq!(printable("a\u{200B}b"), "a\\u{200b}b");
    }
}
