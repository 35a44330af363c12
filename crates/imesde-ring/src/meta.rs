//! Typed metadata and the filter language over it.
//!
//! An item's metadata maps keys to [`Value`]s: a string, an integer, a float, a boolean, or a
//! list of those (tags). A [`Predicate`] is compiled once from a chroma / qdrant style `where`
//! document ([`Predicate::parse`]) and evaluated per candidate during the shard scan.
//!
//! Meaning, for an item value `x` under the operator's key:
//! - `$eq v`: `x == v`; numbers compare by value (`1 == 1.0`), a bool only equals a bool.
//! - `$gt $gte $lt $lte v`: `v` a number or a string; numbers against numbers, strings against
//!   strings (by code point); an item value of another kind does not match.
//! - `$in [v...]`: `x` equals one of them.
//! - `$ne v`, `$nin [...]`: the negation of `$eq`, `$in`: an item without the key matches.
//! - `$exists true` / `$exists false` (or 1 / 0): the item has the key (whatever its value), or
//!   has not.
//! - `{"$contains": s}` / `{"$not_contains": s}` (keys of a document, `s` not empty; or
//!   chromadb's `{"#document": {"$contains": s}}`): the item's text contains `s`
//!   (case-sensitive), or does not, as chromadb's `where_document`.
//! - `{"key": {"$contains": v}}` / `$not_contains` (a field's operators, as chromadb's on
//!   arrays): the list under `key` holds `v` (a scalar value: equals it); `$eq` / `$ne`.
//! - A list value matches `$eq`, `$in` and the comparisons when one of its elements does.
//! - `$and [p...]`, `$or [p...]`, `$not p`; several keys in one document are all required.
//! - An item without the key matches no positive operator.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use serde_json::Value as Json;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Str(Box<str>),
    /// A signed 64-bit integer.
    Int(i64),
    /// A finite float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A list of scalars (no nested lists).
    List(Box<[Value]>),
}

impl Value {
    /// Whether a snapshot can hold it (what the Python binding and JSON let in): a finite
    /// float, a list of scalars. `Err` says what is wrong.
    fn check(&self, list_ok: bool) -> Result<(), &'static str> {
        match self {
            Value::Float(f) if !f.is_finite() => Err("is not a finite number"),
            Value::List(_) if !list_ok => Err("is a list inside a list"),
            Value::List(xs) => xs.iter().try_for_each(|x| x.check(false)),
            _ => Ok(()),
        }
    }
}

/// [`Value::check`] of the value under `key`, the error naming the key.
fn check_pair((key, value): (&str, &Value)) -> Result<(), String> {
    value.check(true).map_err(|why| format!("{key:?} {why}"))
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.into())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s.into())
    }
}
impl From<Box<str>> for Value {
    fn from(s: Box<str>) -> Self {
        Value::Str(s)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Value::List(v.into())
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v:?}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::List(v) => {
                f.write_str("[")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
        }
    }
}

impl Value {
    /// The value as a string, if it is one.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// How `self` orders against `other` when they are comparable: numbers with numbers (an
    /// integer and a float by exact value), strings with strings, bools with bools.
    fn order(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Str(a), Value::Str(b)) => Some(a.as_ref().cmp(b.as_ref())),
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Float(a), Value::Float(b)) => a.partial_cmp(b),
            (Value::Int(a), Value::Float(b)) => int_float(*a, *b),
            (Value::Float(a), Value::Int(b)) => int_float(*b, *a).map(Ordering::reverse),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// Whether the item value `self` (or one of its elements) satisfies `test`.
    #[inline]
    fn any(&self, test: impl Fn(&Value) -> bool) -> bool {
        match self {
            Value::List(xs) => xs.iter().any(test),
            x => test(x),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Value::Str(s) => s.len(),
            Value::List(xs) => xs.iter().map(|x| x.heap_bytes() + 24).sum(),
            _ => 0,
        }
    }
}

/// `a` (an integer) against `b` (a float), exactly.
fn int_float(a: i64, b: f64) -> Option<Ordering> {
    if b.is_nan() {
        return None;
    }
    // i64 range as floats: [-2^63, 2^63).
    if b >= 9_223_372_036_854_775_808.0 {
        return Some(Ordering::Less);
    }
    if b < -9_223_372_036_854_775_808.0 {
        return Some(Ordering::Greater);
    }
    let t = b.trunc();
    match a.cmp(&(t as i64)) {
        Ordering::Equal if b > t => Some(Ordering::Less),
        Ordering::Equal if b < t => Some(Ordering::Greater),
        o => Some(o),
    }
}

