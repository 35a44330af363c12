//! Snapshots: the whole ring as bytes, taken consistently while ingestion goes on, and a ring
//! rebuilt from them bit for bit (same slots, same vectors, so the same search results).
//!
//! Layout, inside the `imesde-format` frame (magic `b"IMESDE-RING\n"`, `u32` version 4, body,
//! `u32` CRC-32), little-endian:
//!
//! ```text
//! u32 dim, u32 num_shards, u32 shard_size, u8 storage (0 f32, 1 int8, 2 binary), u64 next_id,
//! str tag (the caller's, e.g. the model's identity), u64 item count, then per item:
//!   u64 id, f64 ts, the stored vector (dim f32, or dim i8 + f32 scale + ceil(dim / 2) bytes
//!   of 4-bit residual; binary storage: the int8 form, then ceil(dim / 64) u64 of sign bits),
//!   u8 has_text [str text], u32 metadata pairs (str key, value)...
//! u64 items ever deleted
//! ```
//! A string is a `u32` byte length and UTF-8. A value is a `u8` kind and its payload: 0 str,
//! 1 i64, 2 f64, 3 bool (u8), 4 list (u32 length, then scalar values). Version 2 stored every
//! value as a string; version 1 is version 2 without the residual (its int8 vectors load with
//! a zero residual). Versions 1-3 lack the deleted count: it loads as the window's ids not
//! held. All still load.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use imesde_format::{FormatError, Reader, Writer};
use imesde_simd::{binary, quant};

use crate::item::{meta_bytes, text_bytes};
use crate::ring::{MAX_IDS, Ring, RingConfig, Shard, Storage, Vectors, is_live};
use crate::{Metadata, RingError, Value};

const MAGIC: &[u8; 12] = b"IMESDE-RING\n";
const VERSION: u32 = 4;

fn write_value(w: &mut Writer, v: &Value) {
    match v {
        Value::Str(s) => {
            w.u8(0);
            w.str(s);
        }
        Value::Int(i) => {
            w.u8(1);
            w.u64(*i as u64);
        }
        Value::Float(f) => {
            w.u8(2);
            w.f64(*f);
        }
        Value::Bool(b) => {
            w.u8(3);
            w.u8(u8::from(*b));
        }
        Value::List(xs) => {
            w.u8(4);
            w.u32(xs.len() as u32);
            for x in xs {
                write_value(w, x);
            }
        }
    }
}

/// A value written by [`write_value`]; a list only at the top (`list_ok`).
fn read_value(r: &mut Reader<'_>, list_ok: bool) -> Result<Value, RingError> {
    let bad = |e: FormatError| RingError::Snapshot(e.0);
    let invalid = |m: &str| RingError::Snapshot(m.to_string());
    Ok(match r.u8().map_err(bad)? {
        0 => Value::from(r.str().map_err(bad)?),
        1 => Value::Int(r.u64().map_err(bad)? as i64),
        2 => {
            let f = r.f64().map_err(bad)?;
            if !f.is_finite() {
                return Err(invalid("a metadata value is not a finite number"));
            }
            Value::Float(f)
        }
        3 => match r.u8().map_err(bad)? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            _ => return Err(invalid("bad metadata bool")),
        },
        4 if list_ok => {
            let n = r.count(1).map_err(bad)?;
            let xs = (0..n)
                .map(|_| read_value(r, false))
                .collect::<Result<Vec<_>, _>>()?;
            Value::from(xs)
        }
        _ => return Err(invalid("bad metadata value kind")),
    })
}

impl Ring {
    /// The ring as bytes (see the module docs), with `tag` stored for the caller. Writers wait
    /// only while the shards are copied; the snapshot holds whole batches.
    #[must_use]
    pub fn snapshot(&self, tag: &str) -> Vec<u8> {
        self.snapshot_as(tag, VERSION)
    }

