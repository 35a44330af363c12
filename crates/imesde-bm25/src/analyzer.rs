//! Text to terms: Unicode words, lowercase, optional stop words, optional Snowball stemming,
//! and technical compounds (`CVE-2024-1234`, `net/mlx5e`, `10.0.0.7`) kept whole as well.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use rust_stemmers::{Algorithm, Stemmer};
use unicode_segmentation::UnicodeSegmentation;

use crate::error::{Bm25Error, Result};
use crate::stopwords::ENGLISH;

/// Characters that glue words into one searchable compound when nothing else separates them.
const JOINERS: &[char] = &['-', '/', '.', '_', ':', '@', '+', '#'];
/// The joiners Unicode's word rules keep inside one word (`10.0.0.7`, `foo_bar`,
/// `sshd:accepted`): such a word is split at them into its parts as well.
const INNER_JOINERS: &[char] = &['.', '_', ':'];

/// The Snowball languages, by their lowercase English names.
const LANGUAGES: &[(&str, Algorithm)] = &[
    ("arabic", Algorithm::Arabic),
    ("danish", Algorithm::Danish),
    ("dutch", Algorithm::Dutch),
    ("english", Algorithm::English),
    ("finnish", Algorithm::Finnish),
    ("french", Algorithm::French),
    ("german", Algorithm::German),
    ("greek", Algorithm::Greek),
    ("hungarian", Algorithm::Hungarian),
    ("italian", Algorithm::Italian),
    ("norwegian", Algorithm::Norwegian),
    ("portuguese", Algorithm::Portuguese),
    ("romanian", Algorithm::Romanian),
    ("russian", Algorithm::Russian),
    ("spanish", Algorithm::Spanish),
    ("swedish", Algorithm::Swedish),
    ("tamil", Algorithm::Tamil),
    ("turkish", Algorithm::Turkish),
];

/// How text becomes terms. The same analyzer serves documents and queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyzerConfig {
    /// A Snowball language name (`"english"`, `"german"`, ...) or `None` for no stemming.
    pub stemmer: Option<String>,
    /// Words dropped before stemming (lowercase).
    pub stopwords: Vec<String>,
    /// Whether a word that Unicode's rules keep whole across `.` `_` `:` (`10.0.0.7`,
    /// `foo_bar`) also gives its parts as terms. True unless an index was saved by a version
    /// that did not split them (its terms were made without the parts).
    pub word_parts: bool,
}

impl Default for AnalyzerConfig {
    /// No stemming, no stop words.
    fn default() -> Self {
        Self {
            stemmer: None,
            stopwords: Vec::new(),
            word_parts: true,
        }
    }
}

impl AnalyzerConfig {
    /// English stemming, no stop words: what [`crate::Bm25::new`] uses by default.
    #[must_use]
    pub fn english() -> Self {
        Self {
            stemmer: Some("english".into()),
            ..Self::default()
        }
    }

    /// The built-in English stop-word list.
    #[must_use]
    pub fn english_stopwords() -> Vec<String> {
        ENGLISH.iter().map(|s| (*s).to_owned()).collect()
    }
}

/// A compiled [`AnalyzerConfig`].
pub struct Analyzer {
    config: AnalyzerConfig,
    stemmer: Option<Stemmer>,
    stopwords: HashSet<String>,
}

impl fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Analyzer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Clone for Analyzer {
    fn clone(&self) -> Self {
        Self::new(self.config.clone()).expect("a valid config stays valid")
    }
}

/// The names [`Analyzer::new`] accepts as a stemmer.
#[must_use]
pub fn stemmer_languages() -> Vec<&'static str> {
    LANGUAGES.iter().map(|(n, _)| *n).collect()
}

impl Analyzer {
    /// # Errors
    /// [`Bm25Error::Config`] for an unknown stemmer language.
    pub fn new(config: AnalyzerConfig) -> Result<Self> {
        let stemmer = match config.stemmer.as_deref() {
            None => None,
            Some(name) => {
                let algorithm = LANGUAGES
                    .iter()
                    .find(|(n, _)| *n == name.to_lowercase())
                    .map(|(_, a)| *a)
                    .ok_or_else(|| {
                        Bm25Error::Config(format!(
                            "unknown stemmer {name:?}; one of {} or None",
                            stemmer_languages().join(", ")
                        ))
                    })?;
                Some(Stemmer::create(algorithm))
            }
        };
        let stopwords = config.stopwords.iter().map(|w| w.to_lowercase()).collect();
        Ok(Self {
            config,
            stemmer,
            stopwords,
        })
    }

    #[must_use]
    pub fn config(&self) -> &AnalyzerConfig {
        &self.config
    }

    /// The terms of `text`, in order. Each word gives one term (lowercased, stop words dropped,
    /// stemmed); words glued by `- / . _ : @ + #` also give the whole compound, lowercased and
    /// unstemmed, so `CVE-2024-1234` and `10.0.0.7` match exactly as well as by their parts.
    #[must_use]
    pub fn analyze(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.analyze_into(text, &mut out);
        out
    }

