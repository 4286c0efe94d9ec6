//! A reader over JSON text that is already known to be valid: the fast decoder's parser.
//!
//! The envelope's parse of a Segment batch ([`crate::segment::ParsedBody`]) validates the whole
//! body, every event's text included, before the fast decoder reads an event. Parsing each event
//! again with serde_json validated every byte a second time (its string scan alone was a sixth of
//! a request's decoding); this reader trusts the text instead and only finds where strings,
//! numbers and nested values end: a string's end eight bytes at a time, a nested value's by
//! counting brackets outside strings. It reads the common Segment event in about a third of
//! serde_json's time (benches/README.md).
//!
//! On text that is not valid JSON it still never panics or loops (every read is bounds-checked,
//! every step moves forward), but what it answers is then meaningless — so it is fed only text
//! serde_json validated. Where the JSON could mean something this reader does not model (a key
//! with escapes, a string whose escapes do not decode), it answers `None` and the caller leaves
//! the event to the general decoder.

use std::borrow::Cow;

/// A position in valid JSON text.
pub(crate) struct Walker<'a> {
    text: &'a str,
    at: usize,
    /// Whitespace bytes passed so far outside strings.
    spaces: usize,
}

/// A string's text between its quotes, as it appears in the JSON.
pub(crate) struct RawString<'a> {
    /// With the quotes, for decoding escapes.
    quoted: &'a str,
    escaped: bool,
}

impl<'a> RawString<'a> {
    /// The string's value: borrowed when it has no escapes; `None` when its escapes do not
    /// decode, which serde_json refuses too (a lone surrogate; bodies reach the decoders with
    /// those replaced, `segment::replace_lone_surrogates`).
    pub(crate) fn value(&self) -> Option<Cow<'a, str>> {
        if self.escaped {
            serde_json::from_str::<String>(self.quoted)
                .ok()
                .map(Cow::Owned)
        } else {
            self.quoted.get(1..self.quoted.len() - 1).map(Cow::Borrowed)
        }
    }
}

