//! Labels for the items an engine ingests, stored in each item's metadata: semantic ids.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};
use parking_lot::Mutex;

use crate::error::{EngineError, Result};

/// The metadata key labels are stored under.
pub const SEMANTIC_ID: &str = "semantic_id";

/// Gives each of a batch's vectors (`dim` values each, unit length) a label; called before
/// the batch is stored, so a refusal stores nothing.
pub trait Labeler: Send + Sync + std::fmt::Debug {
    /// One label per row of `vectors`.
    ///
    /// # Errors
    /// The vectors do not fit the labeler (another dimension, values it refuses).
    fn label(&self, vectors: &[f32], dim: usize) -> Result<Vec<String>>;
}

/// How a row of codes becomes a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdFormat {
    /// The codes joined by a separator: `3-9-1`.
    Plain(String),
    /// One token per level, for language models: `<a_3><b_9><c_1>`.
    Token,
}

impl IdFormat {
    /// The strings of `codes` (row-major, `levels` per row).
    #[must_use]
    pub fn format(&self, codes: &[u32], levels: usize) -> Vec<String> {
        codes
            .chunks_exact(levels.max(1))
            .map(|row| {
                let mut s = String::with_capacity(row.len() * 5);
                for (l, c) in row.iter().enumerate() {
                    match self {
                        IdFormat::Plain(sep) => {
                            if l > 0 {
                                s.push_str(sep);
                            }
                            let _ = write!(s, "{c}");
                        }
                        IdFormat::Token => {
                            let letter = char::from(b'a' + (l % 26) as u8);
                            let _ = write!(s, "<{letter}_{c}>");
                        }
                    }
                }
                s
            })
            .collect()
    }
}

/// Hands out unique ids: the first `k` stays `k`, later ones become `k-1`, `k-2`, ...
/// skipping any id already handed out (so a suffixed id never collides with another item's
/// code). One store can be shared with Python's `InMemoryCollisionStore`, which reads and
/// writes the same state.
#[derive(Debug, Default)]
pub struct IdStore {
    state: Mutex<IdState>,
}

/// A copy of what an [`IdStore`] knows ([`IdStore::state`], [`IdStore::from_state`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdStoreState {
    /// Each name: its count as a key, and whether it was handed out as an id.
    pub names: Vec<(String, u64, bool)>,
    /// Each owner's id for a key: `(key, owner, id)`.
    pub owned: Vec<(String, String, String)>,
}

/// What the store knows of one string: how often it was counted as a key (its next
/// suffix) and whether it was handed out as an id.
#[derive(Debug, Default)]
struct Name {
    count: u64,
    issued: bool,
}

#[derive(Debug, Default)]
struct IdState {
    /// Keys and ids in one map, so a fresh key costs one entry.
    names: HashMap<Box<str>, Name>,
    issued: usize,
    /// The id an owner holds for a code.
    owned: HashMap<(String, String), String>,
}

impl IdState {
    /// The first of `key`, `key{sep}{n}`, `key{sep}{n + 1}`, ... (from `key`'s counter) not
    /// handed out yet, handed out, with its suffix (0 for `key`); the counter moves past it.
    fn claim_suffixed(&mut self, key: &str, sep: &str) -> (String, u64) {
        let mut n = self.names.get(key).map_or(0, |name| name.count);
        let id = loop {
            let cand: Cow<'_, str> = if n == 0 {
                Cow::Borrowed(key)
            } else {
                Cow::Owned(format!("{key}{sep}{n}"))
            };
            n += 1;
            if self.take(&cand) {
                break cand.into_owned();
            }
        };
        self.names.entry_ref(key).or_default().count = n;
        (id, n - 1)
    }

    /// Hands out `cand` unless it was handed out before.
    fn take(&mut self, cand: &str) -> bool {
        let name = self.names.entry_ref(cand).or_default();
        let free = !std::mem::replace(&mut name.issued, true);
        self.issued += usize::from(free);
        free
    }
}

