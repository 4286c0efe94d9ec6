//! Columns derived from others at ingest: URL path, referrer host, UTM tags, the user agent's
//! browser, OS and device, and the client IP after the source's IP policy.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};

use url::Url;

/// Path of a URL (`https://a.example/x?y` → `/x`), or `None` if it does not parse.
pub(crate) fn url_path(text: &str) -> Option<String> {
    Url::parse(text).ok().map(|url| url.path().to_owned())
}

/// Host of a referrer URL, without a leading `www.`.
pub(crate) fn referrer_host(text: &str) -> Option<String> {
    let parsed;
    let host = match simple_http_url(text) {
        Some(simple) => simple.host,
        None => {
            parsed = Url::parse(text).ok()?;
            parsed.host_str()?
        }
    };
    Some(host.strip_prefix("www.").unwrap_or(host).to_owned())
}

/// The five `utm_*` query parameters of a page URL, in column order.
pub(crate) fn utm_from_url(text: &str) -> [Option<String>; 5] {
    let mut tags: [Option<String>; 5] = Default::default();
    // Most page URLs have no query at all: skip parsing them.
    if !text.contains('?') {
        return tags;
    }
    let pairs = |query: &str, tags: &mut [Option<String>; 5]| {
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
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
    };
    match simple_http_url(text) {
        Some(simple) => pairs(simple.query.unwrap_or(""), &mut tags),
        None => {
            if let Ok(url) = Url::parse(text) {
                pairs(url.query().unwrap_or(""), &mut tags);
            }
        }
    }
    tags
}

/// The parts of an `http`/`https` URL that [`Url::parse`] would give unchanged.
struct SimpleUrl<'a> {
    host: &'a str,
    query: Option<&'a str>,
}

/// Reads the host and query of the URLs that make up nearly all real traffic without the
/// full WHATWG parse, which took 3.7% of the server's CPU at full load (`url` builds a whole
/// serialized URL, IDNA-checks the host and percent-encodes every part). `None` means "not
/// that simple": the caller then parses with [`Url::parse`], so the answer never differs.
///
/// Simple means: printable ASCII only (the parser removes or encodes anything else), a
/// lower-case `http://` or `https://`, no user info, a host of non-empty lower-case labels of
/// `[a-z0-9-]` that neither start nor end with `-`, are not IDNA (`xn--`) and whose last label
/// starts with a letter (the parser reads a host ending in a number as an IPv4 address), and an
/// optional port of at most five digits below 65536. For such a URL the parser copies the host
/// as it is, and its query, percent-encoded and then decoded again by `query_pairs`, is the
/// same as the raw query decoded once (the test below holds the two to the same answers).
fn simple_http_url(text: &str) -> Option<SimpleUrl<'_>> {
    if !text.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return None;
    }
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))?;
    let end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(end);
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if let Some(port) = port {
        let valid = (1..=5).contains(&port.len())
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|port| port <= 65535);
        if !valid {
            return None;
        }
    }
    let mut labels = host.split('.').peekable();
    while let Some(label) = labels.next() {
        let simple = !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
            && !label.starts_with("xn--");
        let last = labels.peek().is_none();
        if !simple || (last && !label.as_bytes()[0].is_ascii_lowercase()) {
            return None;
        }
    }
    let before_fragment = after.split_once('#').map_or(after, |(before, _)| before);
    let query = before_fragment.split_once('?').map(|(_, query)| query);
    Some(SimpleUrl { host, query })
}

/// What a user agent says about the client. Events share one per distinct user agent (see
/// [`user_agent`]), so these columns cost an `Arc` per event rather than four strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAgentInfo {
    /// The user agent itself, cut to [`MAX_USER_AGENT_BYTES`].
    pub text: String,
    pub browser: Option<String>,
    pub os: Option<String>,
    /// `desktop`, `mobile`, `tablet`, `bot` or `other`.
    pub device_type: &'static str,
    pub is_bot: bool,
}

/// User agents are cut to this many bytes: real ones are a few hundred, and a long one would be
/// copied into every event of a request and into the cache.
pub const MAX_USER_AGENT_BYTES: usize = 512;