impl<'a> Walker<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self {
            text,
            at: 0,
            spaces: 0,
        }
    }

    /// Where the walker is: an index into its text.
    pub(crate) fn position(&self) -> usize {
        self.at
    }

    /// The text from `start` to where the walker is.
    pub(crate) fn since(&self, start: usize) -> Option<&'a str> {
        self.text.get(start..self.at)
    }

    /// How many whitespace bytes outside strings the walker has passed: compare two readings
    /// to tell whether the text between them is already compact.
    pub(crate) fn spaces(&self) -> usize {
        self.spaces
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The next byte that is not whitespace (0 at the end), without consuming it.
    pub(crate) fn peek(&mut self) -> u8 {
        let bytes = self.bytes();
        while let Some(&byte) = bytes.get(self.at) {
            if !matches!(byte, b' ' | b'\n' | b'\r' | b'\t') {
                return byte;
            }
            self.at += 1;
            self.spaces += 1;
        }
        0
    }

    /// The string that starts at the next byte (which must be its opening quote).
    pub(crate) fn string(&mut self) -> Option<RawString<'a>> {
        let start = self.at;
        let bytes = self.bytes();
        if bytes.get(start) != Some(&b'"') {
            return None;
        }
        let (end, escaped) = string_end(bytes, start + 1)?;
        self.at = end;
        Some(RawString {
            quoted: self.text.get(start..end)?,
            escaped,
        })
    }

    /// Skips the value that starts at the next non-whitespace byte and answers its text.
    pub(crate) fn value(&mut self) -> Option<&'a str> {
        let first = self.peek();
        let start = self.at;
        let bytes = self.bytes();
        match first {
            b'"' => {
                self.string()?;
            }
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match *bytes.get(self.at)? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b' ' | b'\n' | b'\r' | b'\t' => self.spaces += 1,
                        b'}' | b']' => {
                            depth = depth.checked_sub(1)?;
                            if depth == 0 {
                                self.at += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    self.at += 1;
                }
            }
            0 => return None,
            // A number, `true`, `false` or `null`: up to the next delimiter.
            _ => {
                while let Some(&byte) = bytes.get(self.at) {
                    if matches!(byte, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                        break;
                    }
                    self.at += 1;
                }
            }
        }
        self.text.get(start..self.at)
    }

    /// Reads the object that starts at the next non-whitespace byte, calling `entry` with each
    /// key and the walker at its value, which `entry` must consume. `None` when it is not an
    /// object, a key has escapes (the caller cannot match it as written), or `entry` says so.
    pub(crate) fn object(
        &mut self,
        mut entry: impl FnMut(&'a str, &mut Self) -> Option<()>,
    ) -> Option<()> {
        if self.peek() != b'{' {
            return None;
        }
        self.at += 1;
        if self.peek() == b'}' {
            self.at += 1;
            return Some(());
        }
        loop {
            let key = self.string()?;
            if key.escaped {
                return None;
            }
            let key = key.quoted.get(1..key.quoted.len() - 1)?;
            if self.peek() != b':' {
                return None;
            }
            self.at += 1;
            self.peek();
            entry(key, self)?;
            match self.peek() {
                b',' => {
                    self.at += 1;
                    self.peek();
                }
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// Index just past the closing quote of the string whose text (after its opening quote) starts
/// at `at`, and whether the string has escapes; `None` when it does not end.
pub(crate) fn string_end(bytes: &[u8], mut at: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        at = quote_or_backslash(bytes, at)?;
        if bytes[at] == b'"' {
            return Some((at + 1, escaped));
        }
        // A backslash: skip it and the character it escapes.
        escaped = true;
        at += 2;
    }
}

/// The index of the first `"` or `\` at or after `at`, eight bytes at a time.
fn quote_or_backslash(bytes: &[u8], mut at: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        // A zero byte of either marks a match. The lowest marked byte is always a true match
        // (a false mark can only follow a true one, through the subtraction's borrow).
        let marks = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash))
            & HIGH;
        if marks != 0 {
            return Some(at + (marks.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    bytes[at.min(bytes.len())..]
        .iter()
        .position(|&byte| byte == b'"' || byte == b'\\')
        .map(|found| at + found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_quotes_and_backslashes_at_every_position() {
        for len in 0..24 {
            for at in 0..len {
                for special in [b'"', b'\\'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    // Bytes that differ from the specials by one bit or borrow: no false matches.
                    for (i, byte) in bytes.iter_mut().enumerate() {
                        if i != at {
                            *byte = [b'!', b'#', b'[', b']', 0x80, 0xdc, b'a'][i % 7];
                        }
                    }
                    for from in 0..=at {
                        assert_eq!(quote_or_backslash(&bytes, from), Some(at), "{bytes:?}");
                    }
                    assert_eq!(quote_or_backslash(&bytes, at + 1), None);
                }
            }
        }
    }

    #[test]
    fn walks_values_of_every_kind() {
        let text = r#" { "a" : "x\"y" , "b":[1, {"c": "]}"}], "d": -1.5e3,"e":null, "f" : {} } "#;
        let mut seen = Vec::new();
        Walker::new(text)
            .object(|key, walker| {
                seen.push((key, walker.value()?));
                Some(())
            })
            .unwrap();
        assert_eq!(
            seen,
            [
                ("a", r#""x\"y""#),
                ("b", r#"[1, {"c": "]}"}]"#),
                ("d", "-1.5e3"),
                ("e", "null"),
                ("f", "{}"),
            ]
        );
        let mut walker = Walker::new(r#""caf\u00e9 \\ \n""#);
        assert_eq!(walker.string().unwrap().value().unwrap(), "café \\ \n");
        let mut walker = Walker::new(r#""\ud800""#);
        assert!(walker.string().unwrap().value().is_none());
    }

    #[test]
    fn counts_the_whitespace_between_tokens_only() {
        for (text, spaces) in [
            (r#"{"a":"b c","d":[1,{"e":null}]}"#, 0),
            ("{ \"a\" :\"b c\",\n\"d\":[1, {\"e\":null}]}", 4),
            (r#"[ " " ]"#, 2),
        ] {
            let mut walker = Walker::new(text);
            assert_eq!(walker.value(), Some(text));
            assert_eq!(walker.spaces(), spaces, "{text}");
        }
    }

    #[test]
    fn keys_with_escapes_and_broken_text_answer_none() {
        assert!(
            Walker::new(r#"{"typ\u0065": 1}"#)
                .object(|_, w| w.value().map(drop))
                .is_none()
        );
        for broken in [
            "",
            "{",
            "{\"a",
            "{\"a\":",
            "{\"a\":[1,",
            "{\"a\" 1}",
            "]",
            "{\"a\":1 x",
        ] {
            assert!(
                Walker::new(broken)
                    .object(|_, w| w.value().map(drop))
                    .is_none(),
                "{broken}"
            );
        }
    }
}