fn scalar(v: &Json) -> Result<Value, String> {
    match v {
        Json::String(s) => Ok(Value::from(s.as_str())),
        Json::Bool(b) => Ok(Value::Bool(*b)),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(Value::Int(i))
            } else if n.is_u64() {
                Err(format!(
                    "{n} is beyond the 64-bit signed integers metadata holds"
                ))
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() => Ok(Value::Float(f)),
                    _ => Err(format!("{n} is not a finite number")),
                }
            }
        }
        Json::Null => Err("None is not a metadata value (leave the key out instead)".into()),
        Json::Array(_) => Err("expected a str, int, float or bool, got a list".into()),
        Json::Object(_) => Err("expected a str, int, float or bool, got a dict".into()),
    }
}

/// Metadata of an item: `key -> value` pairs, sorted by key, keys unique, in one shared
/// allocation (a clone is a reference count). Each key is kept with its hash ([`key_hash`]):
/// a filter, which hashes its keys once, finds a key by comparing integers, and reads a key's
/// bytes only to confirm a match.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metadata(Arc<[(u64, Arc<str>, Value)]>);

/// One shared allocation per distinct metadata key, for building the metadata of many items.
#[derive(Debug, Default)]
pub struct KeyInterner(std::collections::HashMap<Box<str>, Arc<str>>);

impl KeyInterner {
    /// The shared copy of `key`.
    pub fn intern(&mut self, key: &str) -> Arc<str> {
        if let Some(k) = self.0.get(key) {
            return Arc::clone(k);
        }
        let k: Arc<str> = Arc::from(key);
        self.0.insert(key.into(), Arc::clone(&k));
        k
    }
}

/// FNV-1a of the key's bytes (cheap for short keys; collisions are resolved by comparing the
/// keys themselves).
#[must_use]
#[inline]
pub fn key_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Metadata {
    /// Builds metadata from pairs; a later pair wins over an earlier one with the same key.
    ///
    /// Keys are `Arc<str>` so that the items of a batch can share one allocation per key (as
    /// the Python binding does): a filter then reads one hot copy of each key.
    pub fn new<K: Into<Arc<str>>, V: Into<Value>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut v: Vec<(u64, Arc<str>, Value)> = pairs
            .into_iter()
            .map(|(k, v)| {
                let k: Arc<str> = k.into();
                (key_hash(&k), k, v.into())
            })
            .collect();
        // Stable sort keeps insertion order among equal keys; keep the last of each run.
        v.sort_by(|a, b| a.1.cmp(&b.1));
        let mut out: Vec<(u64, Arc<str>, Value)> = Vec::with_capacity(v.len());
        for pair in v {
            match out.last_mut() {
                Some(last) if last.1 == pair.1 => *last = pair,
                _ => out.push(pair),
            }
        }
        Metadata(out.into())
    }

    /// These pairs with `key` set to `value` (replacing its value if present); the other
    /// keys stay shared.
    #[must_use]
    pub fn with(&self, key: Arc<str>, value: Value) -> Self {
        let at = self.0.partition_point(|(_, k, _)| *k < key);
        let replace = self.0.get(at).is_some_and(|(_, k, _)| *k == key);
        let mut out = Vec::with_capacity(self.0.len() + 1);
        out.extend_from_slice(&self.0[..at]);
        out.push((key_hash(&key), key, value));
        out.extend_from_slice(&self.0[at + usize::from(replace)..]);
        Metadata(out.into())
    }

    /// The value stored under `key`.
    #[must_use]
    #[inline]
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.get_hashed(key, key_hash(key))
    }

    /// The value stored under `key`, whose [`key_hash`] is `hash`.
    #[must_use]
    #[inline]
    pub fn get_hashed(&self, key: &str, hash: u64) -> Option<&Value> {
        self.0
            .iter()
            .find(|(h, k, _)| *h == hash && k.as_ref() == key)
            .map(|(_, _, v)| v)
    }

    /// Whether a snapshot can hold every value: finite floats, lists of scalars (what the
    /// Python binding and JSON let in; [`Metadata::new`] takes any [`Value`]).
    ///
    /// # Errors
    /// The first value that is not one, as `key: why`.
    pub fn check(&self) -> Result<(), String> {
        self.iter().try_for_each(check_pair)
    }

    /// The pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(_, k, v)| (k.as_ref(), v))
    }

    /// Number of pairs.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no pairs.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.0
            .iter()
            .map(|(_, k, v)| k.len() + v.heap_bytes() + 48)
            .sum()
    }
}

/// A change to an item's metadata ([`crate::Ring::update_metadata`]).
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataUpdate {
    /// The metadata becomes this (None, or no pairs: no metadata).
    Replace(Option<Metadata>),
    /// Each key is set to its value (`Some`) or removed (`None`), in order; other keys stay.
    Merge(Vec<(Arc<str>, Option<Value>)>),
}

