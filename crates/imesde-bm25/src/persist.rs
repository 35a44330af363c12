//! `save` / `load`: a versioned binary file with a CRC-32 over everything before it.
//!
//! Layout (little-endian): `b"IMESDE-BM25\n"`, `u32` version (1), then `f32` k1, `f32` b,
//! `u8` method (0 lucene, 1 robertson, 2 atire, 3 bm25+), `f32` delta, the analyzer (a string:
//! stemmer language or empty; `u32` count + strings: stop words), `u32` count + strings: terms,
//! `u32` count of documents, each `u64` id, `u32` length, `u32` count + (`u32` term, `u32` tf),
//! and last the `u32` CRC-32 of all preceding bytes. A string is a `u32` byte length + UTF-8.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::analyzer::AnalyzerConfig;
use crate::error::{Bm25Error, Result};
use crate::index::{Bm25, Method, Params};

const MAGIC: &[u8; 12] = b"IMESDE-BM25\n";
const VERSION: u32 = 1;

struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f32(&mut self, v: f32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl Reader<'_> {
    fn corrupt(&self, reason: impl Into<String>) -> Bm25Error {
        Bm25Error::Corrupt {
            path: self.path.to_path_buf(),
            reason: reason.into(),
        }
    }
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(self.corrupt(format!("truncated at byte {}", self.pos)));
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn str(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.corrupt("a string is not UTF-8"))
    }
    /// A count of items of at least `min_size` bytes each, checked against what is left.
    fn count(&mut self, min_size: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size) > self.bytes.len() - self.pos {
            return Err(self.corrupt(format!("a count of {n} exceeds the file")));
        }
        Ok(n)
    }
}

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
        let mut w = Writer(Vec::new());
        w.0.extend_from_slice(MAGIC);
        w.u32(VERSION);
        let p = self.params();
        w.f32(p.k1);
        w.f32(p.b);
        let (code, delta) = match p.method {
            Method::Lucene => (0u8, 0.0),
            Method::Robertson => (1, 0.0),
            Method::Atire => (2, 0.0),
            Method::Bm25Plus { delta } => (3, delta),
        };
        w.0.push(code);
        w.f32(delta);
        let a = self.analyzer().config();
        w.str(a.stemmer.as_deref().unwrap_or(""));
        w.u32(a.stopwords.len() as u32);
        for s in &a.stopwords {
            w.str(s);
        }
        let (terms, docs) = self.export();
        w.u32(terms.len() as u32);
        for t in terms {
            w.str(t);
        }
        w.u32(docs.len() as u32);
        for (id, len, doc_terms) in docs {
            w.0.extend_from_slice(&id.to_le_bytes());
            w.u32(len);
            w.u32(doc_terms.len() as u32);
            for &(t, tf) in doc_terms {
                w.u32(t);
                w.u32(tf);
            }
        }
        let crc = crc32fast::hash(&w.0);
        w.u32(crc);
        write_atomic(path, &w.0)
    }

    /// Reads an index written by [`Bm25::save`].
    ///
    /// # Errors
    /// [`Bm25Error::Io`] when the file cannot be read, [`Bm25Error::Corrupt`] when it is not an
    /// index of this version or fails its checksum or structure checks.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
        let corrupt = |reason: &str| Bm25Error::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        };
        if bytes.len() < MAGIC.len() + 8 || &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt("not an imesde BM25 index (bad magic bytes)"));
        }
        let version = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(corrupt(&format!(
                "format version {version}, this imesde reads {VERSION}"
            )));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
        if crc32fast::hash(body) != stored {
            return Err(corrupt("checksum mismatch (truncated or modified)"));
        }
        let mut r = Reader {
            bytes: body,
            pos: 16,
            path,
        };
        let (k1, b) = (r.f32()?, r.f32()?);
        let code = r.u8()?;
        let delta = r.f32()?;
        let method = match code {
            0 => Method::Lucene,
            1 => Method::Robertson,
            2 => Method::Atire,
            3 => Method::Bm25Plus { delta },
            other => return Err(r.corrupt(format!("unknown method code {other}"))),
        };
        let stemmer = Some(r.str()?).filter(|s| !s.is_empty());
        let n = r.count(4)?;
        let stopwords = (0..n).map(|_| r.str()).collect::<Result<Vec<_>>>()?;
        let n_terms = r.count(4)?;
        let terms = (0..n_terms).map(|_| r.str()).collect::<Result<Vec<_>>>()?;
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
                    return Err(r.corrupt("a document names a term that does not exist"));
                }
                total += u64::from(tf);
                doc_terms.push((t, tf));
            }
            doc_terms.sort_unstable();
            if total != u64::from(len) || doc_terms.windows(2).any(|w| w[0].0 == w[1].0) {
                return Err(r.corrupt("a document's term counts do not add up"));
            }
            if !seen.insert(id) {
                return Err(r.corrupt(format!("document {id} appears twice")));
            }
            docs.push((id, len, doc_terms));
        }
        if r.pos != body.len() {
            return Err(r.corrupt("trailing bytes"));
        }
        let params = Params { k1, b, method };
        Self::import(params, AnalyzerConfig { stemmer, stopwords }, terms, docs).map_err(
            |e| match e {
                Bm25Error::Config(reason) => Bm25Error::Corrupt {
                    path: path.to_path_buf(),
                    reason,
                },
                other => other,
            },
        )
    }
}

/// Temp file in the destination folder, fsync, rename: readers see the old or the new file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        io_error(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
        )
    })?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp: PathBuf = dir.join(tmp_name);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        #[cfg(unix)]
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_error(path, e)
    })
}
