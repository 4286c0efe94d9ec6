//! Per-source privacy and browser settings, client IP resolution, and cookieless visitor ids.
//!
//! - **IP policy** (`--ip-policy [SOURCE=]keep|truncate|drop`): what is stored of the client's
//!   address, for the socket's address and for any address the events carry.
//! - **Cookieless ids** (`--cookieless SOURCE`): events with neither a user id nor an anonymous id
//!   get `anonymous_id = ck_` + a keyed hash (BLAKE3) of a daily salt, the client IP, the user
//!   agent and the source, as Plausible counts visitors. The salt is random, changes each UTC day
//!   and is kept in the data folder (so a restart does not split visitors); yesterday's salt is
//!   overwritten, so no id can be recomputed once its day is over.
//! - **Do-Not-Track** (`--respect-dnt SOURCE`): requests with `DNT: 1` or `Sec-GPC: 1` are
//!   answered as usual but nothing is stored.
//! - **Allowed origins** (`--allowed-origin SOURCE=ORIGIN`): a browser request whose `Origin` is
//!   not listed for its source gets a 403.
//! - **Trusted proxies** (`--trusted-proxy CIDR`): when the connection comes from one, the client
//!   IP is the right-most address in `X-Forwarded-For` that is not itself a trusted proxy.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;

use axum::http::HeaderMap;
use ipnet::IpNet;
use logektor_event::IpPolicy;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// What one source asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourcePolicy {
    pub ip_policy: IpPolicy,
    pub cookieless: bool,
    pub respect_dnt: bool,
    /// `None`: any origin.
    pub allowed_origins: Option<Vec<String>>,
}

/// Settings of every source; `*` entries apply to sources without their own.
#[derive(Debug, Clone, Default)]
pub struct SourcePolicies {
    default: SourcePolicy,
    per_source: HashMap<String, SourcePolicy>,
    trusted_proxies: Vec<IpNet>,
}

/// `SOURCE=VALUE` or `VALUE` (every source).
fn split_source(text: &str) -> (Option<&str>, &str) {
    match text.split_once('=') {
        Some((source, value)) if !source.is_empty() && source != "*" => (Some(source), value),
        Some((_, value)) => (None, value),
        None => (None, text),
    }
}

impl SourcePolicies {
    /// Builds the policies from the flags' raw values; errors name the bad value.
    pub fn from_args(
        ip_policies: &[String],
        cookieless: &[String],
        respect_dnt: &[String],
        allowed_origins: &[String],
        trusted_proxies: &[String],
    ) -> Result<Self, String> {
        let mut policies = Self::default();
        // Settings for every source first, so a source's own entry starts from them whatever
        // the order of the flags.
        for for_one_source in [false, true] {
            let applies = |source: Option<&str>| source.is_some() == for_one_source;
            for text in ip_policies {
                let (source, value) = split_source(text);
                let policy: IpPolicy = value.parse()?;
                if applies(source) {
                    policies.entry(source).ip_policy = policy;
                }
            }
            for source in cookieless {
                let source = Some(source.as_str()).filter(|s| *s != "*");
                if applies(source) {
                    policies.entry(source).cookieless = true;
                }
            }
            for source in respect_dnt {
                let source = Some(source.as_str()).filter(|s| *s != "*");
                if applies(source) {
                    policies.entry(source).respect_dnt = true;
                }
            }
            for text in allowed_origins {
                let (source, origin) = split_source(text);
                if origin.is_empty() {
                    return Err(format!("expected [SOURCE=]ORIGIN, got {text:?}"));
                }
                if applies(source) {
                    policies
                        .entry(source)
                        .allowed_origins
                        .get_or_insert_with(Vec::new)
                        .push(origin.trim_end_matches('/').to_owned());
                }
            }
        }
        for text in trusted_proxies {
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("expected an IP address or CIDR range, got {text:?}"))?;
            policies.trusted_proxies.push(net);
        }
        Ok(policies)
    }

    fn entry(&mut self, source: Option<&str>) -> &mut SourcePolicy {
        match source {
            None => &mut self.default,
            Some(source) => self
                .per_source
                .entry(source.to_owned())
                .or_insert_with(|| self.default.clone()),
        }
    }

    /// The policy of `source`.
    pub fn policy(&self, source: &str) -> &SourcePolicy {
        self.per_source.get(source).unwrap_or(&self.default)
    }

    /// The client's address: the peer, or when the peer is a trusted proxy, the right-most
    /// untrusted address of `X-Forwarded-For`.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer_ip = peer.ip().to_canonical();
        if !self.is_trusted(peer_ip) {
            return peer_ip;
        }
        let mut client = peer_ip;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.into_iter().rev() {
            let Ok(ip) = hop.parse::<IpAddr>() else {
                // A malformed entry ends the chain we can trust.
                break;
            };
            client = ip.to_canonical();
            if !self.is_trusted(client) {
                break;
            }
        }
        client
    }

    /// Whether `ip` is one of the `--trusted-proxy` ranges.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.is_trusted(ip.to_canonical())
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