impl MetadataUpdate {
    /// Checks the values it sets as [`Metadata::check`] does.
    ///
    /// # Errors
    /// The first value that is not one, as `key: why`.
    pub fn check(&self) -> Result<(), String> {
        match self {
            MetadataUpdate::Replace(meta) => meta.as_ref().map_or(Ok(()), Metadata::check),
            MetadataUpdate::Merge(kv) => kv
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k.as_ref(), v)))
                .try_for_each(check_pair),
        }
    }

    /// The metadata of an item that had `old`, after this change (None when no pair is left:
    /// no metadata, as an empty map is everywhere).
    #[must_use]
    pub fn apply(&self, old: Option<&Metadata>) -> Option<Metadata> {
        let new = match self {
            MetadataUpdate::Replace(m) => m.clone(),
            MetadataUpdate::Merge(changes) => {
                let mut pairs: Vec<(Arc<str>, Option<Value>)> = old
                    .into_iter()
                    .flat_map(|m| m.0.iter())
                    .map(|(_, k, v)| (Arc::clone(k), Some(v.clone())))
                    .chain(changes.iter().cloned())
                    .collect();
                // Stable, then reversed: each key's last change leads its run.
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
                pairs.reverse();
                pairs.dedup_by(|later, first| later.0 == first.0);
                Some(Metadata::new(
                    pairs.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))),
                ))
            }
        };
        new.filter(|m| !m.is_empty())
    }
}

/// A metadata key with its [`key_hash`], as a predicate looks it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    name: Box<str>,
    hash: u64,
}

impl Key {
    /// The key `name`.
    pub fn new(name: impl Into<Box<str>>) -> Self {
        let name = name.into();
        Key {
            hash: key_hash(&name),
            name,
        }
    }

    /// The key's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    #[inline]
    fn find<'m>(&self, meta: Option<&'m Metadata>) -> Option<&'m Value> {
        meta.and_then(|m| m.get_hashed(&self.name, self.hash))
    }
}

/// A comparison operator of the filter language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `$eq`
    Eq,
    /// `$ne`
    Ne,
    /// `$gt`
    Gt,
    /// `$gte`
    Gte,
    /// `$lt`
    Lt,
    /// `$lte`
    Lte,
}

impl CmpOp {
    fn name(self) -> &'static str {
        match self {
            CmpOp::Eq => "$eq",
            CmpOp::Ne => "$ne",
            CmpOp::Gt => "$gt",
            CmpOp::Gte => "$gte",
            CmpOp::Lt => "$lt",
            CmpOp::Lte => "$lte",
        }
    }
}

/// A compiled filter on an item's metadata and text (see the module docs for its meaning).
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// `key op value` (`value` a scalar).
    Cmp {
        /// The metadata key and its [`key_hash`].
        key: Key,
        /// The operator.
        op: CmpOp,
        /// The operand.
        value: Value,
    },
    /// `key $in values`, or `$nin` when `negate`.
    In {
        /// The metadata key and its [`key_hash`].
        key: Key,
        /// The scalars to look for, sorted by kind (bool, number, str) and then value, as
        /// [`Predicate::parse`] sorts them: a long list is searched by bisection.
        values: Box<[Value]>,
        /// `$nin`.
        negate: bool,
    },
    /// `$contains needle` (or `$not_contains` when `negate`): the item's text contains
    /// `needle`, case-sensitive, as chromadb's `where_document` reads it (an item without text
    /// contains nothing).
    Text {
        /// The substring to look for.
        needle: Box<str>,
        /// `$not_contains`.
        negate: bool,
    },
    /// `key $exists exists`: the item has the key (any value), or has not.
    Exists {
        /// The metadata key and its [`key_hash`].
        key: Key,
        /// `$exists: true` (has the key) or `false` (has not).
        exists: bool,
    },
    /// Every one holds (true when empty).
    And(Vec<Predicate>),
    /// At least one holds.
    Or(Vec<Predicate>),
    /// The negation.
    Not(Box<Predicate>),
}

/// A malformed filter: where in the document (`where["a"]["$gt"]`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    /// The path to the bad part, e.g. `where["$and"][1]["status"]`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for FilterError {}

const OPERATORS: &str =
    "$eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists, $contains, $not_contains";

/// How deeply `$and`, `$or` and `$not` may nest: a filter is evaluated (and dropped) by
/// recursion, so a deeper one is refused rather than left to overflow the stack.
pub const MAX_FILTER_DEPTH: usize = 32;
const LOGICAL: &str = "$and, $or, $not, $contains, $not_contains";