    /// [`Self::analyze`] into a reused buffer (cleared first).
    pub fn analyze_into(&self, text: &str, out: &mut Vec<String>) {
        out.clear();
        pieces(text, self.config.word_parts, |piece| match piece {
            Piece::Word(word) => out.extend(self.word_term(word)),
            Piece::Compound(compound) => out.push(lowercase(compound)),
        });
    }

    /// The term of one word: lowercased and stemmed, `None` for a stop word.
    #[must_use]
    pub fn word_term(&self, word: &str) -> Option<String> {
        let lower = lowercase(word);
        if !self.stopwords.is_empty() && self.stopwords.contains(&lower) {
            return None;
        }
        Some(match &self.stemmer {
            // A word the stemmer leaves as it is keeps its buffer.
            Some(s) => match s.stem(&lower) {
                Cow::Borrowed(same) if same.len() == lower.len() => lower,
                stem => stem.into_owned(),
            },
            None => lower,
        })
    }
}

/// A piece of text that gives one term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// A word: its term is [`Analyzer::word_term`].
    Word(&'a str),
    /// Words glued by `- / . _ : @ + #`, whole: its term is the compound lowercased.
    Compound(&'a str),
}

/// The pieces of `text` in order: each word, and after the words of a compound the compound;
/// with `word_parts`, a word glued by `.` `_` `:` gives its parts, then itself as a compound.
pub(crate) fn pieces<'a>(text: &'a str, word_parts: bool, mut emit: impl FnMut(Piece<'a>)) {
    let mut group = Group {
        word_parts,
        ..Group::default()
    };
    if text.is_ascii() {
        ascii_word_bounds(text, |offset, segment| {
            group.push(text, offset, segment, &mut emit);
        });
    } else {
        for (offset, segment) in text.split_word_bound_indices() {
            group.push(text, offset, segment, &mut emit);
        }
    }
    group.close(text, &mut emit);
}

/// The words seen since the last separator: how many, where the first starts and where the
/// last ends, and whether a joiner follows the last.
#[derive(Default)]
struct Group {
    words: usize,
    start: usize,
    end: usize,
    pending_joiner: bool,
    word_parts: bool,
}

impl Group {
    /// Takes the next word-boundary segment of `text`, at `offset`.
    fn push<'a>(
        &mut self,
        text: &'a str,
        offset: usize,
        segment: &'a str,
        emit: &mut impl FnMut(Piece<'a>),
    ) {
        let is_word = segment.chars().any(char::is_alphanumeric);
        if is_word && self.words > 0 && self.pending_joiner {
            // The group goes on.
        } else if is_word {
            self.close(text, emit);
            self.start = offset;
        } else if self.words > 0 && !self.pending_joiner && is_joiner(segment) {
            self.pending_joiner = true;
            return;
        } else {
            self.close(text, emit);
            return;
        }
        self.words += 1;
        self.end = offset + segment.len();
        self.pending_joiner = false;
        if self.word_parts && segment.contains(INNER_JOINERS) {
            segment
                .split(INNER_JOINERS)
                .filter(|part| part.chars().any(char::is_alphanumeric))
                .for_each(|part| emit(Piece::Word(part)));
            emit(Piece::Compound(segment));
        } else {
            emit(Piece::Word(segment));
        }
    }

    /// Ends the group: emits it whole if it glued several words.
    fn close<'a>(&mut self, text: &'a str, emit: &mut impl FnMut(Piece<'a>)) {
        if self.words > 1 {
            emit(Piece::Compound(&text[self.start..self.end]));
        }
        self.words = 0;
        self.pending_joiner = false;
    }
}

/// Word-break classes of ASCII characters (Unicode's `Word_Break` property).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wb {
    Letter,
    Numeric,
    /// `_`
    ExtendNumLet,
    /// `:`
    MidLetter,
    /// `.` and `'` (`MidNumLet`, `Single_Quote`: both glue letters and digits alike).
    MidNumLet,
    /// `,` and `;`
    MidNum,
    Space,
    Cr,
    Other,
}

const fn wb(b: u8) -> Wb {
    match b {
        b'a'..=b'z' | b'A'..=b'Z' => Wb::Letter,
        b'0'..=b'9' => Wb::Numeric,
        b'_' => Wb::ExtendNumLet,
        b':' => Wb::MidLetter,
        b'.' | b'\'' => Wb::MidNumLet,
        b',' | b';' => Wb::MidNum,
        b' ' => Wb::Space,
        b'\r' => Wb::Cr,
        _ => Wb::Other,
    }
}

static WB: [Wb; 128] = {
    let mut table = [Wb::Other; 128];
    let mut b = 0;
    while b < 128 {
        table[b] = wb(b as u8);
        b += 1;
    }
    table
};

