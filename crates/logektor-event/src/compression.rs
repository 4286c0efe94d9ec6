//! Bounded gzip: bodies arrive compressed (`Content-Encoding: gzip`, posthog-js's `gzip-js`),
//! and a few hundred bytes can inflate to gigabytes.

use std::io::Read;

/// Why a gzip body was refused.
#[derive(Debug, thiserror::Error)]
pub enum GunzipError {
    #[error("body is not valid gzip: {0}")]
    Invalid(std::io::Error),
    #[error("decompressed body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
}

/// Inflates a gzip body (concatenated members included) of at most `limit` bytes, inflating
/// no more than `limit + 1` bytes however large the output would be.
pub fn gunzip(raw: &[u8], limit: usize) -> Result<Vec<u8>, GunzipError> {
    let mut decoder = flate2::read::MultiGzDecoder::new(raw).take(limit as u64 + 1);
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit + 1));
    decoder
        .read_to_end(&mut out)
        .map_err(GunzipError::Invalid)?;
    if out.len() > limit {
        return Err(GunzipError::TooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn inflates_within_the_limit_and_refuses_a_bomb() {
        assert_eq!(gunzip(&gzip(b"hello"), 5).unwrap(), b"hello");
        let bomb = gzip(&vec![0u8; 10 * 1024 * 1024]);
        assert!(bomb.len() < 20 * 1024);
        assert!(matches!(
            gunzip(&bomb, 1024),
            Err(GunzipError::TooLarge { limit: 1024 })
        ));
        assert!(matches!(
            gunzip(b"not gzip", 1024),
            Err(GunzipError::Invalid(_))
        ));
    }
}