impl Predicate {
    /// `key == value`.
    pub fn eq(key: impl Into<Box<str>>, value: impl Into<Value>) -> Self {
        Predicate::Cmp {
            key: Key::new(key),
            op: CmpOp::Eq,
            value: value.into(),
        }
    }

    /// Compiles a `where` document: `{"key": value}` (equality), `{"key": {"$op": operand}}`,
    /// `{"$and" | "$or": [doc, ...]}`, `{"$not": doc}`, `{"$contains" | "$not_contains": s}`
    /// on the text (or `{"#document": {"$contains": s}}`); several entries are all required.
    ///
    /// # Errors
    /// [`FilterError`] naming the bad part: an unknown operator, an operand of the wrong kind,
    /// an empty `$and` / `$or`, a key starting with `$`.
    pub fn parse(doc: &Json) -> Result<Self, FilterError> {
        parse_doc(doc, "where", 0)
    }

    /// Whether it keeps every item whatever its metadata and text, as written: an empty `$and` (what
    /// `{}` compiles to), or one made of such (`{"$and": [{}]}`, `{"$or": [{}, ...]}`, the
    /// `$not` of one that keeps nothing). Deletes and updates chosen by such a filter would
    /// choose every item.
    #[must_use]
    pub fn keeps_everything(&self) -> bool {
        match self {
            Predicate::And(ps) => ps.iter().all(Predicate::keeps_everything),
            Predicate::Or(ps) => ps.iter().any(Predicate::keeps_everything),
            Predicate::Not(p) => p.keeps_nothing(),
            // `$nin: []` (a "keep these" list that came out empty) excludes nothing.
            Predicate::In { values, negate, .. } => *negate && values.is_empty(),
            _ => false,
        }
    }

    /// Whether it keeps no item whatever its metadata and text, as written ([`Self::keeps_everything`]
    /// negated).
    fn keeps_nothing(&self) -> bool {
        match self {
            Predicate::And(ps) => ps.iter().any(Predicate::keeps_nothing),
            Predicate::Or(ps) => ps.iter().all(Predicate::keeps_nothing),
            Predicate::Not(p) => p.keeps_everything(),
            Predicate::In { values, negate, .. } => !*negate && values.is_empty(),
            _ => false,
        }
    }

    /// Whether an item with metadata `meta` and text `text` passes.
    #[must_use]
    pub fn matches(&self, meta: Option<&Metadata>, text: Option<&str>) -> bool {
        match self {
            Predicate::Cmp { key, op, value } => {
                let x = key.find(meta);
                match op {
                    CmpOp::Eq => {
                        x.is_some_and(|x| x.any(|e| e.order(value) == Some(Ordering::Equal)))
                    }
                    CmpOp::Ne => {
                        !x.is_some_and(|x| x.any(|e| e.order(value) == Some(Ordering::Equal)))
                    }
                    CmpOp::Gt => {
                        x.is_some_and(|x| x.any(|e| e.order(value) == Some(Ordering::Greater)))
                    }
                    CmpOp::Gte => x.is_some_and(|x| {
                        x.any(|e| {
                            matches!(e.order(value), Some(Ordering::Greater | Ordering::Equal))
                        })
                    }),
                    CmpOp::Lt => {
                        x.is_some_and(|x| x.any(|e| e.order(value) == Some(Ordering::Less)))
                    }
                    CmpOp::Lte => x.is_some_and(|x| {
                        x.any(|e| matches!(e.order(value), Some(Ordering::Less | Ordering::Equal)))
                    }),
                }
            }
            Predicate::In {
                key,
                values,
                negate,
            } => {
                let found = key.find(meta).is_some_and(|x| {
                    x.any(|e| {
                        if values.len() <= SHORT_LIST {
                            values.iter().any(|v| e.order(v) == Some(Ordering::Equal))
                        } else {
                            values.binary_search_by(|v| list_order(v, e)).is_ok()
                        }
                    })
                });
                found != *negate
            }
            Predicate::Text { needle, negate } => {
                text.is_some_and(|t| t.contains(&**needle)) != *negate
            }
            Predicate::Exists { key, exists } => key.find(meta).is_some() == *exists,
            Predicate::And(ps) => ps.iter().all(|p| p.matches(meta, text)),
            Predicate::Or(ps) => ps.iter().any(|p| p.matches(meta, text)),
            Predicate::Not(p) => !p.matches(meta, text),
        }
    }
}

/// `$in` lists this long or shorter are scanned; longer ones bisected (100,000 values against
/// 3,000 items: 0.5 s a search scanned).
const SHORT_LIST: usize = 16;

