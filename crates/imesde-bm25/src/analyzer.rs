//! Text to terms: Unicode words, lowercase, optional stop words, optional Snowball stemming,
//! and technical compounds (`CVE-2024-1234`, `net/mlx5e`, `10.0.0.7`) kept whole as well.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use rust_stemmers::{Algorithm, Stemmer};
use unicode_normalization::UnicodeNormalization;
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
    /// Unicode folding and the scripts' words (true unless an index was saved by a version
    /// without them, file version 2 or older): terms in NFKC (ligatures, fullwidth and
    /// decomposed letters as their plain forms), typographic apostrophes as `'`, a capital
    /// dotted I as `i`, invisible format characters (soft hyphen, zero-width joiners) dropped;
    /// French and Italian elided articles (`l'`, `qu'`, `dell'`) dropped with those stemmers;
    /// words holding a digit (hex ids, versions) not stemmed; emoji kept as terms; a run of
    /// Thai, Lao, Khmer or Myanmar letters (written without spaces) one term, not a term per
    /// letter.
    pub fold: bool,
}

impl Default for AnalyzerConfig {
    /// No stemming, no stop words.
    fn default() -> Self {
        Self {
            stemmer: None,
            stopwords: Vec::new(),
            word_parts: true,
            fold: true,
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
    /// The articles elided before a word in the stemmer's language (with `fold`).
    elisions: &'static [&'static str],
    /// Turkish (with folding): a word's suffixes after an apostrophe are dropped
    /// (`İstanbul'da` is `istanbul`), as Lucene's Turkish analyzer drops them.
    apostrophe_suffixes: bool,
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
        // Folded as words are, so a stop word written as text is written matches.
        let stopwords = config
            .stopwords
            .iter()
            .map(|w| fold_lowercase(config.fold, w))
            .collect();
        let elisions = match config.stemmer.as_deref().map(str::to_lowercase).as_deref() {
            Some("french") if config.fold => FRENCH_ELISIONS,
            Some("italian") if config.fold => ITALIAN_ELISIONS,
            _ => &[],
        };
        let apostrophe_suffixes = config.fold
            && config
                .stemmer
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("turkish"));
        Ok(Self {
            config,
            stemmer,
            stopwords,
            elisions,
            apostrophe_suffixes,
        })
    }

    /// The settings this analyzer was made from.
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
        pieces(text, &self.config, |piece| match piece {
            Piece::Word(word) => out.extend(self.word_term(word)),
            Piece::Compound(compound) => out.push(self.compound_term(compound)),
        });
    }

    /// The term of a compound: the text folded and lowercased, not stemmed.
    #[must_use]
    pub fn compound_term(&self, compound: &str) -> String {
        fold_lowercase(self.config.fold, compound)
    }

    /// The term of one word: folded, lowercased and stemmed, `None` for a stop word.
    #[must_use]
    pub fn word_term(&self, word: &str) -> Option<String> {
        let mut lower = fold_lowercase(self.config.fold, word);
        if let Some((article, rest)) = lower.split_once('\'')
            && self.elisions.contains(&article)
            && rest.chars().any(char::is_alphanumeric)
        {
            let cut = article.len() + 1; // the article and its apostrophe
            lower.drain(..cut);
        }
        if self.apostrophe_suffixes
            && let Some(at) = lower.find('\'')
            && at > 0
        {
            lower.truncate(at);
        }
        if !self.stopwords.is_empty() && self.stopwords.contains(&lower) {
            return None;
        }
        // A stemmer would rewrite an id (`7f3a9c2e` into `7f3a9c2`) into another one's term.
        if self.config.fold && lower.bytes().any(|b| b.is_ascii_digit()) {
            return Some(lower);
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

/// `s` folded (with `fold`, see [`AnalyzerConfig::fold`]) and lowercased.
fn fold_lowercase(fold: bool, s: &str) -> String {
    if !fold || s.is_ascii() {
        return lowercase(s);
    }
    // NFKC first (it composes a decomposed `I` + dot into `İ`), then the single characters.
    let folded: String = s
        .nfkc()
        .filter_map(|c| match c {
            '\u{2019}' | '\u{02BC}' | '\u{FF07}' => Some('\''),
            '\u{0130}' => Some('i'),
            c if is_invisible(c) || c == '\u{200B}' => None,
            c => Some(c),
        })
        .collect();
    lowercase(&folded)
}

/// Characters that mark nothing a search tells apart: a soft hyphen, a word joiner, the
/// zero-width joiner and non-joiner (they shape letters, as in Persian and Indic scripts, and
/// are typed or left out at will: ICU's folding drops them too), a byte-order mark, emoji and
/// text variation selectors (`❤️` is `❤`), and the marks and
/// controls of bidirectional text (left-to-right and right-to-left marks, the Arabic letter
/// mark, embeddings, overrides and isolates: Hebrew and Arabic text, and log lines that
/// isolate the values they interpolate, carry them after words). Dropped by folding, so the
/// text around them is one word (a zero-width space, which marks a word boundary, still
/// splits words).
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{200C}'
            | '\u{200D}'
            | '\u{2060}'
            | '\u{FEFF}'
            | '\u{FE0E}'
            | '\u{FE0F}'
            | '\u{061C}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
    )
}

