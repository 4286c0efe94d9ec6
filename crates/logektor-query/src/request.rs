//! The body of a SQL request (`POST /v1/sql`): JSON `{"sql": "...", "format": "..."}` or the
//! SQL as plain text, with the output format from the body or the query string.

use crate::format::Format;

/// Largest SQL request body.
pub const MAX_SQL_BODY: usize = 1024 * 1024;

/// A parsed SQL request.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlRequest {
    pub sql: String,
    pub format: Format,
}

/// Why a SQL request body was refused (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    Invalid(String),
    #[error("unknown format {0:?}; expected one of {names}", names = Format::NAMES)]
    UnknownFormat(String),
}

impl RequestError {
    /// A short stable code for API bodies.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::Invalid(_) => "invalid_request",
            RequestError::UnknownFormat(_) => "invalid_format",
        }
    }
}

#[derive(serde::Deserialize)]
struct JsonRequest {
    sql: String,
    format: Option<String>,
}

impl SqlRequest {
    /// Parses `body` (JSON when `json`, else UTF-8 SQL text); a format in the JSON body wins
    /// over `query_format` (`?format=`); the default is JSON.
    pub fn parse(
        body: &[u8],
        json: bool,
        query_format: Option<&str>,
    ) -> Result<Self, RequestError> {
        if body.len() > MAX_SQL_BODY {
            return Err(RequestError::Invalid(format!(
                "SQL request is larger than {MAX_SQL_BODY} bytes"
            )));
        }
        let (sql, body_format) = if json {
            let request: JsonRequest = serde_json::from_slice(body).map_err(|err| {
                RequestError::Invalid(format!("expected {{\"sql\": \"...\"}}: {err}"))
            })?;
            (request.sql, request.format)
        } else {
            let text = std::str::from_utf8(body)
                .map_err(|_| RequestError::Invalid("SQL text is not UTF-8".into()))?;
            (text.to_owned(), None)
        };
        if sql.trim().is_empty() {
            return Err(RequestError::Invalid("no SQL given".into()));
        }
        let format = match body_format.as_deref().or(query_format) {
            None => Format::Json,
            Some(name) => {
                Format::parse(name).ok_or_else(|| RequestError::UnknownFormat(name.to_owned()))?
            }
        };
        Ok(Self { sql, format })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_and_formats() {
        let request = SqlRequest::parse(
            br#"{"sql": "SELECT 1", "format": "csv"}"#,
            true,
            Some("json"),
        );
        assert_eq!(request.unwrap().format, Format::Csv);
        let request = SqlRequest::parse(b"SELECT 1", false, Some("ndjson")).unwrap();
        assert_eq!(
            (request.sql.as_str(), request.format),
            ("SELECT 1", Format::Ndjson)
        );
        assert_eq!(
            SqlRequest::parse(b"  ", false, None),
            Err(RequestError::Invalid("no SQL given".into()))
        );
        assert!(matches!(
            SqlRequest::parse(b"SELECT 1", false, Some("xml")),
            Err(RequestError::UnknownFormat(_))
        ));
        assert!(SqlRequest::parse(b"\xff", false, None).is_err());
        assert!(SqlRequest::parse(b"{\"sql\": 1}", true, None).is_err());
    }
}