/// The order of `$in` lists: by kind (bool, number, str), then by value (ints and floats by
/// their exact values), so that equal values are adjacent and a lookup bisects.
fn list_order(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Bool(_) => 0,
            Value::Int(_) | Value::Float(_) => 1,
            Value::Str(_) => 2,
            Value::List(_) => 3,
        }
    }
    rank(a)
        .cmp(&rank(b))
        .then_with(|| a.order(b).unwrap_or(Ordering::Equal))
}

fn fail(path: &str, message: impl Into<String>) -> FilterError {
    FilterError {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "None",
        Json::Bool(_) => "bool",
        Json::Number(n) if n.is_f64() => "float",
        Json::Number(_) => "int",
        Json::String(_) => "str",
        Json::Array(_) => "list",
        Json::Object(_) => "dict",
    }
}

fn parse_doc(doc: &Json, path: &str, depth: usize) -> Result<Predicate, FilterError> {
    if depth > MAX_FILTER_DEPTH {
        return Err(fail(
            path,
            format!("filters nest at most {MAX_FILTER_DEPTH} levels deep"),
        ));
    }
    let Json::Object(map) = doc else {
        return Err(fail(
            path,
            format!(
                "a filter must be a dict like {{\"key\": value}}, got {}",
                kind(doc)
            ),
        ));
    };
    let mut all = Vec::with_capacity(map.len());
    for (key, v) in map {
        let here = format!("{path}[{key:?}]");
        all.push(match key.as_str() {
            "$and" | "$or" => {
                let Json::Array(items) = v else {
                    return Err(fail(&here, format!("{key} takes a list of filters, got {}", kind(v))));
                };
                if items.is_empty() {
                    return Err(fail(&here, format!("{key} needs at least one filter")));
                }
                let ps = items
                    .iter()
                    .enumerate()
                    .map(|(i, d)| parse_doc(d, &format!("{here}[{i}]"), depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                if key == "$and" { Predicate::And(ps) } else { Predicate::Or(ps) }
            }
            "$not" => Predicate::Not(Box::new(parse_doc(v, &here, depth + 1)?)),
            "$contains" | "$not_contains" => text_predicate(key, v, &here)?,
            k if k.starts_with('$') => {
                return Err(fail(
                    &here,
                    format!("unknown logical operator {k} (expected one of {LOGICAL}, or a metadata key)"),
                ));
            }
            _ => parse_field(key, v, &here)?,
        });
    }
    Ok(if all.len() == 1 {
        all.pop().expect("one")
    } else {
        Predicate::And(all)
    })
}

/// `$contains` / `$not_contains` (`op`) on the item's text, of `v`: a non-empty str (an empty
/// one would keep every item with text, as chromadb refuses it).
fn text_predicate(op: &str, v: &Json, path: &str) -> Result<Predicate, FilterError> {
    match v {
        Json::String(needle) if !needle.is_empty() => Ok(Predicate::Text {
            needle: needle.as_str().into(),
            negate: op == "$not_contains",
        }),
        _ => Err(fail(
            path,
            format!(
                "{op} takes a non-empty str (text the item's text holds), got {}",
                if matches!(v, Json::String(_)) {
                    "\"\""
                } else {
                    kind(v)
                }
            ),
        )),
    }
}

/// The key chromadb names the document by in a `where` (`{"#document": {"$contains": s}}`).
const DOCUMENT: &str = "#document";

/// chromadb's other `#` keys (`Key.ID`, ...): not metadata, and nothing imesde filters by.
const CHROMA_KEYS: [&str; 4] = ["#id", "#embedding", "#metadata", "#score"];

/// The condition on one key: a scalar (equality) or a dict of operators.
fn parse_field(key: &str, v: &Json, path: &str) -> Result<Predicate, FilterError> {
    if CHROMA_KEYS.contains(&key) {
        // Read as a metadata key, `{"#id": {"$nin": keep}}` passed every item (none has it):
        // a delete by it emptied the engine.
        return Err(fail(
            path,
            format!(
                "{key} is chromadb's key for the item, not metadata: imesde filters by metadata \
                 keys and #document (pass ids= to choose items by id)"
            ),
        ));
    }
    if key == DOCUMENT && !matches!(v, Json::Object(_)) {
        // chromadb's name for the text: `{"#document": {"$contains": s}}`.
        return Err(fail(
            path,
            "#document takes {\"$contains\": str} or {\"$not_contains\": str}",
        ));
    }
    let Json::Object(ops) = v else {
        if matches!(v, Json::Array(_)) {
            return Err(fail(
                path,
                "a list is not an equality operand; use {\"$in\": [...]} to match any of several values",
            ));
        }
        return Ok(Predicate::Cmp {
            key: Key::new(key),
            op: CmpOp::Eq,
            value: operand(v, path)?,
        });
    };
    if ops.is_empty() {
        return Err(fail(
            path,
            format!("an empty dict: give an operator ({OPERATORS})"),
        ));
    }
    let mut all = Vec::with_capacity(ops.len());
    for (op, arg) in ops {
        let here = format!("{path}[{op:?}]");
        let cmp = |op: CmpOp| -> Result<Predicate, FilterError> {
            let value = operand(arg, &here)?;
            if matches!(op, CmpOp::Gt | CmpOp::Gte | CmpOp::Lt | CmpOp::Lte)
                && matches!(value, Value::Bool(_))
            {
                return Err(fail(
                    &here,
                    format!("{} compares numbers or strings, got bool", op.name()),
                ));
            }
            Ok(Predicate::Cmp {
                key: Key::new(key),
                op,
                value,
            })
        };
        if key == DOCUMENT {
            all.push(match op.as_str() {
                "$contains" | "$not_contains" => text_predicate(op, arg, &here)?,
                _ => {
                    return Err(fail(
                        &here,
                        format!("#document takes $contains or $not_contains, got {op}"),
                    ));
                }
            });
            continue;
        }
        all.push(match op.as_str() {
            // chromadb's array operators: the list holds the value (a scalar: equals it).
            "$eq" | "$contains" => cmp(CmpOp::Eq)?,
            "$ne" | "$not_contains" => cmp(CmpOp::Ne)?,
            "$gt" => cmp(CmpOp::Gt)?,
            "$gte" => cmp(CmpOp::Gte)?,
            "$lt" => cmp(CmpOp::Lt)?,
            "$lte" => cmp(CmpOp::Lte)?,
            "$in" | "$nin" => {
                let Json::Array(items) = arg else {
                    return Err(fail(
                        &here,
                        format!("{op} takes a list of values, got {}", kind(arg)),
                    ));
                };
                let mut values = items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| operand(x, &format!("{here}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                values.sort_by(list_order);
                Predicate::In {
                    key: Key::new(key),
                    values: values.into(),
                    negate: op == "$nin",
                }
            }
            "$exists" => {
                // 1 and 0 as MongoDB users write them too.
                let exists = match (arg, arg.as_u64()) {
                    (Json::Bool(b), _) => *b,
                    (_, Some(n @ 0..=1)) => n == 1,
                    _ => {
                        return Err(fail(
                            &here,
                            format!("$exists takes True or False (or 1 / 0), got {}", kind(arg)),
                        ));
                    }
                };
                Predicate::Exists {
                    key: Key::new(key),
                    exists,
                }
            }
            _ => {
                return Err(fail(
                    &here,
                    format!("unknown operator {op} (expected one of {OPERATORS})"),
                ));
            }
        });
    }
    Ok(if all.len() == 1 {
        all.pop().expect("one")
    } else {
        Predicate::And(all)
    })
}

/// A scalar operand.
fn operand(v: &Json, path: &str) -> Result<Value, FilterError> {
    scalar(v).map_err(|e| fail(path, e))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn meta() -> Metadata {
        Metadata::new([
            ("status", Value::Int(500)),
            ("latency", Value::Float(12.5)),
            ("ok", Value::Bool(false)),
            ("host", Value::from("web1")),
            (
                "tags",
                Value::from(vec![Value::from("db"), Value::from("prod")]),
            ),
        ])
    }

    #[allow(clippy::needless_pass_by_value)] // the tests read best with json!(..) inline
    fn check(doc: serde_json::Value) -> bool {
        Predicate::parse(&doc)
            .unwrap()
            .matches(Some(&meta()), Some("disk full on db1"))
    }

    #[test]
    fn with_sets_one_key_and_keeps_the_order() {
        let m = meta();
        for (key, value) in [("id", Value::from("7-1")), ("ok", Value::Bool(true))] {
            let set = m.with(Arc::from(key), value.clone());
            let mut want: Vec<(&str, Value)> = m
                .iter()
                .filter(|&(k, _)| k != key)
                .map(|(k, v)| (k, v.clone()))
                .collect();
            want.push((key, value.clone()));
            assert_eq!(set, Metadata::new(want));
            assert_eq!(set.get(key), Some(&value));
        }
        assert_eq!(m.with(Arc::from("z"), Value::Int(1)).len(), m.len() + 1);
        assert_eq!(m.with(Arc::from("ok"), Value::Int(1)).len(), m.len());
    }

    #[test]
    fn long_in_lists_are_bisected_with_the_meaning_of_a_scan() {
        // Mixed kinds, ints equal to floats, duplicates, 2^53 neighbours: every item value
        // is found in a long list exactly when a scan finds it.
        let mut operands: Vec<serde_json::Value> = Vec::new();
        for i in -40i64..40 {
            operands.push(json!(i * 3));
            operands.push(json!(f64::from(i as i32) * 1.5));
            operands.push(json!(format!("s{i}")));
        }
        operands.extend([json!(true), json!(9_007_199_254_740_993_i64), json!(1e300)]);
        let list = Predicate::parse(&json!({"k": {"$in": operands.clone()}})).unwrap();
        let probes: Vec<Value> = (-130i64..130)
            .flat_map(|i| {
                [
                    Value::Int(i),
                    Value::Float(i as f64 / 2.0),
                    Value::from(format!("s{i}").as_str()),
                ]
            })
            .chain([
                Value::Bool(true),
                Value::Bool(false),
                Value::Int(9_007_199_254_740_993),
                Value::Int(9_007_199_254_740_992),
                Value::Float(1e300),
                Value::from(vec![Value::from("nope"), Value::Int(-120)]),
            ])
            .collect();
        let Predicate::In { values, .. } = &list else {
            panic!("an $in predicate")
        };
        assert!(values.len() > SHORT_LIST);
        let mut found = 0;
        for probe in &probes {
            let m = Metadata::new([("k", probe.clone())]);
            let scanned = probe.any(|e| values.iter().any(|v| e.order(v) == Some(Ordering::Equal)));
            assert_eq!(list.matches(Some(&m), None), scanned, "{probe:?}");
            found += usize::from(scanned);
        }
        assert!(
            found > 100 && found < probes.len() - 100,
            "{found} of {}",
            probes.len()
        );
    }

    #[test]
    fn operators_on_typed_values() {
        assert!(check(json!({"status": 500})));
        assert!(check(json!({"status": 500.0})));
        assert!(!check(json!({"status": "500"})));
        assert!(check(json!({"status": {"$gte": 500, "$lt": 600}})));
        assert!(!check(json!({"status": {"$gt": 500}})));
        assert!(check(json!({"latency": {"$gt": 12}})));
        assert!(check(json!({"latency": {"$lte": 12.5}})));
        assert!(check(json!({"ok": false})));
        assert!(!check(json!({"ok": 0})));
        assert!(check(json!({"host": {"$in": ["web2", "web1"]}})));
        assert!(check(json!({"host": {"$nin": ["web2"]}})));
        assert!(check(json!({"host": {"$gt": "web0"}})));
        assert!(!check(json!({"host": {"$gt": 1}})));
        assert!(check(json!({"tags": "db"})));
        assert!(check(json!({"tags": {"$in": ["x", "prod"]}})));
        assert!(!check(json!({"tags": {"$ne": "db"}})));
        assert!(check(json!({"missing": {"$ne": 1}})));
        assert!(check(json!({"missing": {"$nin": [1]}})));
        assert!(check(json!({"tags": {"$exists": true}})));
        assert!(check(json!({"ok": {"$exists": true}}))); // a false value is there
        assert!(!check(json!({"ok": {"$exists": false}})));
        assert!(check(json!({"missing": {"$exists": false}})));
        assert!(!check(json!({"missing": {"$exists": true}})));
        assert!(check(json!({"$not": {"missing": {"$exists": true}}})));
        let none = Predicate::parse(&json!({"k": {"$exists": false}})).unwrap();
        assert!(none.matches(None, None));
        assert!(check(
            json!({"tags": {"$exists": 1}, "missing": {"$exists": 0}})
        ));
        assert!(check(json!({"$contains": "disk full"})));
        assert!(!check(json!({"$contains": "Disk"}))); // case-sensitive, as chromadb
        assert!(check(json!({"$not_contains": "db2", "host": "web1"})));
        assert!(check(
            json!({"$or": [{"$contains": "nope"}, {"$contains": "db1"}]})
        ));
        assert!(!check(json!({"$not": {"$contains": "db1"}})));
        let text = Predicate::parse(&json!({"$contains": "x"})).unwrap();
        assert!(!text.matches(None, None)); // no text contains nothing
        let not_text = Predicate::parse(&json!({"$not_contains": "x"})).unwrap();
        assert!(not_text.matches(None, None));
        for bad in [
            json!({"$contains": 3}),
            json!({"$contains": ""}),
            json!({"$not_contains": ""}),
        ] {
            let e = Predicate::parse(&bad).unwrap_err();
            assert!(e.message.contains("takes a non-empty str"), "{e}");
        }
        // chromadb's spellings: the document by name, and arrays that hold a value.
        assert!(check(
            json!({"#document": {"$contains": "db1", "$not_contains": "db2"}})
        ));
        assert!(!check(json!({"#document": {"$contains": "db2"}})));
        assert!(check(
            json!({"tags": {"$contains": "prod"}, "host": {"$contains": "web1"}})
        ));
        assert!(check(json!({"tags": {"$not_contains": "dev"}})));
        assert!(!check(json!({"tags": {"$not_contains": "prod"}})));
        for bad in [
            json!({"#document": "x"}),
            json!({"#document": {"$eq": "x"}}),
            json!({"#document": {}}),
            json!({"#id": {"$nin": [0, 1]}}),
            json!({"$or": [{"a": 1}, {"#score": {"$gt": 0.5}}]}),
        ] {
            assert!(Predicate::parse(&bad).is_err(), "{bad}");
        }
        for (doc, all) in [
            (json!({}), true),
            (json!({"$and": [{}]}), true),
            (json!({"$or": [{"a": 1}, {"$and": [{}, {}]}]}), true),
            (json!({"$not": {"$not": {}}}), true),
            (json!({"$and": [{}, {"a": 1}]}), false),
            (json!({"$not": {}}), false),
            (json!({"a": {"$exists": true}}), false),
            // An empty "keep these" list excludes nothing; an empty "these" keeps nothing.
            (json!({"a": {"$nin": []}}), true),
            (json!({"$not": {"a": {"$in": []}}}), true),
            (json!({"$or": [{"a": 1}, {"b": {"$nin": []}}]}), true),
            (json!({"a": {"$in": []}}), false),
            (json!({"$not": {"a": {"$nin": []}}}), false),
        ] {
            let p = Predicate::parse(&doc).unwrap();
            assert_eq!(p.keeps_everything(), all, "{doc}");
            if all {
                assert!(p.matches(None, None) && p.matches(Some(&meta()), Some("x")));
            }
        }
        let bad = Predicate::parse(&json!({"k": {"$exists": 2}})).unwrap_err();
        assert_eq!(bad.path, "where[\"k\"][\"$exists\"]");
        assert!(bad.message.contains("True or False"), "{bad}");
        assert!(!check(json!({"missing": {"$gt": 1}})));
        assert!(check(json!({"$or": [{"status": 200}, {"host": "web1"}]})));
        assert!(!check(json!({"$and": [{"status": 500}, {"host": "web2"}]})));
        assert!(check(json!({"$not": {"host": "web2"}})));
        assert!(check(json!({})));
        assert!(
            !Predicate::parse(&json!({"host": "web1"}))
                .unwrap()
                .matches(None, None)
        );
    }

    #[test]
    fn integers_and_floats_compare_exactly() {
        let big = i64::MAX - 1;
        let m = Metadata::new([("n", Value::Int(big))]);
        let p = |d| Predicate::parse(&d).unwrap().matches(Some(&m), None);
        // 2^63 as a float is above every i64.
        assert!(p(json!({"n": {"$lt": 9_223_372_036_854_775_808.0_f64}})));
        assert!(!p(json!({"n": {"$eq": 9_223_372_036_854_775_807.0_f64}})));
        assert!(p(json!({"n": {"$gt": 1.5}})));
        let m = Metadata::new([("n", Value::Int(2))]);
        let p = |d| Predicate::parse(&d).unwrap().matches(Some(&m), None);
        assert!(p(json!({"n": {"$gt": 1.5}})));
        assert!(p(json!({"n": {"$lt": 2.5}})));
        assert!(!p(json!({"n": {"$lt": 2.0}})));
    }

    #[test]
    fn malformed_filters_name_the_bad_part() {
        let err = |d| Predicate::parse(&d).unwrap_err().to_string();
        assert!(
            err(json!({"a": {"$gtt": 1}})).starts_with("where[\"a\"][\"$gtt\"]: unknown operator")
        );
        assert!(
            err(json!({"$and": [{"a": 1}, {"b": {"$in": 3}}]}))
                .starts_with("where[\"$and\"][1][\"b\"][\"$in\"]: $in takes a list")
        );
        assert!(err(json!({"$or": []})).contains("at least one"));
        assert!(err(json!({"a": {"$gt": true}})).contains("got bool"));
        assert!(err(json!({"a": null})).contains("None"));
        assert!(err(json!({"a": [1, 2]})).contains("$in"));
        assert!(err(json!({"$xor": []})).contains("unknown logical operator"));
        assert!(err(json!([1])).contains("must be a dict"));
        assert!(err(json!({"a": {}})).contains("empty dict"));
        let mut deep = json!({"a": 1});
        for _ in 0..MAX_FILTER_DEPTH {
            deep = json!({"$not": deep});
        }
        assert!(Predicate::parse(&deep).is_ok());
        assert!(err(json!({"$not": deep})).contains("nest at most"));
    }
}