/// `text` cut to [`MAX_USER_AGENT_BYTES`] at a character boundary.
pub fn cap_user_agent(text: &str) -> &str {
    let mut end = text.len().min(MAX_USER_AGENT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Distinct user agents remembered; real traffic has few, so a full cache is simply cleared.
const USER_AGENT_CACHE_CAPACITY: usize = 16_384;

static USER_AGENTS: LazyLock<Mutex<HashMap<String, Arc<UserAgentInfo>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Parses a user agent with woothee, through a process-wide cache: parsing costs microseconds,
/// a cache hit a hash lookup.
pub fn user_agent(text: &str) -> Arc<UserAgentInfo> {
    let text = cap_user_agent(text);
    if let Some(hit) = USER_AGENTS.lock().expect("ua cache").get(text) {
        return Arc::clone(hit);
    }
    let info = Arc::new(parse_user_agent(text));
    let mut cache = USER_AGENTS.lock().expect("ua cache");
    if cache.len() >= USER_AGENT_CACHE_CAPACITY {
        cache.clear();
    }
    cache.insert(text.to_owned(), Arc::clone(&info));
    info
}

/// Substrings of user agents of automated clients that woothee does not list as crawlers.
const BOT_MARKERS: &[&str] = &[
    "bot",
    "crawler",
    "spider",
    "slurp",
    "headlesschrome",
    "phantomjs",
    "lighthouse",
    "python-requests",
    "curl/",
    "wget/",
    "go-http-client",
];

fn parse_user_agent(text: &str) -> UserAgentInfo {
    let lower = text.to_ascii_lowercase();
    let marked_bot = BOT_MARKERS.iter().any(|marker| lower.contains(marker));
    let known = |value: &str| (value != "UNKNOWN" && !value.is_empty()).then(|| value.to_owned());
    let Some(parsed) = woothee::parser::Parser::new().parse(text) else {
        return UserAgentInfo {
            text: text.to_owned(),
            browser: None,
            os: None,
            device_type: if marked_bot { "bot" } else { "other" },
            is_bot: marked_bot,
        };
    };
    let is_bot = marked_bot || parsed.category == "crawler";
    let tablet = parsed.os == "iPad"
        || (parsed.os == "Android" && !lower.contains("mobile"))
        || lower.contains("tablet");
    let device_type = if is_bot {
        "bot"
    } else if tablet {
        "tablet"
    } else {
        match parsed.category {
            "pc" => "desktop",
            "smartphone" | "mobilephone" => "mobile",
            _ => "other",
        }
    };
    UserAgentInfo {
        text: text.to_owned(),
        browser: known(parsed.name),
        os: known(parsed.os),
        device_type,
        is_bot,
    }
}

/// What a source stores of a client's IP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpPolicy {
    /// The address as seen.
    #[default]
    Keep,
    /// IPv4 with the last octet zeroed (`203.0.113.0`); IPv6 cut to its first 48 bits.
    Truncate,
    /// No address at all.
    Drop,
}

impl IpPolicy {
    /// Stable one-byte code, as stored in the WAL.
    pub fn code(self) -> u8 {
        match self {
            IpPolicy::Keep => 0,
            IpPolicy::Truncate => 1,
            IpPolicy::Drop => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        [IpPolicy::Keep, IpPolicy::Truncate, IpPolicy::Drop]
            .get(usize::from(code))
            .copied()
    }

    /// What the policy keeps of `ip`. Text that is not an IP address is kept only by `Keep`.
    pub fn apply(self, ip: &str) -> Option<String> {
        self.keep(ip).map(Cow::into_owned)
    }

    /// [`IpPolicy::apply`], borrowing `ip` where it is kept as it is.
    pub fn keep(self, ip: &str) -> Option<Cow<'_, str>> {
        match self {
            IpPolicy::Keep => Some(Cow::Borrowed(ip)),
            IpPolicy::Drop => None,
            IpPolicy::Truncate => match ip.trim().parse::<IpAddr>().ok()? {
                IpAddr::V4(v4) => {
                    let [a, b, c, _] = v4.octets();
                    Some(Cow::Owned(std::net::Ipv4Addr::new(a, b, c, 0).to_string()))
                }
                IpAddr::V6(v6) => {
                    let mut octets = v6.octets();
                    octets[6..].fill(0);
                    Some(Cow::Owned(std::net::Ipv6Addr::from(octets).to_string()))
                }
            },
        }
    }
}

impl std::str::FromStr for IpPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "keep" => Ok(IpPolicy::Keep),
            "truncate" | "strip" | "strip-last-octet" => Ok(IpPolicy::Truncate),
            "drop" => Ok(IpPolicy::Drop),
            other => Err(format!(
                "unknown IP policy {other:?}; expected keep, truncate or drop"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_map_to_browser_os_and_device() {
        let cases = [
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                Some("Chrome"),
                Some("Windows 10"),
                "desktop",
                false,
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
                Some("Safari"),
                Some("iPhone"),
                "mobile",
                false,
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
                Some("Safari"),
                Some("iPad"),
                "tablet",
                false,
            ),
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                Some("Googlebot"),
                None,
                "bot",
                true,
            ),
        ];
        for (ua, browser, os, device, bot) in cases {
            let info = user_agent(ua);
            assert_eq!(info.browser.as_deref(), browser, "{ua}");
            assert_eq!(info.os.as_deref(), os, "{ua}");
            assert_eq!(info.device_type, device, "{ua}");
            assert_eq!(info.is_bot, bot, "{ua}");
            assert_eq!(info.text, ua);
        }
        assert!(user_agent("curl/8.5.0").is_bot);
        assert!(Arc::ptr_eq(
            &user_agent("curl/8.5.0"),
            &user_agent("curl/8.5.0")
        ));
    }

    #[test]
    fn ip_policies() {
        assert_eq!(
            IpPolicy::Keep.apply("203.0.113.9").as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(
            IpPolicy::Truncate.apply("203.0.113.9").as_deref(),
            Some("203.0.113.0")
        );
        assert_eq!(
            IpPolicy::Truncate.apply("2001:db8:1:2:3:4:5:6").as_deref(),
            Some("2001:db8:1::")
        );
        assert_eq!(IpPolicy::Truncate.apply("not an ip"), None);
        assert_eq!(IpPolicy::Drop.apply("203.0.113.9"), None);
        for policy in [IpPolicy::Keep, IpPolicy::Truncate, IpPolicy::Drop] {
            assert_eq!(IpPolicy::from_code(policy.code()), Some(policy));
        }
    }

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

    /// What the full WHATWG parse gives, which the fast path must always match.
    fn parsed_host(text: &str) -> Option<String> {
        let url = Url::parse(text).ok()?;
        let host = url.host_str()?;
        Some(host.strip_prefix("www.").unwrap_or(host).to_owned())
    }

    fn parsed_utm(text: &str) -> [Option<String>; 5] {
        let mut tags: [Option<String>; 5] = Default::default();
        let Ok(url) = Url::parse(text) else {
            return tags;
        };
        let keys = [
            "utm_source",
            "utm_medium",
            "utm_campaign",
            "utm_term",
            "utm_content",
        ];
        for (key, value) in url.query_pairs() {
            if let Some(slot) = keys.iter().position(|k| *k == key)
                && tags[slot].is_none()
                && !value.is_empty()
            {
                tags[slot] = Some(value.into_owned());
            }
        }
        tags
    }

    #[test]
    fn simple_urls_read_without_the_parser_agree_with_it() {
        let cases = [
            "https://www.google.com/search?q=x",
            "http://news.ycombinator.com",
            "https://t.co/abc?utm_source=tw&utm_medium=social#frag?utm_term=no",
            "https://a.example:8080/p?utm_campaign=spring%20sale&utm_source=a+b",
            "https://a.example:65536/",
            "https://a.example:/",
            "https://a.example:0x1/",
            "https://user:pw@a.example/",
            "https://A.Example/",
            "https://xn--bcher-kva.example/",
            "https://bücher.example/?utm_source=ü",
            "https://192.168.0.1/",
            "https://0x7f.1/",
            "https://a.123/",
            "https://a..b/",
            "https://.a/",
            "https://a./",
            "https://-a.example/",
            "https://a-.example/",
            "https://a_b.example/",
            "https://[::1]:80/?utm_source=v6",
            "https:///a.example/",
            "https:\\\\a.example\\x?utm_source=bs",
            "https://a.example\\x?utm_source=bs",
            "HTTPS://a.example/?utm_source=upper",
            "ftp://a.example/?utm_source=ftp",
            "https://a.example/?utm_source=%zz&utm_medium=%41&utm_term='q'&utm_content=<b>",
            "https://a.example/?utm_source=&utm_source=second",
            "https://a.example/ x?utm_source=space",
            "https://a%2Eexample/",
            "https://a.example/#?utm_source=fragment",
            "https://",
            "https://:80/",
            "not a url",
            "",
        ];
        // The common shapes take the fast path (else this test would prove nothing).
        for simple in &cases[..4] {
            assert!(simple_http_url(simple).is_some(), "{simple}");
        }
        for case in cases {
            assert_eq!(referrer_host(case), parsed_host(case), "host of {case:?}");
            assert_eq!(utm_from_url(case), parsed_utm(case), "utm of {case:?}");
        }
        // And many generated from the characters that matter to either parser.
        let pieces = [
            "https://",
            "http://",
            "www.",
            "a",
            "b1",
            "-",
            ".",
            ":",
            "8080",
            "99999",
            "/",
            "\\",
            "?",
            "#",
            "&",
            "=",
            "%",
            "%41",
            "+",
            "utm_source",
            "utm_term=",
            "x",
            "@",
            "[",
            "]",
            "xn--",
            "0x",
            "9",
            "é",
            " ",
            "'",
            "\"",
            "A",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        for _ in 0..50_000 {
            let mut text = String::from(if next() % 2 == 0 {
                "https://"
            } else {
                "http://"
            });
            for _ in 0..next() % 12 {
                text.push_str(pieces[next() % pieces.len()]);
            }
            assert_eq!(referrer_host(&text), parsed_host(&text), "host of {text:?}");
            assert_eq!(utm_from_url(&text), parsed_utm(&text), "utm of {text:?}");
        }
    }
}
