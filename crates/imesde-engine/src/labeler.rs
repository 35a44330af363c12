//! Labels for the items an engine ingests, stored in each item's metadata: semantic ids.

use std::borrow::Cow;
use std::fmt::Write as _;
#[cfg(feature = "rq")]
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
///
/// A key's suffixed ids are kept as a run (`k-1` .. `k-n` taken: one number), so a stream
/// whose codes repeat costs memory per distinct code, not per id; an id outside a run (an
/// owner's, or one whose key is counted with changing separators) costs an entry.
#[derive(Debug, Default)]
pub struct IdStore {
    state: Mutex<IdState>,
}

/// A copy of what an [`IdStore`] knows ([`IdStore::state`], [`IdStore::from_state`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdStoreState {
    /// Each name: its count as a key, and whether it was handed out as an id (ids in a run
    /// are not listed).
    pub names: Vec<(String, u64, bool)>,
    /// Each owner's id for a key: `(key, owner, id)`.
    pub owned: Vec<(String, String, String)>,
    /// Each run: `(key, sep, n)`, `key{sep}1` .. `key{sep}{n}` handed out.
    pub runs: Vec<(String, String, u64)>,
}

/// At most this many separators have runs; ids suffixed with others get entries.
const MAX_RUN_SEPS: usize = 8;

/// What the store knows of one string: how often it was counted as a key (its next
/// suffix), whether it was handed out as an id, and its run (`run` suffixed ids with
/// `seps[sep]`, 0 for none).
#[derive(Debug, Default)]
struct Name {
    count: u64,
    issued: bool,
    run: u64,
    sep: u8,
}

#[derive(Debug, Default)]
struct IdState {
    /// Keys and ids in one map, so a fresh key costs one entry.
    names: HashMap<Box<str>, Name>,
    /// The separators runs use.
    seps: Vec<Box<str>>,
    issued: u64,
    /// The id an owner holds for a code.
    owned: HashMap<(String, String), String>,
}

impl IdState {
    /// The first of `key`, `key{sep}{n}`, `key{sep}{n + 1}`, ... (from `key`'s counter) not
    /// handed out yet, handed out, with its suffix (0 for `key`); the counter moves past it.
    fn claim_suffixed(&mut self, key: &str, sep: &str) -> (String, u64) {
        let mut n = self.names.get(key).map_or(0, |name| name.count);
        let sep_ix = self.sep_index(sep);
        loop {
            let cand: Cow<'_, str> = if n == 0 {
                Cow::Borrowed(key)
            } else {
                Cow::Owned(format!("{key}{sep}{n}"))
            };
            let free = !self.is_issued(&cand);
            // The run may cover `cand` whether it is handed out now or was before, unless
            // another key's run covers it (two runs over one id would count it twice).
            let in_run =
                n > 0 && (free || !self.in_run(&cand)) && self.extend_run(key, sep_ix, n, &cand);
            if free {
                if !in_run {
                    self.names.entry_ref(&*cand).or_default().issued = true;
                }
                self.issued += 1;
                self.names.entry_ref(key).or_default().count = n + 1;
                return (cand.into_owned(), n);
            }
            n += 1;
        }
    }

    /// Hands out `cand` unless it was handed out before.
    fn take(&mut self, cand: &str) -> bool {
        if self.is_issued(cand) {
            return false;
        }
        self.names.entry_ref(cand).or_default().issued = true;
        self.issued += 1;
        true
    }

    fn is_issued(&self, cand: &str) -> bool {
        self.names.get(cand).is_some_and(|n| n.issued) || self.in_run(cand)
    }

    /// Whether `cand` is `key{sep}{n}` for a key whose run covers `n`.
    fn in_run(&self, cand: &str) -> bool {
        if self.seps.is_empty() {
            return false;
        }
        let digits = cand.len() - cand.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        // A u64 has at most 20 digits.
        let first = cand.len() - digits.min(20);
        (first..cand.len()).any(|i| {
            let Some(n) = cand[i..]
                .parse::<u64>()
                .ok()
                .filter(|_| !cand[i..].starts_with('0'))
            else {
                return false;
            };
            self.seps.iter().enumerate().any(|(s, sep)| {
                cand[..i].strip_suffix(&**sep).is_some_and(|key| {
                    self.names
                        .get(key)
                        .is_some_and(|k| usize::from(k.sep) == s && (1..=k.run).contains(&n))
                })
            })
        })
    }

    /// The index of `sep` among the separators of runs, added if there is room.
    fn sep_index(&mut self, sep: &str) -> Option<u8> {
        let at = match self.seps.iter().position(|s| &**s == sep) {
            Some(at) => at,
            None if self.seps.len() < MAX_RUN_SEPS => {
                self.seps.push(sep.into());
                self.seps.len() - 1
            }
            None => return None,
        };
        u8::try_from(at).ok()
    }

    /// Extends `key`'s run with separator `sep` over suffix `n` (`cand`) when it ends at
    /// `n - 1`; an entry `cand` had as an id goes. Whether the run covers `cand` now.
    fn extend_run(&mut self, key: &str, sep: Option<u8>, n: u64, cand: &str) -> bool {
        let Some(sep) = sep else { return false };
        // A key seen first here (one inside another key's run) starts its own run.
        let name = self.names.entry_ref(key).or_default();
        if name.run + 1 != n || (name.run > 0 && name.sep != sep) {
            return false;
        }
        name.run = n;
        name.sep = sep;
        if let Some(entry) = self.names.get_mut(cand)
            && entry.issued
        {
            if entry.count == 0 {
                self.names.remove(cand);
            } else {
                entry.issued = false;
            }
        }
        true
    }
}