    /// [`Ring::snapshot`] in the layout of `version` (1: int8 vectors without residual).
    fn snapshot_as(&self, tag: &str, version: u32) -> Vec<u8> {
        let cfg = self.config();
        let dim = cfg.dim;
        let mut w = Writer::new(MAGIC, version);
        w.u32(dim as u32);
        w.u32(cfg.num_shards as u32);
        w.u32(cfg.shard_size as u32);
        w.u8(match cfg.storage {
            Storage::F32 => 0,
            Storage::Int8 => 1,
            Storage::Binary => 2,
        });
        // No batch is half written while the gate is held exclusively; the shard read locks
        // then keep the copy still.
        let gate = self.gate.write();
        let next_id = self.next_id.load(Ordering::Acquire);
        let shards: Vec<_> = self.shards.iter().map(|s| s.read()).collect();
        let deleted = self.deleted.load(Ordering::Relaxed);
        drop(gate);
        w.u64(next_id);
        w.str(tag);
        let held: u64 = shards.iter().map(|s| s.len as u64).sum();
        w.u64(held);
        let floor = next_id.saturating_sub(self.capacity() as u64);
        for id in floor..next_id {
            let (s, slot) = self.slot_of(id);
            let shard: &Shard = &shards[s];
            if shard.id_at(slot) != id {
                continue;
            }
            w.u64(id);
            w.f64(shard.ts[slot]);
            match &shard.vectors {
                Vectors::F32(v) => w.f32s(&v[slot * dim..(slot + 1) * dim]),
                Vectors::Int8 {
                    codes,
                    scales,
                    residuals,
                    bits,
                } => {
                    let c = &codes[slot * dim..(slot + 1) * dim];
                    w.bytes(&c.iter().map(|&x| x as u8).collect::<Vec<u8>>());
                    w.f32(scales[slot]);
                    if version >= 2 {
                        let rb = quant::residual_bytes(dim);
                        w.bytes(&residuals[slot * rb..(slot + 1) * rb]);
                    }
                    if !bits.is_empty() {
                        let mut row = vec![0u64; binary::words(dim)];
                        binary::get_row(bits, slot, &mut row);
                        for &b in &row {
                            w.u64(b);
                        }
                    }
                }
            }
            match &shard.texts[slot] {
                Some(t) => {
                    w.u8(1);
                    w.str(t);
                }
                None => w.u8(0),
            }
            match &shard.meta[slot] {
                Some(m) => {
                    w.u32(m.len() as u32);
                    for (k, v) in m.iter() {
                        w.str(k);
                        if version >= 3 {
                            write_value(&mut w, v);
                        } else {
                            // Versions 1 and 2 held strings only (kept for the tests).
                            w.str(&v.as_str().map_or_else(|| v.to_string(), str::to_owned));
                        }
                    }
                }
                None => w.u32(0),
            }
        }
        drop(shards);
        if version >= 4 {
            w.u64(deleted);
        }
        w.finish()
    }

    /// The tag stored in [`Ring::snapshot`] bytes, read without rebuilding the ring.
    ///
    /// # Errors
    /// [`RingError::Snapshot`] when the bytes are not a whole, unmodified snapshot.
    pub fn snapshot_tag(bytes: &[u8]) -> Result<String, RingError> {
        let bad = |e: FormatError| RingError::Snapshot(e.0);
        let mut r = Reader::open(bytes, MAGIC, &[1, 2, 3, VERSION]).map_err(bad)?;
        // dim, shards, size (u32 each), storage (u8), next id (u64), then the tag.
        r.bytes(3 * 4 + 1 + 8).map_err(bad)?;
        r.str().map_err(bad)
    }

