//! What a WAL record holds: the request's metadata, its (decompressed) body, and which of its
//! events were dropped as duplicates.
//!
//! Layout, little endian: `version u8 | endpoint u8 | received_at i64 | request_id u128 |
//! source_len u16 | source | ip_len u8 | ip | body` for version 1; version 2 inserts
//! `ua_len u16 | ua | ip_policy u8 | visitor_len u8 | visitor | skip_count u32 | skip u32*`
//! before the body. Version 1 records (written before enrichment existed) still replay.

use logektor_event::{Endpoint, IpPolicy, RequestMeta};

const VERSION: u8 = 2;

/// One accepted request, as stored in the WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestRecord {
    pub meta: RequestMeta,
    pub endpoint: Endpoint,
    /// Indices of the body's events that were duplicates of events already accepted; they are
    /// not stored, on replay either.
    pub skip: Vec<u32>,
    pub body: Vec<u8>,
}

fn put_str<const WIDE: bool>(out: &mut Vec<u8>, text: &str) {
    let max = if WIDE {
        u16::MAX as usize
    } else {
        u8::MAX as usize
    };
    // Cut at a character boundary so the stored text stays valid UTF-8.
    let mut len = text.len().min(max);
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    if WIDE {
        out.extend_from_slice(&(len as u16).to_le_bytes());
    } else {
        out.push(len as u8);
    }
    out.extend_from_slice(&text.as_bytes()[..len]);
}

/// The bytes of the [`IngestRecord`] with these parts: what the request path writes to the WAL,
/// the body copied once, straight from the request into the record.
pub fn encode_record(meta: &RequestMeta, endpoint: Endpoint, skip: &[u32], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + meta.source.len() + 4 * skip.len() + body.len());
    out.push(VERSION);
    out.push(endpoint.code());
    out.extend_from_slice(&meta.received_at_micros.to_le_bytes());
    out.extend_from_slice(&meta.request_id.to_le_bytes());
    put_str::<true>(&mut out, &meta.source);
    put_str::<false>(&mut out, meta.client_ip.as_deref().unwrap_or(""));
    put_str::<true>(&mut out, meta.user_agent.as_deref().unwrap_or(""));
    out.push(meta.ip_policy.code());
    put_str::<false>(&mut out, meta.visitor_id.as_deref().unwrap_or(""));
    out.extend_from_slice(&(skip.len() as u32).to_le_bytes());
    for index in skip {
        out.extend_from_slice(&index.to_le_bytes());
    }
    out.extend_from_slice(body);
    out
}

impl IngestRecord {
    pub fn encode(&self) -> Vec<u8> {
        encode_record(&self.meta, self.endpoint, &self.skip, &self.body)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut reader = Reader { bytes, offset: 0 };
        let version = reader.take(1)?[0];
        if version != 1 && version != VERSION {
            return Err(format!("unknown WAL record version {version}"));
        }
        let endpoint_code = reader.take(1)?[0];
        let endpoint = Endpoint::from_code(endpoint_code)
            .ok_or_else(|| format!("unknown endpoint code {endpoint_code}"))?;
        let received_at_micros = i64::from_le_bytes(reader.take(8)?.try_into().unwrap());
        let request_id = u128::from_le_bytes(reader.take(16)?.try_into().unwrap());
        let source_len = u16::from_le_bytes(reader.take(2)?.try_into().unwrap()) as usize;
        let source = String::from_utf8(reader.take(source_len)?.to_vec())
            .map_err(|_| "source is not UTF-8".to_owned())?;
        let ip_len = reader.take(1)?[0] as usize;
        let ip = String::from_utf8(reader.take(ip_len)?.to_vec())
            .map_err(|_| "ip is not UTF-8".to_owned())?;
        let mut meta = RequestMeta {
            client_ip: (!ip.is_empty()).then_some(ip),
            ..RequestMeta::new(received_at_micros, source, request_id)
        };
        let mut skip = Vec::new();
        if version >= 2 {
            let ua_len = u16::from_le_bytes(reader.take(2)?.try_into().unwrap()) as usize;
            let ua = String::from_utf8(reader.take(ua_len)?.to_vec())
                .map_err(|_| "user agent is not UTF-8".to_owned())?;
            meta.user_agent = (!ua.is_empty()).then_some(ua);
            let policy = reader.take(1)?[0];
            meta.ip_policy = IpPolicy::from_code(policy)
                .ok_or_else(|| format!("unknown IP policy code {policy}"))?;
            let visitor_len = reader.take(1)?[0] as usize;
            let visitor = String::from_utf8(reader.take(visitor_len)?.to_vec())
                .map_err(|_| "visitor id is not UTF-8".to_owned())?;
            meta.visitor_id = (!visitor.is_empty()).then_some(visitor);
            let count = u32::from_le_bytes(reader.take(4)?.try_into().unwrap()) as usize;
            if count > bytes.len() / 4 {
                return Err("WAL record's skip list is longer than the record".into());
            }
            for _ in 0..count {
                skip.push(u32::from_le_bytes(reader.take(4)?.try_into().unwrap()));
            }
        }
        let body = bytes[reader.offset..].to_vec();
        Ok(Self {
            meta,
            endpoint,
            skip,
            body,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.offset + n;
        if end > self.bytes.len() {
            return Err("WAL record is shorter than its header".into());
        }
        let slice = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logektor_event::EventType;

    #[test]
    fn round_trips() {
        let record = IngestRecord {
            meta: RequestMeta {
                client_ip: Some("2001:db8::1".into()),
                user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0".into()),
                ip_policy: IpPolicy::Truncate,
                visitor_id: Some("ck_0123456789abcdef".into()),
                ..RequestMeta::new(-5, "web", u128::MAX - 3)
            },
            endpoint: Endpoint::Single(EventType::Alias),
            skip: vec![0, 7],
            body: b"{\"x\":1}".to_vec(),
        };
        assert_eq!(IngestRecord::decode(&record.encode()).unwrap(), record);
        let plain = IngestRecord {
            meta: RequestMeta::new(9, "web", 1),
            skip: vec![],
            ..record
        };
        assert_eq!(IngestRecord::decode(&plain.encode()).unwrap(), plain);
        assert!(IngestRecord::decode(&[1, 0, 3]).is_err());
        // A version 1 record, as written before enrichment existed.
        let mut v1 = vec![1u8, 0];
        v1.extend_from_slice(&9i64.to_le_bytes());
        v1.extend_from_slice(&1u128.to_le_bytes());
        v1.extend_from_slice(&3u16.to_le_bytes());
        v1.extend_from_slice(b"web");
        v1.push(0);
        v1.extend_from_slice(b"{}");
        let old = IngestRecord::decode(&v1).unwrap();
        assert_eq!(old.meta, RequestMeta::new(9, "web", 1));
        assert_eq!(old.body, b"{}");
    }
}