impl IdStore {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Unique ids for `keys`; `owners` (one per key) name the items they are for: an owner
    /// holding an id for its key gets it back; otherwise it gets `k`, else `k{sep}{owner}`,
    /// else `k{sep}{owner}{sep}1`, ... Without owners, suffixes count per key.
    #[must_use]
    pub fn claim(&self, keys: &[String], sep: &str, owners: Option<&[String]>) -> Vec<String> {
        let mut st = self.state.lock();
        let mut out = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            if let Some(owner) = owners.map(|o| &o[i]) {
                let pair = (key.clone(), owner.clone());
                if let Some(id) = st.owned.get(&pair) {
                    out.push(id.clone());
                    continue;
                }
                let mut n = 0u64;
                let id = loop {
                    let cand: Cow<'_, str> = match n {
                        0 => Cow::Borrowed(key),
                        1 => Cow::Owned(format!("{key}{sep}{owner}")),
                        _ => Cow::Owned(format!("{key}{sep}{owner}{sep}{}", n - 1)),
                    };
                    n += 1;
                    if st.take(&cand) {
                        break cand.into_owned();
                    }
                };
                st.owned.insert(pair, id.clone());
                out.push(id);
                continue;
            }
            out.push(st.claim_suffixed(key, sep).0);
        }
        out
    }

    /// The suffix `claim([key], "-")` gives (0 for `key` itself, `n` for `key-n`), handed out
    /// as that id: counted per key as `claim` counts, and never an id handed out before,
    /// whichever way it was asked for.
    pub fn next_suffix(&self, key: &str) -> u64 {
        self.state.lock().claim_suffixed(key, "-").1
    }

    /// What the store knows, to copy it: each name with its count (how often it was counted
    /// as a key) and whether it was handed out as an id, and each `(key, owner, id)`.
    #[must_use]
    pub fn state(&self) -> IdStoreState {
        let st = self.state.lock();
        IdStoreState {
            names: st
                .names
                .iter()
                .map(|(k, n)| (k.to_string(), n.count, n.issued))
                .collect(),
            owned: st
                .owned
                .iter()
                .map(|((k, o), id)| (k.clone(), o.clone(), id.clone()))
                .collect(),
        }
    }

    /// A store that knows what `state` says (see [`IdStore::state`]).
    ///
    /// # Errors
    /// [`EngineError::Invalid`] for a state no store can be in (a copy from elsewhere, a
    /// pickle): a name listed twice, a count beyond 2^63, an owner's id
    /// that was not handed out or is held by two owners; it could hand out an id twice.
    pub fn from_state(state: IdStoreState) -> Result<Self, EngineError> {
        let bad = |why: String| Err(EngineError::Invalid(format!("an id store's state: {why}")));
        let mut st = IdState::default();
        for (name, count, issued) in state.names {
            // Beyond what any process counts to; near the end, counting on would wrap.
            if count > 1 << 63 {
                return bad(format!("{name:?} has a count of {count}"));
            }
            if st
                .names
                .insert(name.clone().into_boxed_str(), Name { count, issued })
                .is_some()
            {
                return bad(format!("{name:?} is listed twice"));
            }
        }
        st.issued = st.names.values().filter(|n| n.issued).count();
        let mut ids = HashSet::with_capacity(state.owned.len());
        for (key, owner, id) in state.owned {
            if !st.names.get(id.as_str()).is_some_and(|n| n.issued) {
                return bad(format!(
                    "the id {id:?} of ({key:?}, {owner:?}) was not handed out"
                ));
            }
            if !ids.insert(id.clone()) {
                return bad(format!("the id {id:?} has two owners"));
            }
            if st.owned.insert((key, owner), id).is_some() {
                return bad("a (key, owner) pair is listed twice".to_owned());
            }
        }
        Ok(IdStore {
            state: Mutex::new(st),
        })
    }

    /// Ids handed out by [`IdStore::claim`].
    #[must_use]
    pub fn len(&self) -> usize {
        self.state.lock().issued
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Semantic ids from RQ-KMeans codebooks, computed where the batch is: encode, format, and
/// (with a store) make unique, with no round trip through another language.
#[cfg(feature = "rq")]
#[derive(Debug)]
pub struct RqLabeler {
    model: Arc<imesde_rq::RqKMeans>,
    format: IdFormat,
    beam: usize,
    unique: Option<(Arc<IdStore>, String)>,
}

#[cfg(feature = "rq")]
impl RqLabeler {
    /// Labels from `model`'s greedy codes (`beam` 1) or beam search, written with `format`;
    /// with `unique`, made unique through the store (its `sep` for suffixes).
    #[must_use]
    pub fn new(
        model: Arc<imesde_rq::RqKMeans>,
        format: IdFormat,
        beam: usize,
        unique: Option<(Arc<IdStore>, String)>,
    ) -> Self {
        RqLabeler {
            model,
            format,
            beam: beam.max(1),
            unique,
        }
    }
}

#[cfg(feature = "rq")]
impl Labeler for RqLabeler {
    fn label(&self, vectors: &[f32], dim: usize) -> Result<Vec<String>> {
        if dim != self.model.dim() {
            return Err(imesde_rq::RqError::Dimension {
                expected: self.model.dim(),
                got: dim,
            }
            .into());
        }
        let codes = self.model.encode(vectors, self.beam)?;
        let ids = self.format.format(&codes, self.model.levels().len());
        Ok(match &self.unique {
            Some((store, sep)) => store.claim(&ids, sep, None),
            None => ids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_unique_ids() {
        let codes = [3, 9, 1, 12, 0, 7];
        assert_eq!(
            IdFormat::Plain("-".into()).format(&codes, 3),
            ["3-9-1", "12-0-7"]
        );
        assert_eq!(
            IdFormat::Token.format(&codes, 3),
            ["<a_3><b_9><c_1>", "<a_12><b_0><c_7>"]
        );
        let store = IdStore::new();
        let k = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            store.claim(&k(&["1-2", "1-2"]), "-", None),
            ["1-2", "1-2-1"]
        );
        // Item 1's suffixed id is taken: it gets one of its own, and the same one again.
        let mine = store.claim(&k(&["1-2"]), "-", Some(&k(&["1"])));
        assert_eq!(mine, ["1-2-1-1"]);
        assert_eq!(store.claim(&k(&["1-2"]), "-", Some(&k(&["1"]))), mine);
        // A code that looks like a suffixed id gets a fresh suffix.
        assert_eq!(store.claim(&k(&["1-2-1"]), "-", None), ["1-2-1-2"]);
        assert_eq!(store.len(), 4);
        assert_eq!(store.next_suffix("x"), 0);
        assert_eq!(store.next_suffix("x"), 1);
    }
}