    /// A ring rebuilt from [`Ring::snapshot`] bytes, and the tag stored with them.
    ///
    /// # Errors
    /// [`RingError::Snapshot`] when the bytes are not a whole, unmodified snapshot of a version
    /// this build reads, or describe an impossible ring.
    pub fn from_snapshot(bytes: &[u8]) -> Result<(Ring, String), RingError> {
        let bad = |e: FormatError| RingError::Snapshot(e.0);
        let invalid = |m: &str| RingError::Snapshot(m.to_string());
        let mut r = Reader::open(bytes, MAGIC, &[1, 2, 3, VERSION]).map_err(bad)?;
        let has_residual = r.version() >= 2;
        let typed = r.version() >= 3;
        let mut keys = crate::KeyInterner::default();
        let dim = r.u32().map_err(bad)? as usize;
        let num_shards = r.u32().map_err(bad)? as usize;
        let shard_size = r.u32().map_err(bad)? as usize;
        let storage = match r.u8().map_err(bad)? {
            0 => Storage::F32,
            1 => Storage::Int8,
            2 if r.version() >= 3 => Storage::Binary,
            _ => return Err(invalid("unknown storage code")),
        };
        let next_id = r.u64().map_err(bad)?;
        let tag = r.str().map_err(bad)?;
        let held = r.u64().map_err(bad)?;
        let cfg = RingConfig {
            dim,
            num_shards,
            shard_size,
            storage,
        };
        if dim == 0 || num_shards == 0 || shard_size == 0 {
            return Err(invalid("a zero ring dimension"));
        }
        if next_id > MAX_IDS {
            return Err(invalid("the next id is beyond the id range"));
        }
        let capacity = (num_shards as u64).saturating_mul(shard_size as u64);
        // Every item takes at least 21 bytes: refuse counts the file cannot hold before
        // allocating the ring.
        if held > capacity || held.saturating_mul(21 + dim as u64) > bytes.len() as u64 {
            return Err(invalid("the item count does not fit the ring or the file"));
        }
        let ring = Ring::create(cfg, false).map_err(|e| match e {
            // An allocation refused is no sign of damage: a CapacityError in Python.
            RingError::Capacity { .. } => e,
            e => RingError::Snapshot(e.to_string()),
        })?;
        ring.next_id.store(next_id, Ordering::Release);
        let floor = next_id.saturating_sub(capacity);
        let mut last: Option<u64> = None;
        // Slots up to an item's are written as it is placed: a forged file of a few items
        // at the ends of large shards would make a small file take the whole ring. What they
        // take is held to the memory free now.
        let slot_bytes = cfg.slot_bytes();
        let free = crate::memory_available().unwrap_or(u128::MAX);
        let mut touched: u128 = 0;
        for _ in 0..held {
            let id = r.u64().map_err(bad)?;
            if id < floor || id >= next_id || last.is_some_and(|l| id <= l) {
                return Err(invalid("item ids out of order or outside the ring"));
            }
            last = Some(id);
            let ts = r.f64().map_err(bad)?;
            // What ingest takes (a forged 1e308 loaded, searched and saved again).
            if crate::check_timestamp(ts, String::new).is_err() {
                return Err(invalid("a timestamp is not a time of the years 1 to 9999"));
            }
            let (s, slot) = ring.slot_of(id);
            let mut shard = ring.shards[s].write();
            touched += (slot + 1).saturating_sub(shard.ids.len()) as u128 * slot_bytes;
            if touched > free {
                return Err(RingError::LoadMemory {
                    bytes: touched,
                    free,
                });
            }
            shard.ensure(slot, dim);
            match &mut shard.vectors {
                Vectors::F32(v) => {
                    let x = r.f32s(dim).map_err(bad)?;
                    // Stored vectors are unit length: scores are cosines in [-1, 1].
                    let norm = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
                    if !(norm - 1.0).abs().lt(&1e-3) {
                        return Err(invalid("a vector is not finite and of unit length"));
                    }
                    v[slot * dim..(slot + 1) * dim].copy_from_slice(&x);
                }
                Vectors::Int8 {
                    codes,
                    scales,
                    residuals,
                    bits,
                } => {
                    let c = r.bytes(dim).map_err(bad)?;
                    // Codes are symmetric, -127..=127: the scan kernels' sums are bounded by
                    // it (a -128 from a forged file could overflow them into a wrong score).
                    if c.iter().any(|&b| b as i8 == i8::MIN) {
                        return Err(invalid("a vector's codes are outside -127..=127"));
                    }
                    for (dst, &b) in codes[slot * dim..(slot + 1) * dim].iter_mut().zip(c) {
                        *dst = b as i8;
                    }
                    let scale = r.f32().map_err(bad)?;
                    // The codes of a unit vector: within rounding (half a step per value) of
                    // length 1.
                    let coarse = f64::from(scale)
                        * c.iter()
                            .map(|&b| f64::from(b as i8).powi(2))
                            .sum::<f64>()
                            .sqrt();
                    let slack = 0.5 * f64::from(scale) * (dim as f64).sqrt() + 1e-3;
                    // A unit vector's largest value is at most 1: its code 127, its scale at
                    // most 1 / 127 (a larger one would widen the slack to anything).
                    let unit_scale = f64::from(scale) <= (1.0 + 1e-5) / 127.0;
                    if !(scale.is_finite()
                        && scale > 0.0
                        && unit_scale
                        && (coarse - 1.0).abs() <= slack)
                    {
                        return Err(invalid("a vector's codes are not of unit length"));
                    }
                    scales[slot] = scale;
                    let rb = quant::residual_bytes(dim);
                    let dst = &mut residuals[slot * rb..(slot + 1) * rb];
                    if has_residual {
                        dst.copy_from_slice(r.bytes(rb).map_err(bad)?);
                    } else {
                        dst.fill(0);
                    }
                    if storage == Storage::Binary {
                        let mut row = vec![0u64; binary::words(dim)];
                        for b in &mut row {
                            *b = r.u64().map_err(bad)?;
                        }
                        // Padding bits would count as disagreeing signs in every distance.
                        if !dim.is_multiple_of(64) && row[row.len() - 1] >> (dim % 64) != 0 {
                            return Err(invalid("a vector's sign bits set padding bits"));
                        }
                        // The bits are the signs of the values the codes round: a code that
                        // is not 0 fixes its bit (the candidates a search picks by the bits
                        // would otherwise not be the codes' vector's).
                        let agree = c.iter().enumerate().all(|(i, &b)| {
                            let code = b as i8;
                            code == 0 || (code > 0) == (row[i / 64] >> (i % 64) & 1 == 1)
                        });
                        if !agree {
                            return Err(invalid("a vector's sign bits disagree with its codes"));
                        }
                        binary::put_row(bits, slot, &row);
                    }
                }
            }
            let text: Option<Arc<str>> = match r.u8().map_err(bad)? {
                0 => None,
                1 => Some(r.str().map_err(bad)?.into()),
                _ => return Err(invalid("bad text flag")),
            };
            let pairs = r.count(8).map_err(bad)?;
            let meta = if pairs == 0 {
                None
            } else {
                let mut kv = Vec::with_capacity(pairs);
                for _ in 0..pairs {
                    let key = r.str().map_err(bad)?;
                    // One allocation per distinct key, shared by the items (as ingest does).
                    let key = keys.intern(&key);
                    let value = if typed {
                        read_value(&mut r, true)?
                    } else {
                        Value::from(r.str().map_err(bad)?)
                    };
                    kv.push((key, value));
                }
                let meta = Metadata::new(kv);
                // Ingest keeps one value per key; a forged repeat would be dropped unseen.
                if meta.len() != pairs {
                    return Err(invalid("a metadata key repeats"));
                }
                Some(meta)
            };
            shard.payload_bytes += text_bytes(text.as_ref()) + meta_bytes(meta.as_ref());
            shard.ids[slot] = id;
            shard.ts[slot] = ts;
            shard.texts[slot] = text;
            shard.meta[slot] = meta;
            shard.len += 1;
            shard.high = shard.high.max(slot + 1);
        }
        // Versions 1-3: the window's ids not held were deleted (older ones may have been too).
        let deleted = if r.version() >= 4 {
            r.u64().map_err(bad)?
        } else {
            (next_id - floor).saturating_sub(held)
        };
        if deleted > next_id.saturating_sub(held) {
            return Err(invalid("the deleted count does not fit the items held"));
        }
        ring.deleted.store(deleted, Ordering::Relaxed);
        r.finish().map_err(bad)?;
        debug_assert!(ring.shards.iter().all(|s| {
            let s = s.read();
            s.ids[..s.high].iter().filter(|&&i| is_live(i)).count() == s.len
        }));
        Ok((ring, tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attributes, Filter};

    #[test]
    fn version_1_int8_snapshots_load_without_residual() {
        let cfg = RingConfig {
            dim: 5,
            num_shards: 2,
            shard_size: 4,
            storage: Storage::Int8,
        };
        let ring = Ring::new(cfg).unwrap();
        let x: Vec<f32> = (0..30).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
        ring.ingest(&x, &Attributes::default()).unwrap();
        let (old, _) = Ring::from_snapshot(&ring.snapshot_as("t", 1)).unwrap();
        let (new, _) = Ring::from_snapshot(&ring.snapshot("t")).unwrap();
        for id in 0..6 {
            let (s, slot) = ring.slot_of(id);
            let shard = ring.shards[s].read();
            let Vectors::Int8 { codes, scales, .. } = &shard.vectors else {
                unreachable!()
            };
            // Version 1 kept the int8 codes only: they come back as they were.
            let mut coarse = vec![0.0; 5];
            quant::dequantize_i8(&codes[slot * 5..slot * 5 + 5], scales[slot], &mut coarse);
            let back = old.get(id).unwrap().vector;
            assert!(back.iter().zip(&coarse).all(|(a, b)| (a - b).abs() < 1e-6));
            assert_eq!(new.get(id), ring.get(id));
        }
        let q = &x[..5];
        let hits = old.search(q, 3, &Filter::default()).unwrap();
        assert_eq!(hits[0].id, 0);
        // Saved again, it is a version 2 snapshot with a zero residual.
        let (again, _) = Ring::from_snapshot(&old.snapshot("t")).unwrap();
        assert_eq!(again.get(3), old.get(3));
    }

    #[test]
    fn the_deleted_count_survives_a_snapshot() {
        let ring = Ring::new(RingConfig {
            dim: 4,
            num_shards: 2,
            shard_size: 4,
            storage: Storage::F32,
        })
        .unwrap();
        let x: Vec<f32> = (0..40).map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0).collect();
        ring.ingest(&x[..24], &Attributes::default()).unwrap();
        // Ids 0 and 1 deleted, then their slots overwritten; id 7 deleted in the window.
        assert_eq!(ring.delete(&[0, 1]), vec![0, 1]);
        ring.ingest(&x[24..], &Attributes::default()).unwrap();
        assert_eq!(ring.delete(&[7]), vec![7]);
        let before = ring.stats();
        assert_eq!((before.deleted, before.len, before.evicted), (3, 7, 0));
        let (back, _) = Ring::from_snapshot(&ring.snapshot("t")).unwrap();
        let after = back.stats();
        assert_eq!(
            (after.deleted, after.evicted, after.len),
            (before.deleted, before.evicted, before.len)
        );
        // Version 3 did not keep it: the window's missing ids are what it can tell.
        let (old, _) = Ring::from_snapshot(&ring.snapshot_as("t", 3)).unwrap();
        assert_eq!((old.stats().deleted, old.stats().len), (1, 7));
        assert_eq!(Ring::snapshot_tag(&ring.snapshot_as("t", 3)).unwrap(), "t");
        assert_eq!(Ring::snapshot_tag(&ring.snapshot("t")).unwrap(), "t");
    }

    #[test]
    fn typed_metadata_round_trips_and_version_2_strings_load() {
        use crate::{Metadata, Predicate, Value};
        let ring = Ring::new(RingConfig {
            dim: 3,
            num_shards: 2,
            shard_size: 4,
            storage: Storage::F32,
        })
        .unwrap();
        let meta = Metadata::new([
            ("s", Value::from("x")),
            ("i", Value::Int(-7)),
            ("f", Value::Float(2.5)),
            ("b", Value::Bool(true)),
            ("l", Value::from(vec![Value::Int(1), Value::from("a")])),
        ]);
        let attrs = Attributes {
            metadata: vec![Some(meta.clone()), None],
            ..Attributes::default()
        };
        ring.ingest(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], &attrs)
            .unwrap();
        let (back, _) = Ring::from_snapshot(&ring.snapshot("t")).unwrap();
        assert_eq!(back.get(0).unwrap().metadata.as_ref(), Some(&meta));
        assert_eq!(back.get(1).unwrap().metadata, None);
        // Version 2 held strings: they load as strings and filter as strings.
        let (old, _) = Ring::from_snapshot(&ring.snapshot_as("t", 2)).unwrap();
        let m = old.get(0).unwrap().metadata.unwrap();
        assert_eq!(m.get("s"), Some(&Value::from("x")));
        assert_eq!(m.get("i"), Some(&Value::from("-7")));
        let f = Filter::matching(Predicate::eq("i", "-7"));
        assert_eq!(old.search(&[1.0, 0.0, 0.0], 2, &f).unwrap().len(), 1);
    }

