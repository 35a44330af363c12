//! Every backend this CPU supports, checked against a float64 / integer reference for every
//! dimension from 1 to 1,100 and for inputs that start at unaligned addresses.

use imesde_simd::packed::PackedRows;
use imesde_simd::{Backend, Kernels, quant, top_k};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn i8(&mut self) -> i8 {
        // The full range, -128 included: the kernels must be exact for any int8 input.
        (self.next() >> 56) as u8 as i8
    }
    // Query codes at the widest range the int8 kernels accept for dimensions up to 1,032.
    fn i16q(&mut self) -> i16 {
        ((self.next() >> 48) % 32_767) as i16 - 16_383
    }
}

fn ref_dot(a: &[f32], b: &[f32]) -> (f64, f64) {
    let exact: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    let mag: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) * f64::from(y)).abs())
        .sum();
    (exact, mag)
}

fn close(got: f32, (exact, mag): (f64, f64)) -> bool {
    (f64::from(got) - exact).abs() <= 1e-5 * mag + 1e-6
}

fn backends() -> Vec<&'static Kernels> {
    let b: Vec<_> = Backend::supported()
        .into_iter()
        .filter_map(Kernels::get)
        .collect();
    assert!(!b.is_empty());
    b
}

#[test]
fn dot_f32_every_dim_and_offset() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let buf_a: Vec<f32> = (0..1200).map(|_| rng.f32()).collect();
    let buf_b: Vec<f32> = (0..1200).map(|_| rng.f32()).collect();
    for k in backends() {
        for dim in 1..=1100 {
            for (oa, ob) in [(0, 0), (1, 3), (3, 2)] {
                let (a, b) = (&buf_a[oa..oa + dim], &buf_b[ob..ob + dim]);
                let got = k.dot_f32(a, b);
                assert!(
                    close(got, ref_dot(a, b)),
                    "{:?} dim={dim} off=({oa},{ob})",
                    k.backend()
                );
            }
        }
    }
}

#[test]
fn dot_i8_every_dim_and_offset_is_exact() {
    let mut rng = Rng(42);
    let buf_a: Vec<i8> = (0..1200).map(|_| rng.i8()).collect();
    let buf_b: Vec<i8> = (0..1200).map(|_| rng.i8()).collect();
    for k in backends() {
        for dim in 1..=1100 {
            for (oa, ob) in [(0, 0), (1, 5), (7, 2)] {
                let (a, b) = (&buf_a[oa..oa + dim], &buf_b[ob..ob + dim]);
                let want: i32 = a
                    .iter()
                    .zip(b)
                    .map(|(&x, &y)| i32::from(x) * i32::from(y))
                    .sum();
                assert_eq!(k.dot_i8(a, b), want, "{:?} dim={dim}", k.backend());
            }
        }
    }
}

#[test]
fn scans_every_dim_rows_and_queries() {
    let mut rng = Rng(7);
    let fbuf: Vec<f32> = (0..70 * 1101 + 8).map(|_| rng.f32()).collect();
    let qbuf: Vec<f32> = (0..19 * 1101 + 8).map(|_| rng.f32()).collect();
    let ibuf: Vec<i8> = (0..70 * 1101 + 8).map(|_| rng.i8()).collect();
    let q16buf: Vec<i16> = (0..19 * 1101 + 8).map(|_| rng.i16q()).collect();
    for k in backends() {
        for dim in 1..=1100 {
            // Row and query counts that exercise full tiles and every remainder (up to 19
            // queries: a 12-wide tile, a 4-wide one and singles; 70 rows: several row blocks
            // and a ragged one); offsets make the starts unaligned.
            let n = match dim % 16 {
                0 => 70,
                r if r % 2 == 0 => 9,
                _ => 6,
            };
            let nq = 1 + dim % 19;
            let off = dim % 5;
            let rows = &fbuf[off..off + n * dim];
            let qs = &qbuf[off..off + nq * dim];
            let mut out = vec![0.0f32; nq * n];
            k.scan_multi_f32(qs, nq, rows, &mut out);
            let mut single = vec![0.0f32; n];
            for j in 0..nq {
                let q = &qs[j * dim..(j + 1) * dim];
                k.scan_f32(q, rows, &mut single);
                for r in 0..n {
                    let want = ref_dot(q, &rows[r * dim..(r + 1) * dim]);
                    assert!(
                        close(out[j * n + r], want),
                        "{:?} multi dim={dim}",
                        k.backend()
                    );
                    assert!(close(single[r], want), "{:?} scan dim={dim}", k.backend());
                }
            }

            let rows8 = &ibuf[off..off + n * dim];
            let qs16 = &q16buf[off..off + nq * dim];
            let mut out8 = vec![0i32; nq * n];
            k.scan_multi_i8(qs16, nq, rows8, &mut out8);
            let mut single8 = vec![0i32; n];
            for j in 0..nq {
                let q = &qs16[j * dim..(j + 1) * dim];
                k.scan_i8(q, rows8, &mut single8);
                for r in 0..n {
                    let want: i32 = q
                        .iter()
                        .zip(&rows8[r * dim..(r + 1) * dim])
                        .map(|(&a, &b)| i32::from(a) * i32::from(b))
                        .sum();
                    assert_eq!(
                        out8[j * n + r],
                        want,
                        "{:?} multi i8 dim={dim}",
                        k.backend()
                    );
                    assert_eq!(single8[r], want, "{:?} scan i8 dim={dim}", k.backend());
                }
            }
        }
    }
}

