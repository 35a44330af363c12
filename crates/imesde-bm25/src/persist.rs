//! `save` / `load`: the `imesde-format` frame (magic `b"IMESDE-BM25\n"`, `u32` version 3, or 4
//! for BM25L, body, `u32` CRC-32 of all preceding bytes) around this little-endian body: `f32`
//! k1, `f32` b, `u8` method (0 lucene, 1 robertson, 2 atire, 3 bm25+, 4 bm25l: version 4 only),
//! `f32` delta, the analyzer (a string:
//! stemmer language or empty; `u32` count + strings: stop words; `u8` flags: bit 0 word parts,
//! bit 1 folding; version 2 wrote 0 or 1 for the word parts, without folding; version 1 had no
//! flags, its analysis kept words whole), `u32` count + strings: terms,
//! `u32` count of documents, each `u64` id, `u32` length, `u32` count + (`u32` term, `u32` tf).
//! A string is a `u32` byte length + UTF-8.

use std::path::Path;

use imesde_format::{FormatError, Reader, Writer, read_file, write_atomic};

use crate::analyzer::AnalyzerConfig;
use crate::error::{Bm25Error, Result};
use crate::index::{Bm25, Method, Params, SavedDoc};

const MAGIC: &[u8; 12] = b"IMESDE-BM25\n";
/// Version 2 added the analyzer's `word_parts` flag; version 1 files were made without them.
/// Version 3 added `fold` (bit 1 of the same byte); version 2 files were made without it.
/// Version 4 is version 3 with method code 4 (BM25L), written only for BM25L: a build that
/// cannot score it says the file is of a newer format, not damaged, and other files stay
/// readable by builds that read version 3.
const VERSION: u32 = 3;
const VERSION_BM25L: u32 = 4;

fn io_error(path: &Path, source: std::io::Error) -> Bm25Error {
    Bm25Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Bm25 {
    /// Writes the index to `path` atomically: a temporary file in the same folder, flushed to
    /// disk, then renamed over `path`.
    ///
    /// # Errors
    /// [`Bm25Error::Io`] when the folder is not writable.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()).map_err(|e| io_error(path, e))
    }

    /// The index as the bytes of its file (see [`Bm25::save`]).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let p = self.params();
        let version = match p.method {
            Method::Bm25L { .. } => VERSION_BM25L,
            _ => VERSION,
        };
        let mut w = Writer::new(MAGIC, version);
        w.f32(p.k1);
        w.f32(p.b);
        let (code, delta) = match p.method {
            Method::Lucene => (0u8, 0.0),
            Method::Robertson => (1, 0.0),
            Method::Atire => (2, 0.0),
            Method::Bm25Plus { delta } => (3, delta),
            Method::Bm25L { delta } => (4, delta),
        };
        w.u8(code);
        w.f32(delta);
        let a = self.analyzer().config();
        w.str(a.stemmer.as_deref().unwrap_or(""));
        w.u32(a.stopwords.len() as u32);
        for s in &a.stopwords {
            w.str(s);
        }
        w.u8(u8::from(a.word_parts) | (u8::from(a.fold) << 1));
        let (terms, docs) = self.export();
        w.u32(terms.len() as u32);
        for t in terms {
            w.str(t);
        }
        w.u32(docs.len() as u32);
        for (id, len, doc_terms) in docs {
            w.u64(id);
            w.u32(len);
            w.u32(doc_terms.len() as u32);
            for &(t, tf) in doc_terms {
                w.u32(t);
                w.u32(tf);
            }
        }
        w.finish()
    }

    /// Reads an index written by [`Bm25::save`].
    ///
    /// # Errors
    /// [`Bm25Error::Io`] when the file cannot be read, [`Bm25Error::Corrupt`] when it is not an
    /// index of this version or fails its checksum or structure checks.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = read_file(path).map_err(|e| io_error(path, e))?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses bytes made by [`Bm25::to_bytes`], checked as a file is; `path` names the source
    /// in errors.
    ///
    /// # Errors
    /// [`Bm25Error::Corrupt`] when they are not a whole, unmodified index of this version.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let corrupt = |reason: String| Bm25Error::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let (params, analyzer, terms, docs) = read_body(bytes).map_err(|e| corrupt(e.0))?;
        Self::import(params, analyzer, terms, docs).map_err(|e| match e {
            Bm25Error::Config(reason) => corrupt(reason),
            other => other,
        })
    }
}

/// What a file holds: parameters, analyzer, terms, documents.
type Body = (
    Params,
    AnalyzerConfig,
    Vec<String>,
    Vec<SavedDoc<Vec<(u32, u32)>>>,
);

