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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnalyzerConfig {
    /// A Snowball language name (`"english"`, `"german"`, ...) or `None` for no stemming.
    pub stemmer: Option<String>,
    /// Words dropped before stemming (lowercase).
    pub stopwords: Vec<String>,
}

impl AnalyzerConfig {
    /// English stemming, no stop words: what [`crate::Bm25::new`] uses by default.
    #[must_use]
    pub fn english() -> Self {
        Self {
            stemmer: Some("english".into()),
            stopwords: Vec::new(),
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
    /// unstemmed, so `CVE-2024-1234` matches exactly as well as by its parts.
    #[must_use]
    pub fn analyze(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.analyze_into(text, &mut out);
        out
    }

    /// [`Self::analyze`] into a reused buffer (cleared first).
    pub fn analyze_into(&self, text: &str, out: &mut Vec<String>) {
        out.clear();
        let mut group: Vec<&str> = Vec::new();
        let mut group_start = 0usize;
        let mut group_end = 0usize;
        let mut pending_joiner = false;
        for (offset, segment) in text.split_word_bound_indices() {
            let is_word = segment.chars().any(char::is_alphanumeric);
            let is_joiner = segment.chars().count() == 1
                && segment.chars().next().is_some_and(|c| JOINERS.contains(&c));
            if is_word {
                if group.is_empty() || !pending_joiner {
                    self.flush(text, &group, group_start, group_end, out);
                    group.clear();
                    group_start = offset;
                }
                group.push(segment);
                group_end = offset + segment.len();
                pending_joiner = false;
            } else if is_joiner && !group.is_empty() && !pending_joiner {
                pending_joiner = true;
            } else {
                self.flush(text, &group, group_start, group_end, out);
                group.clear();
                pending_joiner = false;
            }
        }
        self.flush(text, &group, group_start, group_end, out);
    }

    fn flush(&self, text: &str, group: &[&str], start: usize, end: usize, out: &mut Vec<String>) {
        for word in group {
            let lower = lowercase(word);
            if !self.stopwords.is_empty() && self.stopwords.contains(&lower) {
                continue;
            }
            out.push(match &self.stemmer {
                // A word the stemmer leaves as it is keeps its buffer.
                Some(s) => match s.stem(&lower) {
                    Cow::Borrowed(same) if same.len() == lower.len() => lower,
                    stem => stem.into_owned(),
                },
                None => lower,
            });
        }
        if group.len() > 1 {
            out.push(lowercase(&text[start..end]));
        }
    }
}

/// `s` lowercased; ASCII (most tokens of logs and code) without the Unicode tables.
fn lowercase(s: &str) -> String {
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
            ["v1.2.3", "10.0.0.7", "and", "foo_bar"]
        );
        assert_eq!(a.analyze("a - b"), ["a", "b"], "spaced dashes do not glue");
        assert_eq!(a.analyze("end."), ["end"]);
        assert!(a.analyze("  ... ").is_empty());
    }

    #[test]
    fn stemming_and_stop_words() {
        let a = Analyzer::new(AnalyzerConfig {
            stemmer: Some("english".into()),
            stopwords: AnalyzerConfig::english_stopwords(),
        })
        .unwrap();
        assert_eq!(
            a.analyze("The leaks were fixed in the Running kernels"),
            ["leak", "were", "fix", "run", "kernel"]
        );
        let de = Analyzer::new(AnalyzerConfig {
            stemmer: Some("German".into()),
            stopwords: vec![],
        })
        .unwrap();
        assert_eq!(
            de.analyze("Übersetzungen Übersetzung"),
            ["ubersetz", "ubersetz"]
        );
        assert!(
            Analyzer::new(AnalyzerConfig {
                stemmer: Some("klingon".into()),
                stopwords: vec![]
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
}
