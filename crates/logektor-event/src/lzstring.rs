//! LZ-String's `decompressFromBase64`, as posthog-js's legacy `compression=lz64` uses, with a
//! cap on the output.
//!
//! Written here rather than taken from the `lz-str` crate because that crate has no output
//! limit: LZ-String output can grow quadratically with its input (every code may emit a
//! dictionary entry as long as the output so far), so a 500 KB body could inflate to many
//! gigabytes. This decoder stops as soon as the output passes `limit` UTF-16 units. The crate
//! is kept as a dev-dependency to check this decoder against its compressor.

/// Why a body did not decompress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LzError {
    Invalid,
    TooLarge,
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Decompresses LZ-String base64 text into a string of at most `limit` UTF-16 units.
pub fn decompress_from_base64(input: &str, limit: usize) -> Result<String, LzError> {
    let mut values = Vec::with_capacity(input.len());
    for byte in input.bytes() {
        match byte {
            b'=' | b'\n' | b'\r' => {}
            _ => {
                let value = ALPHABET
                    .iter()
                    .position(|&c| c == byte)
                    .ok_or(LzError::Invalid)?;
                values.push(value as u32);
            }
        }
    }
    let units = decompress(&values, 6, limit)?;
    String::from_utf16(&units).map_err(|_| LzError::Invalid)
}

struct Bits<'a> {
    values: &'a [u32],
    bits_per_value: u32,
    index: usize,
    position: u32,
    current: u32,
}

impl Bits<'_> {
    /// Reads `count` bits, least significant first, as LZ-String writes them.
    fn read(&mut self, count: u32) -> Result<u32, LzError> {
        let mut out = 0u32;
        for shift in 0..count {
            if self.position == 0 {
                self.current = *self.values.get(self.index).ok_or(LzError::Invalid)?;
                self.index += 1;
                self.position = 1 << (self.bits_per_value - 1);
            }
            if self.current & self.position != 0 {
                out |= 1 << shift;
            }
            self.position >>= 1;
        }
        Ok(out)
    }
}

fn decompress(values: &[u32], bits_per_value: u32, limit: usize) -> Result<Vec<u16>, LzError> {
    if values.is_empty() {
        return Ok(Vec::new());
    }
    let mut bits = Bits {
        values,
        bits_per_value,
        index: 0,
        position: 0,
        current: 0,
    };
    // Codes 0..=2 are markers (8-bit literal, 16-bit literal, end); entries start at 3.
    let mut dictionary: Vec<Vec<u16>> = vec![Vec::new(), Vec::new(), Vec::new()];
    let mut num_bits = 2u32;
    let mut enlarge_in = 4u32;
    let mut output: Vec<u16> = Vec::new();

    let first = match bits.read(2)? {
        0 => bits.read(8)? as u16,
        1 => bits.read(16)? as u16,
        2 => return Ok(Vec::new()),
        _ => return Err(LzError::Invalid),
    };
    dictionary.push(vec![first]);
    let mut previous = vec![first];
    output.push(first);
    num_bits += 1;

    loop {
        if num_bits > 24 {
            return Err(LzError::Invalid);
        }
        let mut code = bits.read(num_bits)? as usize;
        match code {
            0 | 1 => {
                let width = if code == 0 { 8 } else { 16 };
                let literal = bits.read(width)? as u16;
                dictionary.push(vec![literal]);
                code = dictionary.len() - 1;
                enlarge_in -= 1;
            }
            2 => return Ok(output),
            _ => {}
        }
        if enlarge_in == 0 {
            enlarge_in = 1 << num_bits;
            num_bits += 1;
        }
        let entry = if code < dictionary.len() {
            dictionary[code].clone()
        } else if code == dictionary.len() {
            let mut entry = previous.clone();
            entry.push(previous[0]);
            entry
        } else {
            return Err(LzError::Invalid);
        };
        if output.len() + entry.len() > limit {
            return Err(LzError::TooLarge);
        }
        output.extend_from_slice(&entry);
        let mut added = previous;
        added.push(entry[0]);
        dictionary.push(added);
        enlarge_in -= 1;
        previous = entry;
        if enlarge_in == 0 {
            enlarge_in = 1 << num_bits;
            num_bits += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_compressor() {
        let cases = [
            "",
            "a",
            "hello hello hello hello",
            r#"[{"event":"$pageview","properties":{"token":"phc_x","distinct_id":"d1","$current_url":"https://a.example/ü"}}]"#,
            &"abcabcabd".repeat(2000),
        ];
        for text in cases {
            let compressed = lz_str::compress_to_base64(text);
            assert_eq!(
                decompress_from_base64(&compressed, 1 << 20).as_deref(),
                Ok(text),
                "{text}"
            );
        }
    }

    #[test]
    fn stops_at_the_limit_and_rejects_garbage() {
        let compressed = lz_str::compress_to_base64("x".repeat(100_000).as_str());
        assert!(compressed.len() < 2_000);
        assert_eq!(
            decompress_from_base64(&compressed, 10_000),
            Err(LzError::TooLarge)
        );
        assert_eq!(
            decompress_from_base64("!!!not base64", 100),
            Err(LzError::Invalid)
        );
        assert_eq!(decompress_from_base64("AAAA", 100), Err(LzError::Invalid));
    }
}