fn int_dot(q: impl Iterator<Item = i32>, x: &[i8]) -> i32 {
    q.zip(x).map(|(a, &b)| a * i32::from(b)).sum()
}

#[test]
fn packed_scan_every_dim_rows_and_queries() {
    let mut rng = Rng(0x5851_F42D_4C95_7F2D);
    let wide: Vec<i16> = (0..15 * 1101 + 8).map(|_| rng.i16q()).collect();
    // Codes within -127..=127 (the byte kernel's range), both ends included.
    let narrow: Vec<i16> = (0..15 * 1101 + 8)
        .map(|_| (rng.next() % 255) as i16 - 127)
        .collect();
    let ibuf: Vec<i8> = (0..70 * 1101 + 8).map(|_| rng.i8()).collect();
    for (dim, qbuf) in (1..=1100).flat_map(|d| [(d, &wide), (d, &narrow)]) {
        // Rows over whole and partial blocks of 16 (a group of four blocks, then single ones);
        // up to 15 queries (6-wide and 8-wide tiles and single ones); unaligned starts.
        let n = [1, 15, 16, 17, 64, 70][dim % 6];
        let nq = 1 + dim % 15;
        let off = dim % 5;
        let queries = &qbuf[off..off + nq * dim];
        let rows = &ibuf[off..off + n * dim];
        let packed = PackedRows::new(rows, dim);
        assert_eq!((packed.len(), packed.dim(), packed.rows()), (n, dim, rows));
        for k in backends() {
            let mut out = vec![0i32; nq * n];
            k.scan_packed_i8(queries, nq, &packed, &mut out);
            for (j, q) in queries.chunks_exact(dim).enumerate() {
                for r in 0..n {
                    let want = int_dot(q.iter().map(|&v| i32::from(v)), &rows[r * dim..][..dim]);
                    assert_eq!(out[j * n + r], want, "{:?} dim={dim} n={n}", k.backend());
                }
            }
        }
    }
}

#[test]
fn packed_byte_scan_is_exact_at_its_limits() {
    // The byte kernel's extremes: codes of +-127 against rows of -128 and 127 at the largest
    // dimension, where the unsigned sums come closest to 2^31.
    for dim in [3, 384, quant::MAX_I8_DIM] {
        let rows = [vec![-128i8; dim], vec![127i8; dim]].concat();
        let packed = PackedRows::new(&rows, dim);
        let queries = [vec![127i16; dim], vec![-127i16; dim]].concat();
        for k in backends() {
            let mut out = vec![0i32; 4];
            k.scan_packed_i8(&queries, 2, &packed, &mut out);
            let d = dim as i32;
            assert_eq!(
                out,
                [-127 * 128 * d, 127 * 127 * d, 127 * 128 * d, -127 * 127 * d]
            );
            assert!(k.packed_query_max_code(dim) <= quant::query_max_code(dim));
        }
    }
}

