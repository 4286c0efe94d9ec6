//! Segment files: naming, the record format, and reading them back with torn-tail detection.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

pub(crate) const MAGIC: &[u8; 8] = b"LGKWAL01";
pub(crate) const RECORD_HEADER: usize = 16;
/// Upper bound on one record's payload; a larger length field can only be corruption.
pub(crate) const MAX_PAYLOAD: usize = 256 * 1024 * 1024;

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

pub(crate) fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.wal"))
}

/// Segment files of `dir` as `(first_seq, path)`, oldest first.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(segments),
        Err(err) => return Err(Error::io(dir, err)),
    };
    for entry in entries {
        let entry = entry.map_err(|err| Error::io(dir, err))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
            continue;
        };
        if let Ok(first_seq) = stem.parse::<u64>() {
            segments.push((first_seq, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

pub(crate) fn encode_record(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let mut crc = crc32c::crc32c(&seq.to_le_bytes());
    crc = crc32c::crc32c_append(crc, payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// What reading one segment found.
pub(crate) struct SegmentScan {
    pub records: Vec<Record>,
    /// Length of the valid prefix; anything after it is a torn or corrupt tail.
    pub valid_len: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub damage: Option<String>,
    /// Whether an intact record follows the damage (so it is not a torn tail).
    pub intact_after: bool,
}

pub(crate) fn scan_segment(path: &Path) -> Result<SegmentScan> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(|err| Error::io(path, err))?;
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Ok(SegmentScan {
            records: Vec::new(),
            valid_len: 0,
            damage: Some("missing or bad segment header".into()),
            intact_after: false,
        });
    }
    let mut records = Vec::new();
    let mut offset = MAGIC.len();
    let damage = loop {
        let rest = &bytes[offset..];
        if rest.is_empty() {
            break None;
        }
        if rest.len() < RECORD_HEADER {
            break Some(format!("truncated record header ({} bytes)", rest.len()));
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().unwrap());
        let seq_bytes: [u8; 8] = rest[8..16].try_into().unwrap();
        if len > MAX_PAYLOAD || rest.len() < RECORD_HEADER + len {
            break Some(format!(
                "record of {len} bytes runs past the end of the file"
            ));
        }
        let payload = &rest[RECORD_HEADER..RECORD_HEADER + len];
        let actual = crc32c::crc32c_append(crc32c::crc32c(&seq_bytes), payload);
        if actual != crc {
            break Some(format!(
                "checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"
            ));
        }
        records.push(Record {
            seq: u64::from_le_bytes(seq_bytes),
            payload: payload.to_vec(),
        });
        offset += RECORD_HEADER + len;
    };
    // A crash tears only the end of what was being written. If an intact record follows the
    // damage, the damage is in the middle of acknowledged data: that is corruption, not a tear.
    let min_seq = records.last().map_or(0, |r: &Record| r.seq + 1);
    let intact_after = damage.is_some() && intact_record_after(&bytes, offset + 1, min_seq);
    Ok(SegmentScan {
        records,
        valid_len: offset as u64,
        damage,
        intact_after,
    })
}

/// Whether a record with a valid checksum and a sequence number `>= min_seq` starts anywhere
/// at or after `from`.
fn intact_record_after(bytes: &[u8], from: usize, min_seq: u64) -> bool {
    let last_start = bytes.len().saturating_sub(RECORD_HEADER);
    (from..=last_start).any(|start| {
        let rest = &bytes[start..];
        if rest.len() < RECORD_HEADER {
            return false;
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().unwrap()) as usize;
        if len > MAX_PAYLOAD || rest.len() < RECORD_HEADER + len {
            return false;
        }
        let crc = u32::from_le_bytes(rest[4..8].try_into().unwrap());
        let seq_bytes: [u8; 8] = rest[8..16].try_into().unwrap();
        let payload = &rest[RECORD_HEADER..RECORD_HEADER + len];
        u64::from_le_bytes(seq_bytes) >= min_seq
            && crc32c::crc32c_append(crc32c::crc32c(&seq_bytes), payload) == crc
    })
}

/// Reads every intact record of the log in `dir` without changing anything, for read-only
/// users such as the offline `logektor sql`. A torn tail of the newest segment is skipped, as
/// the server would cut it; damage elsewhere is an error.
pub fn read_dir_records(dir: &Path, after_seq: u64) -> Result<Vec<Record>> {
    let segments = list_segments(dir)?;
    let mut out = Vec::new();
    for (index, (_, path)) in segments.iter().enumerate() {
        let scan = scan_segment(path)?;
        if let Some(reason) = scan.damage
            && (index + 1 != segments.len() || scan.intact_after)
        {
            return Err(Error::Corrupt {
                path: path.clone(),
                offset: scan.valid_len,
                reason,
            });
        }
        out.extend(scan.records.into_iter().filter(|r| r.seq > after_seq));
    }
    Ok(out)
}

pub(crate) fn create_segment(dir: &Path, first_seq: u64) -> Result<(File, PathBuf)> {
    let path = segment_path(dir, first_seq);
    let created = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .and_then(|mut file| {
            file.write_all(MAGIC)?;
            file.sync_all()?;
            Ok(file)
        });
    match created {
        Ok(file) => {
            sync_dir(dir)?;
            Ok((file, path))
        }
        Err(err) => {
            // Leave no half-made segment behind (e.g. on a full disk).
            let _ = fs::remove_file(&path);
            Err(Error::io(&path, err))
        }
    }
}

/// Makes file creations and deletions in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|err| Error::io(dir, err))
}