impl IdStore {
    /// A store that has handed out no id.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Unique ids for `keys`; `owners` (one per key) name the items they are for: an owner
    /// holding an id for its key gets it back; otherwise it gets `k`, else `k{sep}{owner}`,
    /// else `k{sep}{owner}{sep}1`, ... Without owners, suffixes count per key.
    ///
    /// # Panics
    /// `owners` given with another length than `keys`.
    #[must_use]
    pub fn claim(&self, keys: &[String], sep: &str, owners: Option<&[String]>) -> Vec<String> {
        if let Some(owners) = owners {
            assert_eq!(
                owners.len(),
                keys.len(),
                "IdStore::claim: one owner per key"
            );
        }
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
    /// as a key) and whether it was handed out as an id, each `(key, owner, id)`, and each
    /// key's run of suffixed ids.
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
            runs: st
                .names
                .iter()
                .filter(|(_, n)| n.run > 0)
                .map(|(k, n)| {
                    (
                        k.to_string(),
                        st.seps[usize::from(n.sep)].to_string(),
                        n.run,
                    )
                })
                .collect(),
        }
    }

    /// A store that knows what `state` says (see [`IdStore::state`]).
    ///
    /// # Errors
    /// [`EngineError::Invalid`] for a state no store can be in (a copy from elsewhere, a
    /// pickle): a name listed twice or both listed and in a run, a count beyond 2^63, a run
    /// past its key's count, an owner's id that was not handed out or is held by two owners;
    /// it could hand out an id twice.
    pub fn from_state(state: IdStoreState) -> Result<Self, EngineError> {
        let bad = |why: String| Err(EngineError::Invalid(format!("an id store's state: {why}")));
        let mut st = IdState::default();
        for (name, count, issued) in state.names {
            // Beyond what any process counts to; near the end, counting on would wrap.
            if count > 1 << 63 {
                return bad(format!("{name:?} has a count of {count}"));
            }
            let entry = Name {
                count,
                issued,
                ..Name::default()
            };
            if st
                .names
                .insert(name.clone().into_boxed_str(), entry)
                .is_some()
            {
                return bad(format!("{name:?} is listed twice"));
            }
        }
        for (key, sep, run) in state.runs {
            let Some(ix) = st.sep_index(&sep) else {
                return bad(format!("runs with more than {MAX_RUN_SEPS} separators"));
            };
            match st.names.get_mut(key.as_str()) {
                Some(name) if name.run == 0 && run < name.count => {
                    name.run = run;
                    name.sep = ix;
                }
                _ => return bad(format!("the run of {run} ids of {key:?} past its count")),
            }
        }
        if let Some(name) = st.names.iter().find(|(k, n)| n.issued && st.in_run(k)) {
            return bad(format!("{:?} is listed and in a run", name.0));
        }
        st.issued = st.names.values().map(|n| u64::from(n.issued) + n.run).sum();
        let mut ids = HashSet::with_capacity(state.owned.len());
        for (key, owner, id) in state.owned {
            if !st.is_issued(&id) {
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
        usize::try_from(self.state.lock().issued).unwrap_or(usize::MAX)
    }

    /// Whether it has handed out no id.
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

    /// The store as it was before runs: every id an entry of a set.
    #[derive(Default)]
    struct Plain {
        counts: HashMap<String, u64>,
        issued: HashSet<String>,
        owned: HashMap<(String, String), String>,
    }

    impl Plain {
        fn claim(&mut self, key: &str, sep: &str, owner: Option<&str>) -> String {
            if let Some(owner) = owner {
                let pair = (key.to_owned(), owner.to_owned());
                if let Some(id) = self.owned.get(&pair) {
                    return id.clone();
                }
                let mut n = 0_u64;
                let id = loop {
                    let cand = match n {
                        0 => key.to_owned(),
                        1 => format!("{key}{sep}{owner}"),
                        _ => format!("{key}{sep}{owner}{sep}{}", n - 1),
                    };
                    n += 1;
                    if self.issued.insert(cand.clone()) {
                        break cand;
                    }
                };
                self.owned.insert(pair, id.clone());
                return id;
            }
            let n = self.counts.entry(key.to_owned()).or_default();
            loop {
                let cand = if *n == 0 {
                    key.to_owned()
                } else {
                    format!("{key}{sep}{n}")
                };
                *n += 1;
                if self.issued.insert(cand.clone()) {
                    return cand;
                }
            }
        }
    }

    #[test]
    fn runs_hand_out_what_one_entry_per_id_did() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        // Keys that are other keys' suffixed ids, separators that change, owners.
        let keys = [
            "1-2", "1-2-1", "1-2-2", "1", "1-1", "a", "a1", "a_1", "1-2-1-1", "10",
        ];
        let seps = ["-", "-", "-", "_", ""];
        let mut plain = Plain::default();
        let mut store = IdStore::new();
        for step in 0..20_000 {
            let key = keys[rand(keys.len() as u64) as usize];
            let sep = seps[rand(seps.len() as u64) as usize];
            let owner = (rand(6) == 0).then(|| rand(4).to_string());
            let want = plain.claim(key, sep, owner.as_deref());
            let owners = owner.map(|o| vec![o]);
            let got = store.claim(&[key.to_owned()], sep, owners.as_deref());
            assert_eq!(got, [want], "step {step}");
            assert_eq!(store.len(), plain.issued.len());
            if step % 2_000 == 999 {
                store = IdStore::from_state(store.state()).unwrap();
            }
        }
        // One separator per key, keys inside other keys' runs, runs that meet ("1-1" with
        // sep "" and "1" with sep "-" both reach "1-11"): the same ids, and the same count
        // after a copy of the state.
        let mut plain = Plain::default();
        let store = IdStore::new();
        let fixed = [
            ("1", "-"),
            ("1-1", ""),
            ("1-2", "-"),
            ("1-2-1", "-"),
            ("a", "_"),
            ("a_1", "_"),
        ];
        for step in 0..5_000 {
            let (key, sep) = fixed[rand(fixed.len() as u64) as usize];
            let want = plain.claim(key, sep, None);
            assert_eq!(
                store.claim(&[key.to_owned()], sep, None),
                [want],
                "step {step}"
            );
        }
        assert_eq!(store.len(), plain.issued.len());
        let copy = IdStore::from_state(store.state()).unwrap();
        assert_eq!(copy.len(), plain.issued.len());
        // A key inside another's run keeps a run of its own: entries per key, not per id.
        // A key inside another's run ("1-2-1" in "1-2"'s) keeps a run of its own: entries
        // per key, not per id (runs that meet fall back to entries, as above).
        let store = IdStore::new();
        for _ in 0..500 {
            for key in ["1-2", "1-2-1", "1-2-1-1", "a"] {
                let _ = store.claim(&[key.to_owned()], "-", None);
            }
        }
        assert_eq!(store.len(), 2_000);
        assert!(store.state.lock().names.len() <= 8);
        // One separator: memory per key, whatever the number of ids.
        let store = IdStore::new();
        for _ in 0..1_000 {
            let _ = store.claim(&["7-3".to_owned(), "7-4".to_owned()], "-", None);
        }
        assert_eq!(store.len(), 2_000);
        assert_eq!(store.state.lock().names.len(), 2);
        assert_eq!(
            store.claim(&["7-3-999".to_owned()], "-", None),
            ["7-3-999-1"]
        );
        // A run past its key's count, or a listed id inside a run, is refused.
        let mut state = IdStore::from_state(store.state()).unwrap().state();
        state.runs[0].2 = 5_000;
        assert!(IdStore::from_state(state).is_err());
        let mut state = store.state();
        state.names.push(("7-3-5".to_owned(), 0, true));
        assert!(IdStore::from_state(state).is_err());
    }
}