#[test]
fn narrow_scan_every_dim_and_offset() {
    let mut rng = Rng(0xA076_1D64_78BD_642F);
    let qbuf: Vec<f32> = (0..17 * 1101 + 8).map(|_| rng.f32()).collect();
    let ibuf: Vec<i8> = (0..70 * 1101 + 8).map(|_| rng.i8()).collect();
    for dim in 1..=1100 {
        // Up to 17 queries (two 6-wide tiles, a 4-wide, a 2-wide and a single), rows over
        // several row blocks now and then, unaligned starts.
        let n = if dim % 16 == 0 { 70 } else { 5 };
        let nq = 1 + dim % 17;
        let off = dim % 5;
        let queries = quant::NarrowQueries::new(&qbuf[off..off + nq * dim], dim);
        let rows = &ibuf[off..off + n * dim];
        for k in backends() {
            let mut out = vec![0i32; nq * n];
            k.scan_multi_narrow(&queries, rows, &mut out);
            for (j, q) in queries.codes().chunks_exact(dim).enumerate() {
                for r in 0..n {
                    let want = int_dot(q.iter().map(|&v| i32::from(v)), &rows[r * dim..][..dim]);
                    assert_eq!(out[j * n + r], want, "{:?} dim={dim}", k.backend());
                }
            }
        }
    }
}

#[test]
fn narrow_scan_is_exact_at_its_int16_limits() {
    // Queries whose codes pile up in one int16 lane, against rows that push every lane's sum
    // to its extreme: all -128, all 127, and the query's own signs.
    let dim = 4 * 384 + 17;
    let flat = vec![-0.5f32; dim];
    let lane: Vec<f32> = (0..dim)
        .map(|i| if i % 32 < 2 { 1.0 } else { 0.0 })
        .collect();
    let mixed: Vec<f32> = (0..dim)
        .map(|i| if i % 3 == 0 { 1.0 } else { -0.9 })
        .collect();
    for x in [flat, lane, mixed] {
        let queries = quant::NarrowQueries::new(&x, dim);
        let q = queries.codes();
        let signs: Vec<i8> = q.iter().map(|&v| if v < 0 { -128 } else { 127 }).collect();
        let rows = [vec![-128i8; dim], vec![127i8; dim], signs].concat();
        for k in backends() {
            let mut out = vec![0i32; 3];
            k.scan_multi_narrow(&queries, &rows, &mut out);
            for r in 0..3 {
                let want = int_dot(q.iter().map(|&v| i32::from(v)), &rows[r * dim..][..dim]);
                assert_eq!(out[r], want, "{:?} row {r}", k.backend());
            }
        }
    }
}

#[test]
fn int8_accumulators_do_not_overflow_at_the_largest_dimension() {
    for dim in [384, 1031, 1032, 4096, quant::MAX_I8_DIM] {
        let qmax = quant::query_max_code(dim);
        let rows = vec![-127i8; dim];
        let q = vec![-qmax; dim];
        let want = 127i64 * i64::from(qmax) * dim as i64;
        assert!(want <= i64::from(i32::MAX), "dim={dim}");
        // A quantised all-equal query really reaches the bound.
        let mut qc = vec![0i16; dim];
        quant::quantize_query(&vec![-0.5f32; dim], &mut qc);
        assert_eq!(qc, q);
        for k in backends() {
            let mut out = [0i32];
            k.scan_i8(&q, &rows, &mut out);
            assert_eq!(i64::from(out[0]), want, "{:?} dim={dim}", k.backend());
        }
    }
}

#[test]
fn quantised_scan_tracks_the_float_score() {
    let mut rng = Rng(99);
    let dim = 384;
    let x: Vec<f32> = (0..dim).map(|_| rng.f32()).collect();
    let q: Vec<f32> = (0..dim).map(|_| rng.f32()).collect();
    let mut codes = vec![0i8; dim];
    let sx = quant::quantize_i8(&x, &mut codes);
    let mut qc = vec![0i16; dim];
    let sq = quant::quantize_query(&q, &mut qc);
    let exact = ref_dot(&x, &q).0;
    let mut out = [0i32];
    Kernels::best().scan_i8(&qc, &codes, &mut out);
    let approx = f64::from(out[0] as f32 * sx * sq);
    // Half a quantisation step per component, summed over |q|.
    let bound: f64 = q.iter().map(|v| f64::from(v.abs())).sum::<f64>() * f64::from(sx) * 0.51;
    assert!(
        (approx - exact).abs() <= bound,
        "{approx} vs {exact} (bound {bound})"
    );
}

