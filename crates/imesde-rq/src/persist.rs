//! Codebook files: the `imesde-format` frame (magic `b"IMESDE-RQ\n"`, `u32` version 2, body,
//! `u32` CRC-32 of all preceding bytes) around this little-endian body:
//!
//! ```text
//! u32 dim
//! u32 n_levels
//! f32 scale (a power of two)
//! per level:  u32 k, u8 has_bias (0 | 1),
//!             k * dim f32 codewords (row-major), then k f32 biases if has_bias
//! ```
//!
//! Codewords are stored divided by the scale and biases by its square (the model's own
//! units, so data of any finite magnitude round-trips). Version 1 had no scale field and the
//! data's units; it still loads. Only the values are stored; squared norms are recomputed on
//! load with the fixed-order kernel, so a loaded model encodes bit-identically to the one that
//! was saved, on any machine.

use std::path::Path;

use imesde_format::{Reader, Writer, read_file, write_atomic};

use crate::error::{Result, RqError};
use crate::rq::RqKMeans;

const MAGIC: &[u8; 10] = b"IMESDE-RQ\n";
const VERSION: u32 = 2;

impl RqKMeans {
    /// The file's bytes (see the module docs for the layout).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(MAGIC, VERSION);
        w.u32(self.dim as u32);
        w.u32(self.levels.len() as u32);
        w.f32(self.scale());
        for cb in &self.levels {
            w.u32(cb.k as u32);
            w.u8(u8::from(!cb.bias.is_empty()));
            w.f32s(&cb.centroids);
            w.f32s(&cb.bias);
        }
        w.finish()
    }

    /// Parses bytes made by [`RqKMeans::to_bytes`]; `path` names the source in errors.
    ///
    /// # Errors
    /// [`RqError::Corrupt`] when the bytes are not a whole, unmodified codebook file of a
    /// version this build reads.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let corrupt = |e: imesde_format::FormatError| RqError::Corrupt {
            path: path.to_path_buf(),
            reason: e.0,
        };
        let mut r = Reader::open(bytes, MAGIC, &[1, VERSION]).map_err(corrupt)?;
        let dim = r.u32().map_err(corrupt)? as usize;
        let nl = r.count(5).map_err(corrupt)?;
        let scale = if r.version() >= 2 {
            Some(r.f32().map_err(corrupt)?)
        } else {
            None
        };
        if dim == 0 || nl == 0 {
            return Err(corrupt(imesde_format::FormatError(
                "zero dimension or no levels".into(),
            )));
        }
        let mut books = Vec::with_capacity(nl);
        for _ in 0..nl {
            let k = r.count(dim * 4).map_err(corrupt)?;
            let has_bias = r.u8().map_err(corrupt)?;
            if has_bias > 1 || k == 0 {
                return Err(corrupt(imesde_format::FormatError(
                    "malformed level header".into(),
                )));
            }
            let c = r.f32s(k * dim).map_err(corrupt)?;
            let b = if has_bias == 1 {
                r.f32s(k).map_err(corrupt)?
            } else {
                Vec::new()
            };
            books.push((c, b));
        }
        r.finish().map_err(corrupt)?;
        match scale {
            Some(scale) => RqKMeans::from_scaled(dim, scale, books),
            None => RqKMeans::from_codebooks(dim, books),
        }
        .map_err(|e| RqError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Writes the codebooks atomically (temp file, fsync, rename).
    ///
    /// # Errors
    /// [`RqError::Io`] when the file cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()).map_err(|source| RqError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads codebooks written by [`RqKMeans::save`].
    ///
    /// # Errors
    /// [`RqError::Io`] when the file cannot be read, [`RqError::Corrupt`] as in
    /// [`RqKMeans::from_bytes`].
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = read_file(path).map_err(|source| RqError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FitConfig;

    #[test]
    fn version_1_files_in_the_data_units_still_load() {
        let dim = 6;
        let x: Vec<f32> = (0..600)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 3.0)
            .collect();
        let cfg = FitConfig {
            n_clusters: vec![4, 4],
            balanced: true,
            ..FitConfig::default()
        };
        let (m, _) = RqKMeans::fit(&x, dim, &cfg).unwrap();
        let mut w = Writer::new(MAGIC, 1);
        w.u32(dim as u32);
        w.u32(m.levels().len() as u32);
        for cb in m.levels() {
            w.u32(cb.len() as u32);
            w.u8(1);
            w.f32s(&cb.centroids());
            w.f32s(&cb.bias());
        }
        let old = RqKMeans::from_bytes(&w.finish(), Path::new("v1")).unwrap();
        assert_eq!(old.encode(&x, 1).unwrap(), m.encode(&x, 1).unwrap());
        assert_eq!(old, m);
    }
}

#[cfg(test)]
mod forged {
    use std::path::Path;

    use imesde_format::Writer;

    use super::{MAGIC, VERSION};
    use crate::error::RqError;
    use crate::rq::RqKMeans;

    /// A well-formed file (valid checksum) of one level of two 4-dim codewords, all `value`.
    fn file(scale: f32, value: f32) -> Vec<u8> {
        let mut w = Writer::new(MAGIC, VERSION);
        w.u32(4);
        w.u32(1);
        w.f32(scale);
        w.u32(2);
        w.u8(0);
        w.f32s(&[value; 8]);
        w.finish()
    }

    #[test]
    fn codewords_without_finite_distances_are_corrupt() {
        let at = Path::new("<bytes>");
        let ok = RqKMeans::from_bytes(&file(2f32.powi(100), 0.5), at).unwrap();
        assert_eq!(ok.encode(&[1.0; 4], 1).unwrap(), [0]);
        for (scale, value) in [
            (1.0, 3e38),
            (2f32.powi(100), 3e38),
            (2f32.powi(120), 2f32.powi(100)),
        ] {
            assert!(
                matches!(
                    RqKMeans::from_bytes(&file(scale, value), at),
                    Err(RqError::Corrupt { .. })
                ),
                "scale {scale:e}, codewords {value:e}"
            );
        }
    }
}