/// The segments `split_word_bound_indices` gives for ASCII `text` (the rules of UAX #29
/// that ASCII can meet), without its Unicode tables: runs of letters, digits and `_`, kept
/// whole across `:` `.` `'` between letters and `,` `;` `.` `'` between digits; runs of
/// spaces; CR LF; any other character alone.
fn ascii_word_bounds<'a>(text: &'a str, mut segment: impl FnMut(usize, &'a str)) {
    let bytes = text.as_bytes();
    let class = |i: usize| WB[usize::from(bytes[i] & 0x7f)];
    let n = bytes.len();
    let mut i = 0;
    while i < n {
        let start = i;
        let first = class(i);
        i += 1;
        match first {
            Wb::Letter | Wb::Numeric | Wb::ExtendNumLet => {
                let mut last = first;
                while i < n {
                    let next = class(i);
                    match next {
                        Wb::Letter | Wb::Numeric | Wb::ExtendNumLet => {
                            last = next;
                            i += 1;
                        }
                        Wb::MidLetter | Wb::MidNumLet | Wb::MidNum if i + 1 < n => {
                            let after = class(i + 1);
                            let glued = match (last, after) {
                                (Wb::Letter, Wb::Letter) => next != Wb::MidNum,
                                (Wb::Numeric, Wb::Numeric) => next != Wb::MidLetter,
                                _ => false,
                            };
                            if !glued {
                                break;
                            }
                            last = after;
                            i += 2;
                        }
                        _ => break,
                    }
                }
            }
            Wb::Space => {
                while i < n && bytes[i] == b' ' {
                    i += 1;
                }
            }
            Wb::Cr if i < n && bytes[i] == b'\n' => i += 1,
            _ => {}
        }
        segment(start, &text[start..i]);
    }
}

/// A one-character segment that glues words into a compound.
fn is_joiner(segment: &str) -> bool {
    let mut chars = segment.chars();
    chars.next().is_some_and(|c| JOINERS.contains(&c)) && chars.next().is_none()
}

/// `s` lowercased; ASCII (most tokens of logs and code) without the Unicode tables.
pub(crate) fn lowercase(s: &str) -> String {
    if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        s.to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Analyzer {
        Analyzer::new(AnalyzerConfig::default()).unwrap()
    }

    #[test]
    fn words_and_compounds() {
        let a = plain();
        assert_eq!(
            a.analyze("Fix CVE-2024-1234 in net/mlx5e (eth0)!"),
            [
                "fix",
                "cve",
                "2024",
                "1234",
                "cve-2024-1234",
                "in",
                "net",
                "mlx5e",
                "net/mlx5e",
                "eth0"
            ]
        );
        assert_eq!(
            a.analyze("v1.2.3, 10.0.0.7 and foo_bar"),
            [
                "v1", "2", "3", "v1.2.3", "10", "0", "0", "7", "10.0.0.7", "and", "foo", "bar",
                "foo_bar"
            ]
        );
        assert_eq!(
            a.analyze("sshd:accepted user@mail.example.com __init__"),
            [
                "sshd",
                "accepted",
                "sshd:accepted",
                "user",
                "mail",
                "example",
                "com",
                "mail.example.com",
                "user@mail.example.com",
                "init",
                "__init__"
            ]
        );
        // Saved by a version without the parts: words stay whole, as its terms were made.
        let whole = Analyzer::new(AnalyzerConfig {
            word_parts: false,
            ..AnalyzerConfig::default()
        })
        .unwrap();
        assert_eq!(whole.analyze("10.0.0.7 foo_bar"), ["10.0.0.7", "foo_bar"]);
        assert_eq!(a.analyze("a - b"), ["a", "b"], "spaced dashes do not glue");
        assert_eq!(a.analyze("end."), ["end"]);
        assert!(a.analyze("  ... ").is_empty());
    }

    #[test]
    fn stemming_and_stop_words() {
        let a = Analyzer::new(AnalyzerConfig {
            stemmer: Some("english".into()),
            stopwords: AnalyzerConfig::english_stopwords(),
            word_parts: true,
        })
        .unwrap();
        assert_eq!(
            a.analyze("The leaks were fixed in the Running kernels"),
            ["leak", "were", "fix", "run", "kernel"]
        );
        let de = Analyzer::new(AnalyzerConfig {
            stemmer: Some("German".into()),
            stopwords: vec![],
            word_parts: true,
        })
        .unwrap();
        assert_eq!(
            de.analyze("Übersetzungen Übersetzung"),
            ["ubersetz", "ubersetz"]
        );
        assert!(
            Analyzer::new(AnalyzerConfig {
                stemmer: Some("klingon".into()),
                stopwords: vec![],
                word_parts: true,
            })
            .is_err()
        );
    }

    #[test]
    fn unicode_words() {
        assert_eq!(
            plain().analyze("Größe naïve 日本語"),
            ["größe", "naïve", "日", "本", "語"]
        );
    }

    #[test]
    fn ascii_bounds_are_unicode_bounds() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let alphabet = b"aZq09_.:',; \r\n\t\x0b-/@#+\"x!(";
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..100_000 {
            let len = rng.random_range(0..16);
            let text: String = (0..len)
                .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
                .collect();
            let mut fast = Vec::new();
            ascii_word_bounds(&text, |offset, segment| fast.push((offset, segment)));
            let unicode: Vec<_> = text.split_word_bound_indices().collect();
            assert_eq!(fast, unicode, "{text:?}");
        }
    }
}