#[test]
fn best_backend_is_supported_and_top_k_is_reexported() {
    assert!(Kernels::best().backend().is_supported());
    assert_eq!(top_k(&[0.1, 0.9, 0.5], 2), vec![(1, 0.9), (2, 0.5)]);
}

#[test]
fn fixed_order_scan_is_bit_identical_on_every_backend() {
    let mut rng = Rng(0xF1CE);
    let fbuf: Vec<f32> = (0..9 * 1101 + 8).map(|_| rng.f32()).collect();
    let qbuf: Vec<f32> = (0..6 * 1101 + 8).map(|_| rng.f32()).collect();
    let scalar = Kernels::get(Backend::Scalar).unwrap();
    let others: Vec<_> = backends()
        .into_iter()
        .filter(|k| k.backend() != Backend::Scalar)
        .collect();
    for dim in 1..=1100 {
        let (n, nq) = (if dim % 2 == 0 { 9 } else { 6 }, 1 + dim % 6);
        let off = dim % 5;
        let rows = &fbuf[off..off + n * dim];
        let qs = &qbuf[off..off + nq * dim];
        let mut want = vec![0.0f32; nq * n];
        scalar.scan_multi_f32_fixed(qs, nq, rows, &mut want);
        for j in 0..nq {
            for r in 0..n {
                let exact = ref_dot(&qs[j * dim..(j + 1) * dim], &rows[r * dim..(r + 1) * dim]);
                assert!(close(want[j * n + r], exact), "scalar fixed dim={dim}");
            }
        }
        for k in &others {
            let mut got = vec![0.0f32; nq * n];
            k.scan_multi_f32_fixed(qs, nq, rows, &mut got);
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{:?} fixed scan differs from scalar at dim={dim}",
                k.backend()
            );
        }
    }
}

/// The gathered fixed-order dot products equal the batched fixed-order scan bit for bit, for
/// every dimension, any index order (repeats included) and every count (whole quads and the
/// remainder), on every backend.
#[test]
fn fixed_order_gather_matches_the_fixed_scan() {
    let mut rng = Rng(0x6A7E);
    let n = 11;
    let fbuf: Vec<f32> = (0..n * 1101 + 8).map(|_| rng.f32()).collect();
    let qbuf: Vec<f32> = (0..1101 + 8).map(|_| rng.f32()).collect();
    let scalar = Kernels::get(Backend::Scalar).unwrap();
    for dim in 1..=1100 {
        let off = dim % 5;
        let rows = &fbuf[off..off + n * dim];
        let q = &qbuf[off..off + dim];
        let mut want = vec![0.0f32; n];
        scalar.scan_multi_f32_fixed(q, 1, rows, &mut want);
        let count = dim % 10;
        let idx: Vec<u32> = (0..count).map(|t| ((t * 7 + dim) % n) as u32).collect();
        for k in backends() {
            let mut got = vec![f32::NAN; count];
            k.dots_f32_fixed_gather(q, rows, &idx, &mut got);
            for (t, &j) in idx.iter().enumerate() {
                assert_eq!(
                    got[t].to_bits(),
                    want[j as usize].to_bits(),
                    "{:?} gather dim={dim} t={t}",
                    k.backend()
                );
            }
        }
    }
}

#[test]
fn normalize_l2_gives_unit_vectors_at_any_finite_magnitude() {
    for scale in [1e-40f32, 1e-30, 1.0, 1e20, 1e30, 5e37] {
        let mut x: Vec<f32> = (0..384)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * scale)
            .collect();
        let norm = imesde_simd::normalize_l2(&mut x);
        assert!(norm.is_finite() && norm > 0.0, "{scale}");
        let len = x
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        assert!((len - 1.0).abs() < 1e-5, "{scale}: length {len}");
    }
    let mut zero = [0.0f32; 4];
    assert!(imesde_simd::normalize_l2(&mut zero) <= 0.0);
    assert!(zero.iter().all(|v| v.to_bits() == 0));
}