#[derive(Serialize, Deserialize)]
struct SaltFile {
    /// Days since the epoch (UTC).
    day: i64,
    salt: String,
}

/// The daily salt of cookieless visitor ids.
pub struct Salts {
    path: PathBuf,
    current: Mutex<Option<(i64, [u8; 32])>>,
}

impl Salts {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            current: Mutex::new(None),
        }
    }

    /// `ck_` + 16 hex digits: a keyed hash of today's salt, IP, user agent and source.
    pub fn visitor_id(
        &self,
        now_micros: i64,
        source: &str,
        ip: IpAddr,
        user_agent: &str,
    ) -> String {
        let day = now_micros.div_euclid(86_400_000_000);
        let salt = self.salt_for(day);
        let mut hasher = blake3::Hasher::new_keyed(&salt);
        hasher.update(source.as_bytes());
        hasher.update(&[0]);
        hasher.update(ip.to_string().as_bytes());
        hasher.update(&[0]);
        hasher.update(user_agent.as_bytes());
        let hash = hasher.finalize();
        let hex: String = hash.as_bytes()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("ck_{hex}")
    }

    fn salt_for(&self, day: i64) -> [u8; 32] {
        let mut current = self.current.lock().expect("salt lock");
        if let Some((known_day, salt)) = *current
            && known_day == day
        {
            return salt;
        }
        let stored = std::fs::read(&self.path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<SaltFile>(&bytes).ok())
            .filter(|file| file.day == day)
            .and_then(|file| decode_hex(&file.salt));
        let salt = stored.unwrap_or_else(|| {
            let salt: [u8; 32] = rand::rng().random();
            let file = SaltFile {
                day,
                salt: salt.iter().map(|b| format!("{b:02x}")).collect(),
            };
            // Written beside and renamed over, so a crash never leaves a torn salt file.
            let temporary = self.path.with_extension("json.tmp");
            let written = crate::keys::write_private(
                &temporary,
                &serde_json::to_vec(&file).expect("salt file serializes"),
            )
            .and_then(|()| std::fs::rename(&temporary, &self.path));
            if let Err(err) = written {
                // Ids stay consistent within this process; only a restart today would split them.
                tracing::warn!(error = %err, path = %self.path.display(), "could not save the daily salt");
            }
            salt
        });
        *current = Some((day, salt));
        salt
    }
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_per_source_with_defaults() {
        let policies = SourcePolicies::from_args(
            &["truncate".into(), "app=drop".into()],
            &["web".into()],
            &["*".into()],
            &["web=https://shop.example/".into()],
            &["10.0.0.0/8".into(), "192.0.2.1".into()],
        )
        .unwrap();
        let web = policies.policy("web");
        assert_eq!(web.ip_policy, IpPolicy::Truncate);
        assert!(web.cookieless && web.respect_dnt);
        assert_eq!(
            web.allowed_origins.as_deref(),
            Some(&["https://shop.example".to_owned()][..])
        );
        assert_eq!(policies.policy("app").ip_policy, IpPolicy::Drop);
        assert!(!policies.policy("other").cookieless);
        assert!(SourcePolicies::from_args(&["web=hide".into()], &[], &[], &[], &[]).is_err());
        assert!(SourcePolicies::from_args(&[], &[], &[], &[], &["nope".into()]).is_err());
    }

    #[test]
    fn client_ip_follows_trusted_proxies_only() {
        let policies =
            SourcePolicies::from_args(&[], &[], &[], &[], &["10.0.0.0/8".into()]).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "198.51.100.1, 203.0.113.5, 10.1.1.1".parse().unwrap(),
        );
        let proxy: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let stranger: SocketAddr = "192.0.2.9:5000".parse().unwrap();
        assert_eq!(
            policies.client_ip(proxy, &headers),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        // A client that is not a trusted proxy cannot choose its address with the header.
        assert_eq!(
            policies.client_ip(stranger, &headers),
            "192.0.2.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn visitor_ids_are_stable_within_a_day_and_change_across_days() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("salt.json");
        let ip: IpAddr = "203.0.113.5".parse().unwrap();
        let day = 86_400_000_000i64;
        let salts = Salts::new(path.clone());
        let a = salts.visitor_id(day * 100 + 5, "web", ip, "UA");
        assert!(a.starts_with("ck_") && a.len() == 19, "{a}");
        assert_eq!(a, salts.visitor_id(day * 100 + 999, "web", ip, "UA"));
        assert_ne!(a, salts.visitor_id(day * 100 + 5, "web", ip, "UA2"));
        assert_ne!(a, salts.visitor_id(day * 100 + 5, "app", ip, "UA"));
        // A restart the same day reads the saved salt.
        assert_eq!(
            a,
            Salts::new(path.clone()).visitor_id(day * 100 + 7, "web", ip, "UA")
        );
        assert_ne!(a, salts.visitor_id(day * 101, "web", ip, "UA"));
    }
}
