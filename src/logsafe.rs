//! Text from outside — what a Splunk answers, names and fields a tenant chose —
//! reaches a log line or the terminal only through [`clean`], so that none of it
//! can end the line and forge the next, or send the terminal an escape sequence.

use std::fmt::{self, Write};

/// Shows a string with control characters, line and paragraph separators and
/// bidirectional-text controls escaped (`\r`, `\n`, `\u{1b}`, `\u{202e}`...).
/// `{}` writes it bare; `{:?}` quotes it and escapes `"` and `\` too, for
/// `key="value"` fields.
#[derive(Clone, Copy)]
pub struct Clean<'a>(&'a str);

/// Wraps outside text for a log line.
pub fn clean(s: &str) -> Clean<'_> {
    Clean(s)
}

/// Characters that move the cursor, end a line, or reorder what a reader sees.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' // Arabic letter mark
                | '\u{200e}' | '\u{200f}' // left-to-right, right-to-left marks
                | '\u{2028}' | '\u{2029}' // line and paragraph separators
                | '\u{202a}'..='\u{202e}' // bidirectional embeddings and overrides
                | '\u{2066}'..='\u{2069}' // bidirectional isolates
                | '\u{feff}' // byte order mark
        )
}

impl Clean<'_> {
    fn write(&self, f: &mut fmt::Formatter<'_>, quoted: bool) -> fmt::Result {
        for c in self.0.chars() {
            if unsafe_char(c) || (quoted && (c == '"' || c == '\\')) {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Clean<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, false)
    }
}

impl fmt::Debug for Clean<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        self.write(f, true)?;
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_text_stays_on_one_line_and_sends_no_escape_sequence() {
        let hostile = "Invalid data\r\nFORGED [ERROR] x\u{2028}y\u{1b}[2J\u{202e}z\t\"q\"\\";
        let shown = clean(hostile).to_string();
        assert_eq!(
            shown,
            "Invalid data\\r\\nFORGED [ERROR] x\\u{2028}y\\u{1b}[2J\\u{202e}z\\t\"q\"\\"
        );
        assert!(!shown.chars().any(unsafe_char));
        assert_eq!(
            format!("{:?}", clean("a \"b\" \\ c\n")),
            r#""a \"b\" \\ c\n""#
        );
        let plain = "Main Splunk — Zürich 東京 (ok)";
        assert_eq!(
            clean(plain).to_string(),
            plain,
            "ordinary text is untouched"
        );
    }
}
