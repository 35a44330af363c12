//! What the ONNX file says about the model before ONNX Runtime runs it: the number of token
//! positions its position embeddings have. A `max_length` beyond it would fail inside the
//! graph (an out-of-range `Gather`) on the first long text, or ask attention for memory
//! quadratic in a length the model was never made for.
//!
//! The file is a protobuf `ModelProto`; only the graph's initializers' names and shapes are
//! read (their data is skipped with seeks), so scanning a 90 MB model takes microseconds of
//! parsing and a few hundred reads.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::Path;

/// The protobuf wire types this scanner meets.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

/// `ModelProto.graph`, `GraphProto.initializer`, `TensorProto.dims` and `.name`.
const MODEL_GRAPH: u64 = 7;
const GRAPH_INITIALIZER: u64 = 5;
const TENSOR_DIMS: u64 = 1;
const TENSOR_NAME: u64 = 8;

struct Scanner<R> {
    r: R,
    pos: u64,
}

impl<R: Read + Seek> Scanner<R> {
    fn byte(&mut self) -> io::Result<u8> {
        let mut b = [0u8; 1];
        self.r.read_exact(&mut b)?;
        self.pos += 1;
        Ok(b[0])
    }

    fn varint(&mut self) -> io::Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "varint too long",
        ))
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        let n = i64::try_from(n).map_err(|_| io::ErrorKind::InvalidData)?;
        self.r.seek_relative(n)?;
        self.pos += n as u64;
        Ok(())
    }

    /// Skips the value of a field of `wire` type.
    fn skip_value(&mut self, wire: u64) -> io::Result<()> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.skip(8),
            LEN => {
                let n = self.varint()?;
                self.skip(n)
            }
            FIXED32 => self.skip(4),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unknown wire type",
            )),
        }
    }

    /// Calls `field(self, number, wire)` for each field until `end`; `field` returns whether it
    /// consumed the value (otherwise it is skipped).
    fn fields(
        &mut self,
        end: u64,
        field: &mut dyn FnMut(&mut Self, u64, u64) -> io::Result<bool>,
    ) -> io::Result<()> {
        while self.pos < end {
            let key = self.varint()?;
            let (number, wire) = (key >> 3, key & 7);
            if number == 0 {
                // No protobuf field has number 0: not a model (a zero-filled file would
                // otherwise be read a byte at a time, as fields 0 of one byte each).
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a field numbered 0",
                ));
            }
            if !field(self, number, wire)? {
                self.skip_value(wire)?;
            }
        }
        Ok(())
    }

    /// A `TensorProto`'s name and dims (its data is skipped).
    fn tensor(&mut self, end: u64) -> io::Result<(String, Vec<u64>)> {
        let (mut name, mut dims) = (String::new(), Vec::new());
        self.fields(end, &mut |s, number, wire| match (number, wire) {
            (TENSOR_DIMS, VARINT) => {
                dims.push(s.varint()?);
                Ok(true)
            }
            (TENSOR_DIMS, LEN) => {
                let stop = s.varint()? + s.pos;
                while s.pos < stop {
                    dims.push(s.varint()?);
                }
                Ok(true)
            }
            (TENSOR_NAME, LEN) => {
                let n = s.varint()?;
                if n > 4096 {
                    s.skip(n)?;
                    return Ok(true);
                }
                let mut buf = vec![0u8; n as usize];
                s.r.read_exact(&mut buf)?;
                s.pos += n;
                name = String::from_utf8_lossy(&buf).into_owned();
                Ok(true)
            }
            _ => Ok(false),
        })?;
        Ok((name, dims))
    }
}

/// Whether an initializer called `name` holds position embeddings: the names of Hugging Face
/// exports (`embeddings.position_embeddings.weight`, and the `_q` / `_scale` parts a
/// quantiser makes of it) and of `imesde model build` (`pos_emb`).
fn is_position_table(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    // `pos_emb` with the numbered suffix the graphs of `imesde model build` give constants.
    name.contains("position_embeddings")
        || name.strip_prefix("pos_emb").is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .strip_prefix('_')
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// The number of positions of the model's position-embedding table (`[positions, hidden]`),
/// or `None` when the file has no initializer recognisable as one (the caller then has no
/// limit to check against).
///
/// # Errors
/// The file cannot be read or is not a protobuf.
pub fn position_limit(path: &Path) -> io::Result<Option<usize>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut s = Scanner {
        r: BufReader::with_capacity(1 << 16, file),
        pos: 0,
    };
    let mut limit: Option<u64> = None;
    s.fields(len, &mut |s, number, wire| {
        if (number, wire) != (MODEL_GRAPH, LEN) {
            return Ok(false);
        }
        let end = s.varint()? + s.pos;
        s.fields(end, &mut |s, number, wire| {
            if (number, wire) != (GRAPH_INITIALIZER, LEN) {
                return Ok(false);
            }
            let end = s.varint()? + s.pos;
            let (name, dims) = s.tensor(end)?;
            if dims.len() == 2 && dims[0] > 0 && is_position_table(&name) {
                limit = Some(limit.map_or(dims[0], |l| l.min(dims[0])));
            }
            Ok(true)
        })?;
        Ok(true)
    })?;
    Ok(limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX)))
}

#[cfg(test)]
mod position_names {
    use super::is_position_table;

    #[test]
    fn a_zero_filled_file_is_not_a_model() {
        // Field 0 does not exist: refused at the first byte, not read a byte at a time.
        let path = std::env::temp_dir().join(format!("imesde-zeros-{}.onnx", std::process::id()));
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        let e = super::position_limit(&path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        assert!(e.to_string().contains("numbered 0"), "{e}");
    }

    #[test]
    fn position_tables_by_name() {
        for name in [
            "embeddings.position_embeddings.weight",
            "pos_emb",
            "pos_emb_9",
            "POS_EMB_12",
        ] {
            assert!(is_position_table(name), "{name}");
        }
        for name in [
            "pos_embx",
            "pos_emb_a",
            "word_emb_7",
            "type_emb_11",
            "positions",
        ] {
            assert!(!is_position_table(name), "{name}");
        }
    }
}
