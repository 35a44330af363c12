//! The framing every imesde file shares: a magic line, a `u32` version, a little-endian body,
//! and a CRC-32 of everything before it. [`Writer`] builds a file in memory, [`write_atomic`]
//! puts it on disk (temp file in the same folder, fsync, rename), [`Reader`] checks magic,
//! version and checksum before handing out a single value, and every read is bounds-checked,
//! so a truncated or tampered file is an error, never a panic or a wrong result.

// Every `Reader` method fails the same way (a `FormatError` saying where the file is short or
// malformed), documented once on `Reader`.
#![allow(clippy::missing_errors_doc)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why bytes are not a valid file of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError(pub String);

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FormatError {}

/// Builds a file: magic and version first, [`Writer::finish`] appends the checksum.
#[derive(Debug)]
pub struct Writer(Vec<u8>);

impl Writer {
    /// Starts a file with its magic bytes and format version.
    #[must_use]
    pub fn new(magic: &[u8], version: u32) -> Self {
        let mut w = Writer(Vec::with_capacity(1 << 12));
        w.0.extend_from_slice(magic);
        w.u32(version);
        w
    }
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f32(&mut self, v: f32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// A `u32` byte length and the UTF-8 bytes.
    pub fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
    /// The values only; the reader must know how many.
    pub fn f32s(&mut self, v: &[f32]) {
        self.0.reserve(v.len() * 4);
        for x in v {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
    }
    /// Raw bytes; the reader must know how many.
    pub fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    /// The finished file: everything written plus the CRC-32 of it.
    #[must_use]
    pub fn finish(mut self) -> Vec<u8> {
        let crc = crc32fast::hash(&self.0);
        self.u32(crc);
        self.0
    }
}

/// Reads a file built by [`Writer`], after checking its frame. Every read returns a
/// [`FormatError`] when the bytes run out or do not hold what was asked for.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    version: u32,
}

type Result<T> = std::result::Result<T, FormatError>;

fn err<T>(reason: impl Into<String>) -> Result<T> {
    Err(FormatError(reason.into()))
}

impl<'a> Reader<'a> {
    /// Checks the magic, the checksum and that the version is one of `versions`.
    pub fn open(bytes: &'a [u8], magic: &[u8], versions: &[u32]) -> Result<Self> {
        if bytes.len() < magic.len() || &bytes[..magic.len()] != magic {
            return err("wrong magic bytes (not this kind of file)");
        }
        if bytes.len() < magic.len() + 8 {
            return err("truncated header");
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
        if crc32fast::hash(body) != stored {
            return err("checksum mismatch (truncated or modified)");
        }
        let mut r = Reader {
            bytes: body,
            pos: magic.len(),
            version: 0,
        };
        let version = r.u32()?;
        if !versions.contains(&version) {
            return err(format!(
                "format version {version} is not supported (this build reads {versions:?})"
            ));
        }
        r.version = version;
        Ok(r)
    }
    /// The file's format version.
    #[must_use]
    pub fn version(&self) -> u32 {
        self.version
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return err(format!("truncated at byte {}", self.pos));
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    pub fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    pub fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    pub fn str(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| FormatError("a string is not UTF-8".into()))
    }
    /// `n` f32 values.
    pub fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        let Some(len) = n.checked_mul(4) else {
            return err("array length overflows");
        };
        let raw = self.take(len)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
            .collect())
    }
    /// `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        self.take(n)
    }
    /// A `u32` count of items of at least `min_size` bytes each, checked against what is left,
    /// so a corrupted count cannot make the caller allocate gigabytes.
    pub fn count(&mut self, min_size: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size.max(1)) > self.bytes.len() - self.pos {
            return err(format!(
                "count {n} at byte {} exceeds the file",
                self.pos - 4
            ));
        }
        Ok(n)
    }
    /// Errors unless every byte before the checksum was read.
    pub fn finish(self) -> Result<()> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            err(format!(
                "{} unexpected bytes at the end",
                self.bytes.len() - self.pos
            ))
        }
    }
}

/// Temp file in the destination folder, fsync, rename: readers see the old or the new file,
/// never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"))?;
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
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_corruption_is_an_error() {
        let mut w = Writer::new(b"TEST\n", 2);
        w.u8(7);
        w.u64(u64::MAX);
        w.str("héllo");
        w.f32s(&[1.5, -2.0]);
        let bytes = w.finish();
        let mut r = Reader::open(&bytes, b"TEST\n", &[1, 2]).unwrap();
        assert_eq!(r.version(), 2);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u64().unwrap(), u64::MAX);
        assert_eq!(r.str().unwrap(), "héllo");
        assert_eq!(r.f32s(2).unwrap(), vec![1.5, -2.0]);
        r.finish().unwrap();

        assert!(Reader::open(&bytes, b"XXXX\n", &[2]).is_err());
        assert!(Reader::open(&bytes, b"TEST\n", &[1]).is_err());
        for cut in 0..bytes.len() {
            assert!(Reader::open(&bytes[..cut], b"TEST\n", &[2]).is_err());
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(Reader::open(&bad, b"TEST\n", &[2]).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = std::env::temp_dir().join(format!("imesde-format-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