/// `text` as folding reads it before words are found (with `fold`, for text that is not
/// ASCII): NFKC, so that fullwidth punctuation glues compounds (`ｆｏｏ．ｂａｒ`), `x²` and `H₂O`
/// are one word, `㎏` is `kg`; invisible characters dropped, so a soft hyphen does not split
/// a word.
fn prepared(text: &str, fold: bool) -> Cow<'_, str> {
    if !fold
        || text.is_ascii()
        || (unicode_normalization::is_nfkc_quick(text.chars())
            == unicode_normalization::IsNormalized::Yes
            && !text.chars().any(is_invisible))
    {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.nfkc().filter(|&c| !is_invisible(c)).collect())
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
/// with `word_parts`, a word glued by `.` `_` `:` gives its parts, then itself as a compound;
/// with `fold`, emoji are words and a run of South-East Asian letters is one word.
pub(crate) fn pieces(text: &str, config: &AnalyzerConfig, mut emit: impl FnMut(Piece<'_>)) {
    let prepared = prepared(text, config.fold);
    let text: &str = &prepared;
    let mut group = Group {
        word_parts: config.word_parts,
        emoji: config.fold,
        ..Group::default()
    };
    if text.is_ascii() {
        ascii_word_bounds(text, |offset, segment| {
            group.push(text, offset, segment, &mut emit);
        });
    } else if !config.fold {
        for (offset, segment) in text.split_word_bound_indices() {
            group.push(text, offset, segment, &mut emit);
        }
    } else {
        // Unicode's word rules give each Thai, Lao, Khmer or Myanmar letter alone (these
        // scripts need a dictionary to find words): a run of them is kept as one word.
        let mut run: Option<(usize, usize)> = None;
        for (offset, segment) in text.split_word_bound_indices() {
            // (A soft hyphen or word joiner inside such a run is dropped by the preparation.)
            if segment.chars().all(is_southeast_asian) {
                run = match run {
                    Some((start, end)) if end == offset => Some((start, offset + segment.len())),
                    other => {
                        if let Some((start, end)) = other {
                            group.push(text, start, &text[start..end], &mut emit);
                        }
                        Some((offset, offset + segment.len()))
                    }
                };
                continue;
            }
            if let Some((start, end)) = run.take() {
                group.push(text, start, &text[start..end], &mut emit);
            }
            group.push(text, offset, segment, &mut emit);
        }
        if let Some((start, end)) = run {
            group.push(text, start, &text[start..end], &mut emit);
        }
    }
    group.close(text, &mut emit);
}

/// Letters and marks of the scripts written without spaces between words that Unicode's word
/// rules split a letter at a time: Thai, Lao, Myanmar, Khmer, Tai Tham.
/// Digits are not letters of a run: `ລາວ໑໒` is a word and a number.
fn is_southeast_asian(c: char) -> bool {
    matches!(c as u32,
        0x0E01..=0x0E3A | 0x0E40..=0x0E4E | 0x0E81..=0x0ECF | 0x0EDC..=0x0EDF
        | 0x1000..=0x103F | 0x1050..=0x108F | 0x109A..=0x109D
        | 0x1780..=0x17D3 | 0x17DC..=0x17DD
        | 0x1A20..=0x1A7F | 0xA9E0..=0xA9EF | 0xA9FA..=0xA9FE | 0xAA60..=0xAA7F)
}

/// Emoji and pictographs (a segment holding one is a word with `fold`: 🔥, 👍🏽, flags,
/// keycaps, ▶, ‼).
fn is_pictographic(c: char) -> bool {
    matches!(c as u32,
        0x1F000..=0x1FAFF | 0x2600..=0x27BF | 0x2B00..=0x2BFF | 0x2300..=0x23FF
        | 0x2190..=0x21FF | 0x25A0..=0x25FF | 0x20E3 | 0x00A9 | 0x00AE | 0x203C | 0x2049
        | 0x3030 | 0x303D | 0x3297 | 0x3299)
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
    /// Whether a segment holding an emoji is a word.
    emoji: bool,
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
        let is_word = segment
            .chars()
            .any(|c| c.is_alphanumeric() || (self.emoji && is_pictographic(c)));
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

/// Articles French elides before a vowel (`l'avion`, `qu'il`), as Lucene's French analyzer
/// drops them.
const FRENCH_ELISIONS: &[&str] = &[
    "l", "m", "t", "qu", "n", "s", "j", "d", "c", "jusqu", "quoiqu", "lorsqu", "puisqu",
];
/// The same for Italian (`l'anno`, `dell'acqua`, `un'altra`).
const ITALIAN_ELISIONS: &[&str] = &[
    "c", "l", "all", "dall", "dell", "nell", "sull", "coll", "pell", "gl", "agl", "dagl", "degl",
    "negl", "sugl", "un", "m", "t", "s", "v", "d",
];

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
            fold: false,
            ..AnalyzerConfig::default()
        })
        .unwrap();
        assert_eq!(whole.analyze("10.0.0.7 foo_bar"), ["10.0.0.7", "foo_bar"]);
        assert_eq!(a.analyze("a - b"), ["a", "b"], "spaced dashes do not glue");
        assert_eq!(a.analyze("end."), ["end"]);
        assert!(a.analyze("  ... ").is_empty());
    }

    #[test]
    fn folding_and_the_scripts_words() {
        let en = Analyzer::new(AnalyzerConfig::english()).unwrap();
        // Typographic apostrophes are apostrophes: possessives and contractions match.
        assert_eq!(
            en.analyze("the user\u{2019}s password"),
            ["the", "user", "password"]
        );
        assert_eq!(en.analyze("don\u{2019}t"), en.analyze("don't"));
        let p = plain();
        // Decomposed, fullwidth, ligature, soft-hyphenated, dotted capital I: plain forms.
        assert_eq!(
            p.analyze("cafe\u{301} cr\u{e8}me"),
            p.analyze("caf\u{e9} crème")
        );
        assert_eq!(
            p.analyze("ｆｕｌｌ \u{fb01}le zero\u{ad}soft \u{130}stanbul"),
            ["full", "file", "zerosoft", "istanbul"]
        );
        // A word with a digit is not stemmed: ids stay apart.
        assert_eq!(
            en.analyze("7f3a9c2e 7f3a9c2 running"),
            ["7f3a9c2e", "7f3a9c2", "run"]
        );
        // Emoji are terms; a run of Thai letters is one term, not one per letter.
        assert_eq!(
            p.analyze("\u{1f525} fire \u{1f44d}\u{1f3fd}"),
            ["\u{1f525}", "fire", "\u{1f44d}\u{1f3fd}"]
        );
        assert_eq!(p.analyze("ภาษาไทย ยาย"), ["ภาษาไทย", "ยาย"]);
        // French and Italian elided articles, with those stemmers.
        let fr = Analyzer::new(AnalyzerConfig {
            stemmer: Some("french".into()),
            ..AnalyzerConfig::default()
        })
        .unwrap();
        assert_eq!(fr.analyze("L\u{2019}élève qu'il"), fr.analyze("élève il"));
        let it = Analyzer::new(AnalyzerConfig {
            stemmer: Some("italian".into()),
            ..AnalyzerConfig::default()
        })
        .unwrap();
        assert_eq!(it.analyze("dell'acqua"), it.analyze("acqua"));
        // Turkish suffixes after an apostrophe (proper nouns), with that stemmer.
        let tr = Analyzer::new(AnalyzerConfig {
            stemmer: Some("Turkish".into()),
            ..AnalyzerConfig::default()
        })
        .unwrap();
        assert_eq!(
            tr.analyze("İstanbul'da Ankara\u{2019}ya"),
            tr.analyze("istanbul ankara")
        );
        assert_eq!(p.analyze("Ankara'ya"), ["ankara'ya"]); // another language's words keep it
        // Bidirectional marks and isolates after or inside words (Hebrew, Arabic, a log line
        // that isolates a value) are dropped, as before a word they were.
        assert_eq!(
            p.analyze("שלום\u{200f} مرحبا\u{200e} \u{2068}error\u{2069} \u{202b}x\u{202c}"),
            ["שלום", "مرحبا", "error", "x"]
        );
        assert_eq!(p.analyze("abc\u{61c}def"), ["abcdef"]);
        // The zero-width joiner and non-joiner shape letters and are typed or not: a Persian
        // word with its non-joiner is the word without it, and a joiner does not split one.
        assert_eq!(
            p.analyze("\u{645}\u{6cc}\u{200c}\u{62e}\u{648}\u{627}\u{647}\u{645}"),
            p.analyze("\u{645}\u{6cc}\u{62e}\u{648}\u{627}\u{647}\u{645}")
        );
        assert_eq!(p.analyze("co\u{200d}operate"), p.analyze("cooperate"));
        // An emoji sequence joined by one gives the terms of its emoji, as its query does.
        assert_eq!(
            p.analyze("\u{1f468}\u{200d}\u{1f4bb}"),
            p.analyze("\u{1f468}\u{1f4bb}")
        );
        // Folding comes before words are found: fullwidth compounds, sub- and superscripts,
        // compatibility symbols, a decomposed capital dotted I.
        assert_eq!(p.analyze("ｆｏｏ．ｂａｒ"), p.analyze("foo.bar"));
        assert_eq!(
            p.analyze("x\u{b2} H\u{2082}O 5\u{338f}"),
            ["x2", "h2o", "5kg"]
        );
        assert_eq!(p.analyze("I\u{307}stanbul"), ["istanbul"]);
        // Invisible marks inside a Thai run, and digits beside Lao letters.
        assert_eq!(
            p.analyze("ภาษา\u{ad}ไทย ภาษา\u{2060}ไทย"),
            ["ภาษาไทย", "ภาษาไทย"]
        );
        assert_eq!(p.analyze("ລາວ໑໒"), ["ລາວ", "໑໒"]);
        // Emoji with and without a variation selector; keycaps and symbols.
        assert_eq!(p.analyze("\u{2764}\u{fe0f}"), p.analyze("\u{2764}"));
        assert_eq!(p.analyze("\u{25b6}\u{fe0f} \u{a9}").len(), 2);
        // Stop words are folded as words are.
        let stop = Analyzer::new(AnalyzerConfig {
            stopwords: vec!["don\u{2019}t".into(), "\u{fb01}le".into()],
            ..AnalyzerConfig::default()
        })
        .unwrap();
        assert_eq!(stop.analyze("don't file it"), ["it"]);
        // An index saved before folding keeps its analysis (its terms were made so).
        let before = Analyzer::new(AnalyzerConfig {
            fold: false,
            ..AnalyzerConfig::english()
        })
        .unwrap();
        assert_ne!(before.analyze("user\u{2019}s"), ["user"]);
        assert_eq!(before.analyze("ภาษา").len(), 4);
    }

    #[test]
    fn stemming_and_stop_words() {
        let a = Analyzer::new(AnalyzerConfig {
            stemmer: Some("english".into()),
            stopwords: AnalyzerConfig::english_stopwords(),
            ..AnalyzerConfig::default()
        })
        .unwrap();
        assert_eq!(
            a.analyze("The leaks were fixed in the Running kernels"),
            ["leak", "were", "fix", "run", "kernel"]
        );
        let de = Analyzer::new(AnalyzerConfig {
            stemmer: Some("German".into()),
            stopwords: vec![],
            ..AnalyzerConfig::default()
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
                ..AnalyzerConfig::default()
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
