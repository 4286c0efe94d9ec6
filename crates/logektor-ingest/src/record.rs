//! What a WAL record holds: the request's metadata and its (decompressed) body.
//!
//! Layout, little endian: `version u8 | endpoint u8 | received_at i64 | request_id u128 |
//! source_len u16 | source | ip_len u8 | ip | body`.

use logektor_event::{Endpoint, RequestMeta};

const VERSION: u8 = 1;

/// One accepted request, as stored in the WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestRecord {
    pub meta: RequestMeta,
    pub endpoint: Endpoint,
    pub body: Vec<u8>,
}

impl IngestRecord {
    pub fn encode(&self) -> Vec<u8> {
        let source = self.meta.source.as_bytes();
        let ip = self.meta.client_ip.as_deref().unwrap_or("").as_bytes();
        let mut out = Vec::with_capacity(28 + source.len() + ip.len() + self.body.len() + 4);
        out.push(VERSION);
        out.push(self.endpoint.code());
        out.extend_from_slice(&self.meta.received_at_micros.to_le_bytes());
        out.extend_from_slice(&self.meta.request_id.to_le_bytes());
        out.extend_from_slice(&(source.len().min(u16::MAX as usize) as u16).to_le_bytes());
        out.extend_from_slice(&source[..source.len().min(u16::MAX as usize)]);
        out.push(ip.len().min(u8::MAX as usize) as u8);
        out.extend_from_slice(&ip[..ip.len().min(u8::MAX as usize)]);
        out.extend_from_slice(&self.body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut reader = Reader { bytes, offset: 0 };
        let version = reader.take(1)?[0];
        if version != VERSION {
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
        let body = bytes[reader.offset..].to_vec();
        Ok(Self {
            meta: RequestMeta {
                received_at_micros,
                source,
                client_ip: (!ip.is_empty()).then_some(ip),
                request_id,
            },
            endpoint,
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
                received_at_micros: -5,
                source: "web".into(),
                client_ip: Some("2001:db8::1".into()),
                request_id: u128::MAX - 3,
            },
            endpoint: Endpoint::Single(EventType::Alias),
            body: b"{\"x\":1}".to_vec(),
        };
        assert_eq!(IngestRecord::decode(&record.encode()).unwrap(), record);
        let no_ip = IngestRecord {
            meta: RequestMeta {
                client_ip: None,
                ..record.meta.clone()
            },
            ..record
        };
        assert_eq!(IngestRecord::decode(&no_ip.encode()).unwrap(), no_ip);
        assert!(IngestRecord::decode(&[1, 0, 3]).is_err());
    }
}