fn read_body(bytes: &[u8]) -> std::result::Result<Body, FormatError> {
    let bad = |reason: &str| Err(FormatError(reason.into()));
    let mut r = Reader::open(bytes, MAGIC, &[1, 2, VERSION, VERSION_BM25L])?;
    let (k1, b) = (r.f32()?, r.f32()?);
    let code = r.u8()?;
    let delta = r.f32()?;
    let method = match code {
        0 => Method::Lucene,
        1 => Method::Robertson,
        2 => Method::Atire,
        3 => Method::Bm25Plus { delta },
        4 if r.version() == VERSION_BM25L => Method::Bm25L { delta },
        other => return bad(&format!("unknown method code {other}")),
    };
    let stemmer = Some(r.str()?).filter(|s| !s.is_empty());
    let n = r.count(4)?;
    let stopwords = (0..n)
        .map(|_| r.str())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let (word_parts, fold) = match r.version() {
        1 => (false, false),
        2 => match r.u8()? {
            0 => (false, false),
            1 => (true, false),
            other => return bad(&format!("unknown word-parts flag {other}")),
        },
        _ => match r.u8()? {
            flags @ 0..=3 => (flags & 1 != 0, flags & 2 != 0),
            other => return bad(&format!("unknown analyzer flags {other}")),
        },
    };
    let n_terms = r.count(4)?;
    let terms = (0..n_terms)
        .map(|_| r.str())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // A repeated term would map to one entry and leave the other's postings unreachable.
    let mut distinct = std::collections::HashSet::with_capacity(n_terms);
    if let Some(t) = terms.iter().find(|t| !distinct.insert(t.as_str())) {
        return bad(&format!("the term {t:?} appears twice in the dictionary"));
    }
    let n_docs = r.count(16)?;
    let mut docs = Vec::with_capacity(n_docs);
    let mut seen = std::collections::HashSet::with_capacity(n_docs);
    for _ in 0..n_docs {
        let id = r.u64()?;
        let len = r.u32()?;
        let n = r.count(8)?;
        let mut doc_terms = Vec::with_capacity(n);
        let mut total = 0u64;
        for _ in 0..n {
            let (t, tf) = (r.u32()?, r.u32()?);
            if t as usize >= n_terms || tf == 0 {
                return bad("a document names a term that does not exist");
            }
            total += u64::from(tf);
            doc_terms.push((t, tf));
        }
        doc_terms.sort_unstable();
        if total != u64::from(len) || doc_terms.windows(2).any(|w| w[0].0 == w[1].0) {
            return bad("a document's term counts do not add up");
        }
        if len == u32::MAX {
            // The index marks removed documents with this length.
            return bad("a document is longer than an index can hold");
        }
        if !seen.insert(id) {
            return bad(&format!("document {id} appears twice"));
        }
        docs.push((id, len, doc_terms));
    }
    r.finish()?;
    let params = Params { k1, b, method };
    let analyzer = AnalyzerConfig {
        stemmer,
        stopwords,
        word_parts,
        fold,
    };
    Ok((params, analyzer, terms, docs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A saved document: id, length, (term, tf) pairs.
    type Doc<'a> = (u64, u32, &'a [(u32, u32)]);

    /// An index file of version 1 with the default parameters, no analyzer options, and
    /// `terms` / `docs` as given (a valid checksum: only the structure checks can refuse it).
    fn file(terms: &[&str], docs: &[Doc<'_>]) -> Vec<u8> {
        let mut w = Writer::new(MAGIC, 1);
        w.f32(1.2);
        w.f32(0.75);
        w.u8(0);
        w.f32(0.0);
        w.str("");
        w.u32(0);
        w.u32(terms.len() as u32);
        for t in terms {
            w.str(t);
        }
        w.u32(docs.len() as u32);
        for (id, len, pairs) in docs {
            w.u64(*id);
            w.u32(*len);
            w.u32(pairs.len() as u32);
            for (t, tf) in *pairs {
                w.u32(*t);
                w.u32(*tf);
            }
        }
        w.finish()
    }

    fn load(bytes: &[u8]) -> Result<Bm25> {
        let (params, analyzer, terms, docs) = read_body(bytes).map_err(|e| Bm25Error::Corrupt {
            path: "x".into(),
            reason: e.0,
        })?;
        Bm25::import(params, analyzer, terms, docs)
    }

    #[test]
    fn forged_dictionaries_and_lengths_are_refused() {
        let ok = load(&file(
            &["nfs", "client"],
            &[(1, 3, &[(0, 2), (1, 1)]), (2, 1, &[(1, 1)])],
        ))
        .unwrap();
        assert_eq!(ok.search("nfs", 10, 0.0).len(), 1);
        // Its terms were made with words kept whole; so are its queries', and its next file says so.
        assert!(!ok.analyzer().config().word_parts);
        assert!(!ok.analyzer().config().fold);
        let again = load(&ok.to_bytes()).unwrap();
        assert!(!again.analyzer().config().word_parts);
        assert!(!again.analyzer().config().fold);
        assert!(
            load(
                &Bm25::new(Params::default(), AnalyzerConfig::default())
                    .unwrap()
                    .to_bytes()
            )
            .unwrap()
            .analyzer()
            .config()
            .word_parts
        );
        // A version 2 file (parts, no folding) loads as it was made.
        let v2 = Bm25::new(
            Params::default(),
            AnalyzerConfig {
                fold: false,
                ..AnalyzerConfig::default()
            },
        )
        .unwrap()
        .to_bytes();
        let loaded = load(&v2).unwrap();
        assert!(loaded.analyzer().config().word_parts && !loaded.analyzer().config().fold);
        // Any k: capped at the number of documents before anything is allocated.
        assert_eq!(ok.search("client", usize::MAX, 0.0).len(), 2);
        assert_eq!(ok.search_terms(["client"], usize::MAX, 0.0).len(), 2);
        // "nfs" twice: the second entry's postings would be unreachable.
        let e = load(&file(
            &["nfs", "nfs"],
            &[(1, 1, &[(0, 1)]), (2, 1, &[(1, 1)])],
        ))
        .err()
        .unwrap();
        assert!(e.to_string().contains("twice"), "{e}");
        // A length that means "removed" inside the index.
        let e = load(&file(&["nfs"], &[(1, u32::MAX, &[(0, u32::MAX)])]))
            .err()
            .unwrap();
        assert!(e.to_string().contains("longer"), "{e}");
        // The largest length an index can hold is searchable.
        let big = load(&file(&["nfs"], &[(1, u32::MAX - 1, &[(0, u32::MAX - 1)])])).unwrap();
        assert_eq!(big.search("nfs", 10, 0.0).len(), 1);
    }
}
