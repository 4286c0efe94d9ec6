//! Credentials: write keys (each names a source), read tokens (SQL) and admin tokens (table
//! upkeep and erasure).
//!
//! Flags win; otherwise `keys.json` in the data folder; otherwise a write key for source
//! `default` and a read token are generated, saved there (mode 0600) and printed once.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use rand::Rng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use logektor_query::Scope;

use crate::config::{ScopedReadTokenArg, WriteKeyArg};
use crate::layout;

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeysFile {
    /// source → write key
    write_keys: BTreeMap<String, String>,
    read_tokens: Vec<String>,
    /// Files written before admin tokens existed have none; one is created on the next start.
    #[serde(default)]
    admin_tokens: Vec<String>,
}

/// The credentials in force.
#[derive(Clone)]
pub struct Keys {
    /// (key, source)
    write: Vec<(String, String)>,
    read: Vec<String>,
    /// Read tokens that see only some sources' rows: (token, scope).
    scoped: Vec<(String, Scope)>,
    admin: Vec<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets, not even in debug output.
        f.debug_struct("Keys")
            .field(
                "sources",
                &self.write.iter().map(|(_, s)| s).collect::<Vec<_>>(),
            )
            .field("read_tokens", &self.read.len())
            .field(
                "scoped_read_tokens",
                &self
                    .scoped
                    .iter()
                    .map(|(_, scope)| scope)
                    .collect::<Vec<_>>(),
            )
            .field("admin_tokens", &self.admin.len())
            .finish()
    }
}

fn random_secret(prefix: &str) -> String {
    let bytes: [u8; 24] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}_{hex}")
}

impl Keys {
    pub fn new(write: Vec<WriteKeyArg>, read: Vec<String>, admin: Vec<String>) -> Self {
        Self {
            write: write.into_iter().map(|w| (w.key, w.source)).collect(),
            read,
            scoped: Vec::new(),
            admin,
        }
    }

    /// Adds read tokens scoped to sources (`--scoped-read-token`). A scoped token that is
    /// also another credential is refused: which of its powers would win is not obvious.
    pub fn with_scoped_read_tokens(
        mut self,
        scoped: Vec<ScopedReadTokenArg>,
    ) -> anyhow::Result<Self> {
        for arg in scoped {
            let taken = self.read.contains(&arg.token)
                || self.admin.contains(&arg.token)
                || self.write.iter().any(|(key, _)| *key == arg.token)
                || self.scoped.iter().any(|(token, _)| *token == arg.token);
            anyhow::ensure!(
                !taken,
                "a --scoped-read-token (for {}) is also another key or token; use distinct secrets",
                arg.sources.join("+")
            );
            self.scoped
                .push((arg.token, Scope::Sources(arg.sources.into())));
        }
        Ok(self)
    }