    fn small_ring(storage: Storage) -> Ring {
        let ring = Ring::new(RingConfig {
            dim: 4,
            num_shards: 2,
            shard_size: 8,
            storage,
        })
        .unwrap();
        let x: Vec<f32> = (0..20).map(|i| (i as f32 * 0.37).sin() + 0.1).collect();
        ring.ingest(&x, &Attributes::default()).unwrap();
        ring
    }

    /// A snapshot whose body was changed by `edit` (offsets past the 16-byte header), with
    /// its checksum made valid again: only the structure checks can catch it.
    fn forged(bytes: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut body = bytes[..bytes.len() - 4].to_vec();
        edit(&mut body);
        let crc = crc32fast::hash(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        body
    }

    /// Offset of the first item's vector: magic 12, version 4, dim, shards, size 12,
    /// storage 1, next id 8, tag (4 + len), count 8, id 8, ts 8.
    fn first_vector(tag: &str) -> usize {
        12 + 4 + 12 + 1 + 8 + 4 + tag.len() + 8 + 8 + 8
    }

    #[test]
    fn forged_snapshots_with_a_valid_checksum_are_refused() {
        for storage in [Storage::F32, Storage::Int8] {
            let ring = small_ring(storage);
            let bytes = ring.snapshot("t");
            assert!(Ring::from_snapshot(&bytes).is_ok());
            // An untouched copy passes, so each failure below is the edit's.
            assert!(Ring::from_snapshot(&forged(&bytes, |_| ())).is_ok());
            let at = first_vector("t");
            // A vector scaled up: it would score far outside [-1, 1].
            let scaled = forged(&bytes, |b| {
                // f32: the first value; int8: the scale after the codes.
                let s = if storage == Storage::F32 { at } else { at + 4 };
                let v = f32::from_le_bytes(b[s..s + 4].try_into().unwrap());
                b[s..s + 4].copy_from_slice(&(v * 1e6 + 3.0).to_le_bytes());
            });
            let e = Ring::from_snapshot(&scaled).unwrap_err();
            assert!(e.to_string().contains("unit length"), "{e}");
            if storage == Storage::Int8 {
                // Codes and a scale that a coarse length check lets through (within its
                // slack of half a step per value), of a vector of length 2.
                let long = forged(&bytes, |b| {
                    b[at..at + 4].copy_from_slice(&[2, 0, 0, 0]);
                    b[at + 4..at + 8].copy_from_slice(&1.0f32.to_le_bytes());
                });
                let e = Ring::from_snapshot(&long).unwrap_err();
                assert!(e.to_string().contains("unit length"), "{e}");
            }
            // A next id at the end of the id range: ingestion could not go on.
            let next = forged(&bytes, |b| {
                b[29..37].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
            });
            let e = Ring::from_snapshot(&next).unwrap_err();
            assert!(e.to_string().contains("id range"), "{e}");
            // More items deleted than were ever ingested and not held.
            let deleted = forged(&bytes, |b| {
                // The count is the last 8 bytes before the checksum.
                let end = b.len();
                b[end - 8..].copy_from_slice(&u64::MAX.to_le_bytes());
            });
            let e = Ring::from_snapshot(&deleted).unwrap_err();
            assert!(e.to_string().contains("deleted count"), "{e}");
        }
    }

    #[test]
    fn a_snapshot_of_a_large_empty_ring_loads_without_touching_its_slots() {
        // 2^24 slots of 64 dims is 4 GiB of f32 reserved; none of it is written, so loading
        // costs what the items do.
        let ring = Ring::new(RingConfig {
            dim: 64,
            num_shards: 1 << 8,
            shard_size: 1 << 16,
            storage: Storage::F32,
        })
        .unwrap();
        let bytes = ring.snapshot("");
        assert!(bytes.len() < 100);
        let (back, _) = Ring::from_snapshot(&bytes).unwrap();
        assert!(back.shards.iter().all(|s| s.read().ids.is_empty()));
        assert_eq!(back.capacity(), 1 << 24);
    }

    #[test]
    fn ids_stop_before_the_range_ends() {
        let ring = small_ring(Storage::F32);
        ring.next_id.store(MAX_IDS - 2, Ordering::Release);
        let x = [1.0f32, 0.0, 0.0, 0.0];
        let e = ring
            .ingest(&[x, x, x].concat(), &Attributes::default())
            .unwrap_err();
        assert!(matches!(e, RingError::IdsExhausted { .. }), "{e}");
        assert_eq!(ring.next_id(), MAX_IDS - 2);
        let ids = ring
            .ingest(&[x, x].concat(), &Attributes::default())
            .unwrap();
        assert_eq!(ids, MAX_IDS - 2..MAX_IDS);
        assert_eq!(ring.get(MAX_IDS - 1).unwrap().id, MAX_IDS - 1);
    }

    #[test]
    fn a_huge_k_is_capped_at_the_capacity() {
        let ring = small_ring(Storage::Int8);
        let q = [1.0f32, 0.5, 0.0, 0.0];
        let hits = ring.search(&q, usize::MAX, &Filter::default()).unwrap();
        assert_eq!(hits.len(), ring.len());
        let batch = ring
            .search_batch(&[q, q].concat(), usize::MAX, &Filter::default())
            .unwrap();
        assert_eq!((batch.nq, batch.k), (2, ring.len()));
    }
}
