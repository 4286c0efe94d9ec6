//! Columns derived from others at ingest: URL path, referrer host, UTM tags.

use url::Url;

/// Path of a URL (`https://a.example/x?y` → `/x`), or `None` if it does not parse.
pub(crate) fn url_path(text: &str) -> Option<String> {
    Url::parse(text).ok().map(|url| url.path().to_owned())
}

/// Host of a referrer URL, without a leading `www.`.
pub(crate) fn referrer_host(text: &str) -> Option<String> {
    let url = Url::parse(text).ok()?;
    let host = url.host_str()?;
    Some(host.strip_prefix("www.").unwrap_or(host).to_owned())
}

/// The five `utm_*` query parameters of a page URL, in column order.
pub(crate) fn utm_from_url(text: &str) -> [Option<String>; 5] {
    let mut tags: [Option<String>; 5] = Default::default();
    let Ok(url) = Url::parse(text) else {
        return tags;
    };
    for (key, value) in url.query_pairs() {
        let slot = match key.as_ref() {
            "utm_source" => 0,
            "utm_medium" => 1,
            "utm_campaign" => 2,
            "utm_term" => 3,
            "utm_content" => 4,
            _ => continue,
        };
        if tags[slot].is_none() && !value.is_empty() {
            tags[slot] = Some(value.into_owned());
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_path_host_and_utm() {
        assert_eq!(
            url_path("https://a.example/x/y?z=1").as_deref(),
            Some("/x/y")
        );
        assert_eq!(url_path("not a url"), None);
        assert_eq!(
            referrer_host("https://www.google.com/search?q=x").as_deref(),
            Some("google.com")
        );
        let tags = utm_from_url("https://a.example/?utm_source=news&utm_campaign=spring&x=1");
        assert_eq!(tags[0].as_deref(), Some("news"));
        assert_eq!(tags[1], None);
        assert_eq!(tags[2].as_deref(), Some("spring"));
    }
}