    /// Resolves the credentials for a server using `data_dir`, creating them if needed.
    pub fn load_or_create(
        data_dir: &Path,
        write: Vec<WriteKeyArg>,
        read: Vec<String>,
        admin: Vec<String>,
    ) -> anyhow::Result<Self> {
        let path = layout::keys_file(data_dir);
        let mut file: KeysFile = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display()))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => KeysFile::default(),
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        let mut created = Vec::new();
        if write.is_empty() && file.write_keys.is_empty() {
            let key = random_secret("wk");
            created.push(format!("write key for source \"default\": {key}"));
            file.write_keys.insert("default".into(), key);
        }
        if read.is_empty() && file.read_tokens.is_empty() {
            let token = random_secret("rt");
            created.push(format!("read token: {token}"));
            file.read_tokens.push(token);
        }
        if admin.is_empty() && file.admin_tokens.is_empty() {
            let token = random_secret("at");
            created.push(format!("admin token: {token}"));
            file.admin_tokens.push(token);
        }
        if !created.is_empty() {
            write_private(&path, &serde_json::to_vec_pretty(&file)?)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("Created credentials (kept in {}):", path.display());
            for line in created {
                println!("  {line}");
            }
        }
        let write = if write.is_empty() {
            file.write_keys
                .into_iter()
                .map(|(source, key)| WriteKeyArg { source, key })
                .collect()
        } else {
            write
        };
        let read = if read.is_empty() {
            file.read_tokens
        } else {
            read
        };
        let admin = if admin.is_empty() {
            file.admin_tokens
        } else {
            admin
        };
        Ok(Self::new(write, read, admin))
    }

    /// The source a write key belongs to. Compares against every key in constant time.
    pub fn source_for(&self, presented: &str) -> Option<&str> {
        let presented = digest(presented);
        let mut found = None;
        for (key, source) in &self.write {
            if same(key, &presented) {
                found = Some(source.as_str());
            }
        }
        found
    }

    /// What `presented` may read: everything (a read token), some sources (a scoped read
    /// token), or `None` (not a read token). Compares against every token in constant time.
    pub fn read_scope(&self, presented: &str) -> Option<Scope> {
        let mut found = contains_constant_time(&self.read, presented).then_some(Scope::All);
        let presented = digest(presented);
        for (token, scope) in &self.scoped {
            if same(token, &presented) && found.is_none() {
                found = Some(scope.clone());
            }
        }
        found
    }

    /// Whether `presented` is a valid read token, scoped or not (constant-time).
    pub fn is_read_token(&self, presented: &str) -> bool {
        self.read_scope(presented).is_some()
    }

    /// Whether `presented` is a valid admin token (constant-time).
    pub fn is_admin_token(&self, presented: &str) -> bool {
        contains_constant_time(&self.admin, presented)
    }

    pub fn sources(&self) -> impl Iterator<Item = &str> {
        self.write.iter().map(|(_, source)| source.as_str())
    }
}

/// Compares against every token, so the time taken does not tell which one nearly matched.
fn contains_constant_time(tokens: &[String], presented: &str) -> bool {
    let presented = digest(presented);
    tokens
        .iter()
        .fold(false, |ok, token| ok | same(token, &presented))
}

/// Secrets are compared as fixed-size digests: comparing the strings themselves in constant
/// time still tells their length (`ct_eq` returns early on a length mismatch).
fn digest(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

fn same(secret: &str, presented: &[u8; 32]) -> bool {
    bool::from(digest(secret).ct_eq(presented))
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// This node's stable id (names it in the table's application transactions).
pub fn node_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = layout::node_id_file(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        Ok(_) => anyhow::bail!("{} is empty", path.display()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().to_string();
            write_private(&path, id.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// The app id of this node's writer in Delta application transactions.
pub fn app_id(node_id: &str) -> String {
    format!("logektor-ingest-{node_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded() {
        let dir = tempfile_dir();
        let first = Keys::load_or_create(&dir, vec![], vec![], vec![]).unwrap();
        let second = Keys::load_or_create(&dir, vec![], vec![], vec![]).unwrap();
        assert_eq!(first.write, second.write);
        assert_eq!(first.read, second.read);
        let (key, source) = &first.write[0];
        assert_eq!(source, "default");
        assert_eq!(first.source_for(key), Some("default"));
        assert_eq!(first.source_for("nope"), None);
        assert!(first.is_read_token(&first.read[0]));
        assert!(!first.is_read_token(""));
        assert_eq!(first.admin, second.admin);
        assert!(first.is_admin_token(&first.admin[0]));
        assert!(!first.is_admin_token(&first.read[0]));
        assert!(!first.is_read_token(&first.admin[0]));
        assert!(!format!("{first:?}").contains(key.as_str()));
        let scoped = first
            .clone()
            .with_scoped_read_tokens(vec![ScopedReadTokenArg {
                sources: vec!["web".into(), "app".into()],
                token: "rt-scoped".into(),
            }])
            .unwrap();
        // A scoped token that is also a full read token is refused.
        assert!(
            first
                .clone()
                .with_scoped_read_tokens(vec![ScopedReadTokenArg {
                    sources: vec!["web".into()],
                    token: first.read[0].clone(),
                }])
                .is_err()
        );
        assert_eq!(
            scoped.read_scope("rt-scoped"),
            Some(Scope::Sources(
                vec!["web".to_owned(), "app".to_owned()].into()
            ))
        );
        assert_eq!(scoped.read_scope(&first.read[0]), Some(Scope::All));
        assert_eq!(scoped.read_scope("rt-scope"), None);
        assert!(!format!("{scoped:?}").contains("rt-scoped"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("logektor-keys-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
