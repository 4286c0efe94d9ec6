//! Realistic Segment web traffic, deterministic by seed: ~70% page, ~27% track, ~3% identify;
//! skewed page and visitor popularity; real user agents, referrers and UTM tags.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
];
const REFERRERS: &[&str] = &[
    "",
    "",
    "",
    "https://www.google.com/",
    "https://www.bing.com/search?q=analytics",
    "https://news.ycombinator.com/",
    "https://twitter.com/",
    "https://www.reddit.com/r/programming/",
];
const CAMPAIGNS: &[(&str, &str, &str)] = &[
    ("newsletter", "email", "spring_sale"),
    ("google", "cpc", "brand"),
    ("twitter", "social", "launch"),
];
const SECTIONS: &[&str] = &["blog", "docs", "pricing", "product", "about", "careers"];
const TRACK_EVENTS: &[&str] = &[
    "Button Clicked",
    "Signed Up",
    "Product Viewed",
    "Added to Cart",
    "Checkout Started",
    "Order Completed",
];

pub struct Generator {
    rng: StdRng,
    clock_ms: i64,
}

impl Generator {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            clock_ms: 1_714_521_600_000, // 2024-05-01T00:00:00Z
        }
    }

    /// Skewed pick in 0..n: small indices are far more popular (roughly Zipf-like).
    fn skewed(&mut self, n: usize) -> usize {
        let u: f64 = self.rng.random();
        ((u * u * u) * n as f64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.random_range(0..items.len())]
    }

    pub fn event(&mut self, message_id: &str) -> Value {
        self.clock_ms += self.rng.random_range(0..40);
        let timestamp = chrono_like(self.clock_ms);
        let visitor = self.skewed(200_000);
        let section = SECTIONS[self.skewed(SECTIONS.len())];
        let page = self.skewed(5_000);
        let path = format!("/{section}/page-{page}");
        let mut url = format!("https://shop.example.com{path}");
        let campaign = (self.rng.random_range(0..10) == 0).then(|| *self.pick(CAMPAIGNS));
        if let Some((source, medium, name)) = campaign {
            url.push_str(&format!(
                "?utm_source={source}&utm_medium={medium}&utm_campaign={name}"
            ));
        }
        let referrer = *self.pick(REFERRERS);
        let user_agent = USER_AGENTS[self.skewed(USER_AGENTS.len())];
        let context = json!({
            "library": {"name": "analytics.js", "version": "5.2.0"},
            "userAgent": user_agent,
            "locale": "en-US",
            "ip": format!("198.51.{}.{}", visitor % 250, visitor % 199),
            "page": {"path": path, "url": url, "referrer": referrer, "title": format!("{section} {page}")},
        });
        let anonymous_id = format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            visitor,
            visitor % 65536,
            visitor % 4096,
            (visitor * 7) % 4096,
            // 48 bits: twelve hex digits (the product outgrew them above ~106,000 visitors,
            // and 19% of the ids were 37 characters, not UUIDs).
            (visitor as u64 * 2_654_435_761) & 0xffff_ffff_ffff
        );
        let roll = self.rng.random_range(0..100);
        let mut event = if roll < 70 {
            json!({"type": "page", "name": format!("{section} {page}"),
                   "properties": {"path": path, "url": url, "referrer": referrer, "title": format!("{section} {page}")}})
        } else if roll < 97 {
            let name = TRACK_EVENTS[self.skewed(TRACK_EVENTS.len())];
            json!({"type": "track", "event": name,
                   "properties": {"product_id": format!("sku-{}", self.skewed(1_000)), "price": self.rng.random_range(5..500), "currency": "USD"}})
        } else {
            json!({"type": "identify", "userId": format!("user-{visitor}"),
                   "traits": {"email": format!("user{visitor}@example.com"), "plan": if visitor.is_multiple_of(3) { "pro" } else { "free" }}})
        };
        let object = event.as_object_mut().unwrap();
        object.insert("anonymousId".into(), json!(anonymous_id));
        object.insert("messageId".into(), json!(message_id));
        object.insert("timestamp".into(), json!(timestamp));
        object.insert("context".into(), context);
        event
    }
}

/// `2024-05-01T00:00:00.123Z` from epoch milliseconds (no date library needed for UTC).
fn chrono_like(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_ids_are_canonical_uuids() {
        let mut generator = Generator::new(3);
        let mut seen = std::collections::HashSet::new();
        for i in 0..20_000 {
            let event = generator.event(&format!("m-{i}"));
            let id = event["anonymousId"].as_str().unwrap().to_owned();
            let canonical = id.len() == 36
                && id.char_indices().all(|(at, c)| match at {
                    8 | 13 | 18 | 23 => c == '-',
                    _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
                });
            assert!(canonical, "{id}");
            seen.insert(id);
        }
        // Popular visitors repeat, and the long tail reaches the ids that used to overflow.
        assert!(seen.len() > 1_000 && seen.len() < 20_000, "{}", seen.len());
    }

    #[test]
    fn deterministic_and_realistic_size() {
        let a: Vec<_> = (0..200)
            .map(|i| Generator::new(7).event(&i.to_string()))
            .collect();
        let b: Vec<_> = (0..200)
            .map(|i| Generator::new(7).event(&i.to_string()))
            .collect();
        assert_eq!(a, b);
        let mut generator = Generator::new(1);
        let sizes: Vec<usize> = (0..1000)
            .map(|i| {
                serde_json::to_string(&generator.event(&format!("m-{i}")))
                    .unwrap()
                    .len()
            })
            .collect();
        let mean = sizes.iter().sum::<usize>() / sizes.len();
        assert!((450..900).contains(&mean), "mean event size {mean}");
        assert_eq!(chrono_like(1_714_521_600_123), "2024-05-01T00:00:00.123Z");
    }
}
