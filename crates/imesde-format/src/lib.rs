//! The framing every imesde file shares: a magic line, a `u32` version, a little-endian body,
//! and a CRC-32 of everything before it. [`Writer`] builds a file in memory, [`write_atomic`]
//! puts it on disk (temp file in the same folder, fsync, rename), [`Reader`] checks magic,
//! version and checksum before handing out a single value, and every read is bounds-checked,
//! so a truncated or tampered file is an error, never a panic or a wrong result.

#![warn(missing_docs)]
// Every `Reader` method fails the same way (a `FormatError` saying where the file is short or
// malformed), documented once on `Reader`.
#![allow(clippy::missing_errors_doc)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// A `u8`.
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    /// A `u32` (little-endian).
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// A `u64` (little-endian).
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// A `f32` (little-endian).
    pub fn f32(&mut self, v: f32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// A `f64` (little-endian).
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
    /// The next `u8`; an error past the end.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    /// The next `u32` (little-endian); an error past the end.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    /// The next `u64` (little-endian); an error past the end.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    /// The next `f32` (little-endian); an error past the end.
    pub fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    /// The next `f64` (little-endian); an error past the end.
    pub fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    /// The next string: a `u32` byte length and UTF-8 bytes ([`Writer::str`]).
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

/// Suffix that marks a temporary file of [`write_atomic`]: `{name}.tmp-{pid}-{n}`.
const TMP_MARK: &str = ".tmp-";

/// Distinguishes the temporary files of concurrent saves within one process.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The file that writing to `path` must replace: `path` itself, or where its chain of
/// symbolic links ends (so a link stays a link and its target is written). Refuses a path
/// that exists and is not a regular file (a directory, a device, a FIFO, a socket).
fn target_of(path: &Path) -> io::Result<PathBuf> {
    let mut target = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&target) {
            Ok(md) if md.file_type().is_symlink() => {
                let link = std::fs::read_link(&target)?;
                target = match target.parent() {
                    Some(dir) if link.is_relative() => dir.join(link),
                    _ => link,
                };
            }
            Ok(md) if md.is_file() => return Ok(target),
            Ok(_) => {
                return Err(invalid(format!(
                    "{} is not a regular file (a directory, device or pipe): refusing to replace it",
                    target.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(target),
            Err(e) => return Err(e),
        }
    }
    Err(invalid(format!(
        "{}: too many levels of symbolic links",
        path.display()
    )))
}

/// Writes `bytes` to `path` so that readers see the old file or the new one, whole, never a
/// mix: a temporary file in the same folder (named uniquely per call, so concurrent saves to
/// one path never share one; the last rename wins), flushed to disk, then renamed over the
/// target. A symbolic link is written through (the link stays); a target that exists and is
/// not a regular file is refused. Temporary files that a killed save left beside the target
/// are removed first (on Unix: those whose writer no longer holds their lock).
///
/// # Errors
/// An I/O error, or `InvalidInput` for a path without a file name or a target that is not a
/// regular file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let target = target_of(path)?;
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .ok_or_else(|| invalid(format!("{}: not a file path", path.display())))?
        .to_os_string();
    remove_stale_temporaries(dir, &name);
    let (tmp, mut file) = create_temporary(dir, &name)?;
    let result = (|| {
        if let Ok(md) = std::fs::metadata(&target) {
            // The new file keeps the permissions of the one it replaces.
            let _ = file.set_permissions(md.permissions());
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        #[cfg(unix)]
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    drop(file);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A new temporary file for `name` in `dir`, created exclusively and, on Unix, locked for as
/// long as it is open (the lock tells [`remove_stale_temporaries`] that its writer lives).
fn create_temporary(dir: &Path, name: &std::ffi::OsStr) -> io::Result<(PathBuf, File)> {
    loop {
        let mut tmp_name = name.to_os_string();
        tmp_name.push(format!(
            "{TMP_MARK}{}-{}",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = dir.join(tmp_name);
        let file = match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => f,
            // Left by an earlier process with this pid: take the next number.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        #[cfg(unix)]
        {
            lock::exclusive(&file)?;
            // A cleaner may have taken the file for stale between its creation and the lock.
            if lock::unlinked(&file)? {
                continue;
            }
        }
        return Ok((tmp, file));
    }
}

/// Removes `{name}.tmp-{pid}-{n}` files in `dir` left by saves that died. A file of this
/// process may belong to a save running on another thread, so only other processes' files
/// whose lock can be taken (no writer holds it) are removed.
fn remove_stale_temporaries(dir: &Path, name: &std::ffi::OsStr) {
    #[cfg(unix)]
    {
        let mut prefix = name.to_os_string();
        prefix.push(TMP_MARK);
        let (Some(prefix), Ok(entries)) = (prefix.to_str(), std::fs::read_dir(dir)) else {
            return;
        };
        let own = format!("{prefix}{}-", std::process::id());
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(n) = file_name.to_str() else {
                continue;
            };
            if !n.starts_with(prefix) || n.starts_with(&own) {
                continue;
            }
            let path = entry.path();
            let Ok(f) = OpenOptions::new().read(true).open(&path) else {
                continue;
            };
            if lock::try_exclusive(&f) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (dir, name);
}

#[cfg(unix)]
mod lock {
    use std::fs::File;
    use std::io;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;

    pub(super) fn exclusive(f: &File) -> io::Result<()> {
        loop {
            // SAFETY: flock on a descriptor this `File` owns for the duration of the call.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Takes the lock if no other open file holds it.
    pub(super) fn try_exclusive(f: &File) -> bool {
        // SAFETY: as in `exclusive`.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
    }

    /// Whether the file has no name left.
    pub(super) fn unlinked(f: &File) -> io::Result<bool> {
        Ok(f.metadata()?.nlink() == 0)
    }
}

/// The bytes of the regular file `path`. A directory, device, FIFO or socket is refused
/// (reading one could block forever or never end) with an `InvalidInput` error.
///
/// # Errors
/// An I/O error, or `InvalidInput` for a file that is not a regular file.
pub fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    // Opening a FIFO for reading blocks until a writer comes: look before opening.
    let md = std::fs::metadata(path)?;
    if !md.is_file() {
        return Err(invalid(format!(
            "{} is not a regular file (a directory, device or pipe)",
            path.display()
        )));
    }
    let mut file = File::open(path)?;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(md.len() as usize).map_err(|_| {
        io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!("{}: {} bytes cannot be allocated", path.display(), md.len()),
        )
    })?;
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
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

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("imesde-format-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = scratch("replace");
        let p = dir.join("f.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(read_file(&p).unwrap(), b"two");
        assert_eq!(names(&dir), ["f.bin"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_saves_to_one_path_leave_one_whole_file() {
        let dir = scratch("race");
        let p = dir.join("f.bin");
        let contents: Vec<Vec<u8>> = (0..8u8)
            .map(|t| vec![t; 200_000 + usize::from(t)])
            .collect();
        std::thread::scope(|s| {
            for c in &contents {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_atomic(p, c).unwrap();
                    }
                });
            }
            // A reader always sees one writer's whole file.
            s.spawn(|| {
                for _ in 0..200 {
                    if let Ok(b) = read_file(&p) {
                        assert!(contents.contains(&b), "a torn file of {} bytes", b.len());
                    }
                }
            });
        });
        assert!(contents.contains(&read_file(&p).unwrap()));
        assert_eq!(names(&dir), ["f.bin"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn stale_temporaries_of_dead_saves_are_removed_and_live_ones_kept() {
        let dir = scratch("stale");
        let p = dir.join("f.bin");
        // Left by a killed process: nobody holds its lock.
        std::fs::write(dir.join("f.bin.tmp-999999999-3"), b"half").unwrap();
        // Held by a save in progress in another process (simulated by a lock held here on a
        // foreign-looking name) and one of this process: both stay.
        let busy = dir.join("f.bin.tmp-999999998-0");
        let held = File::create(&busy).unwrap();
        lock::exclusive(&held).unwrap();
        let own = dir.join(format!("f.bin.tmp-{}-77", std::process::id()));
        std::fs::write(&own, b"").unwrap();
        std::fs::write(dir.join("other.bin.tmp-999999999-1"), b"").unwrap();
        write_atomic(&p, b"new").unwrap();
        let own_name = own.file_name().unwrap().to_string_lossy().into_owned();
        let mut expect = vec![
            "f.bin".to_owned(),
            "f.bin.tmp-999999998-0".to_owned(),
            own_name,
            "other.bin.tmp-999999999-1".to_owned(),
        ];
        expect.sort();
        assert_eq!(names(&dir), expect);
        drop(held);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_target_that_is_not_a_regular_file_is_refused() {
        let dir = scratch("special");
        let sub = dir.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let e = write_atomic(&sub, b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(sub.is_dir());
        assert_eq!(
            read_file(&sub).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        #[cfg(unix)]
        {
            // A device of its own (never a system one: a wrong answer here would replace it).
            let device = dir.join("null");
            let c = std::ffi::CString::new(device.to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path; creating a device node needs root.
            if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) } == 0 {
                assert_eq!(
                    write_atomic(&device, b"x").unwrap_err().kind(),
                    io::ErrorKind::InvalidInput
                );
                assert_eq!(
                    read_file(&device).unwrap_err().kind(),
                    io::ErrorKind::InvalidInput
                );
                let md = std::fs::symlink_metadata(&device).unwrap();
                assert!(!md.is_file());
            }
            let fifo = dir.join("fifo");
            let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            // Reading a FIFO with no writer would block forever.
            assert_eq!(
                read_file(&fifo).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
            assert_eq!(
                write_atomic(&fifo, b"x").unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_is_written_through() {
        let dir = scratch("link");
        let real = dir.join("real.bin");
        std::fs::write(&real, b"old").unwrap();
        let link = dir.join("link.bin");
        std::os::unix::fs::symlink("real.bin", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(read_file(&real).unwrap(), b"new");
        // A dangling link creates its target.
        let dangling = dir.join("dangling.bin");
        std::os::unix::fs::symlink("later.bin", &dangling).unwrap();
        write_atomic(&dangling, b"made").unwrap();
        assert_eq!(read_file(&dir.join("later.bin")).unwrap(), b"made");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
