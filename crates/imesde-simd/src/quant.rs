//! Symmetric quantisation: `x ~= codes * scale`, zero point 0.
//!
//! Stored vectors use int8 codes in `-127..=127` (the value -128 is never produced, so the
//! range is symmetric), plus a 4-bit residual per value: `x ~= (codes + residual / 14) * scale`
//! with `residual` in `-7..=7`, packed two to a byte ([`residual_bytes`]). The residual needs no
//! scale of its own (the int8 rounding error is at most half a step, `7 / 14`), cuts the
//! reconstruction error 14-fold, and is read only to rescore a scan's best candidates
//! ([`unpack_residual`], [`refined_score`]). Queries use wider codes, up to 15 bits (`-16383..=16383`), so the
//! query side adds a small fraction of the stored side's rounding error. The query range
//! shrinks with the dimension ([`query_max_code`]) so that `sum |x_i| |q_i| < 2^31`: no
//! integer accumulator of any kernel can overflow, whatever the inputs.

/// Largest dimension the int8 kernels accept; there the query still has 258 levels.
pub const MAX_I8_DIM: usize = 65_536;

const I8_MAX: f32 = 127.0;

/// The largest query code for vectors of `dim` values: `min(16383, (2^31 - 1) / (127 dim))`.
#[must_use]
pub fn query_max_code(dim: usize) -> i16 {
    let bound = i32::MAX as usize / (127 * dim.max(1));
    bound.min(16_383) as i16
}

/// `y.round()` (half away from zero) for `|y| < 2^23`, without the `roundf` call that
/// `f32::round` becomes on baseline x86-64 (no SSE4.1): a truncating conversion and a
/// comparison, which vectorise.
#[inline]
fn round_small(y: f32) -> f32 {
    let t = y as i32 as f32;
    let frac = y - t;
    t + f32::from(u8::from(frac >= 0.5)) - f32::from(u8::from(frac <= -0.5))
}

/// The largest `|x_i|` (0 for an empty slice; NaN never occurs in checked inputs), in eight
/// independent lanes so it vectorises instead of one serial chain of `max`.
fn abs_max(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (chunks, tail) = x.as_chunks::<8>();
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            let a = v.abs();
            *m = if a > *m { a } else { *m };
        }
    }
    lanes
        .iter()
        .chain(tail)
        .fold(0.0f32, |m, v| if v.abs() > m { v.abs() } else { m })
}

fn quantize_into<T>(x: &[f32], out: &mut [T], max_code: f32, cast: impl Fn(f32) -> T) -> f32 {
    quantize_scaled(x, abs_max(x), out, max_code, cast)
}

/// [`quantize_into`] with `x`'s largest `|x_i|` (`amax`) already known.
fn quantize_scaled<T>(
    x: &[f32],
    amax: f32,
    out: &mut [T],
    max_code: f32,
    cast: impl Fn(f32) -> T,
) -> f32 {
    assert_eq!(x.len(), out.len(), "quantize: length mismatch");
    if amax == 0.0 || !amax.is_finite() {
        for o in out.iter_mut() {
            *o = cast(0.0);
        }
        return 0.0;
    }
    let inv = max_code / amax;
    for (o, v) in out.iter_mut().zip(x) {
        // |v * inv| <= max_code (amax is the largest |v|), far below 2^23.
        *o = cast(round_small(v * inv).clamp(-max_code, max_code));
    }
    amax / max_code
}

/// Quantises `x` into `out` (same length) and returns the scale, so that
/// `x[i] ~= out[i] as f32 * scale`. A zero vector gets scale 0.
pub fn quantize_i8(x: &[f32], out: &mut [i8]) -> f32 {
    quantize_into(x, out, I8_MAX, |v| v as i8)
}

/// Quantises a query for the int8 scan kernels; returns its scale.
pub fn quantize_query(x: &[f32], out: &mut [i16]) -> f32 {
    quantize_into(x, out, f32::from(query_max_code(x.len())), |v| v as i16)
}

/// Steps of 32 values whose products a narrow scan adds up in int16 before widening them
/// to int32 (the AVX2 kernel: `vpmaddubsw` into int16, `vpmaddwd` by ones every so many
/// steps). [`NarrowQueries`] keeps every such partial sum inside int16.
pub const NARROW_GROUP: usize = 4;

/// Largest narrow query code: a `vpmaddubsw` pair `(x + 128) q + (x' + 128) q'` then stays
/// within `255 * 128 < 2^15`.
const NARROW_MAX: i32 = 64;

/// Queries quantised to int8 codes of at most 7 bits for the batched int8 scan
/// ([`crate::Kernels::scan_multi_narrow`]), which multiplies twice as many values per
/// instruction as the 15-bit queries of [`quantize_query`] but keeps partial sums in int16.
/// Each query's scale is chosen so that no partial sum can leave int16 for any stored int8
/// vector: in every group of [`NARROW_GROUP`] 32-value steps, each of the sixteen int16
/// lanes (values `32 t + 2 l` and `32 t + 2 l + 1`) has `128 (|sum q| + sum |q|) < 2^15`
/// (the kernel adds 128 to the stored codes to make them unsigned, and subtracts `128 sum q`
/// afterwards; any int8 code, -128 included, stays within that). Typical unit vectors of 384
/// values keep 50 to 64 levels a side, 30 at worst. Scores are exact integer dot products on
/// every backend.
#[derive(Clone, Debug)]
pub struct NarrowQueries {
    dim: usize,
    codes: Vec<i8>,
    /// The codes widened to int16, made on first use (only backends without a narrow kernel
    /// read them).
    wide: std::sync::OnceLock<Vec<i16>>,
    scales: Vec<f32>,
    offsets: Vec<i32>,
}

impl NarrowQueries {
    /// Quantises the rows of `queries` (`dim` values each).
    ///
    /// # Panics
    /// If `dim` is 0, above [`MAX_I8_DIM`], or does not divide `queries.len()`.
    #[must_use]
    pub fn new(queries: &[f32], dim: usize) -> Self {
        assert!(
            dim > 0 && dim <= MAX_I8_DIM && queries.len().is_multiple_of(dim),
            "NarrowQueries: bad shape"
        );
        let mut codes = vec![0i8; queries.len()];
        let mut scales = Vec::with_capacity(queries.len() / dim);
        let mut offsets = Vec::with_capacity(queries.len() / dim);
        for (x, c) in queries.chunks_exact(dim).zip(codes.chunks_exact_mut(dim)) {
            scales.push(quantize_narrow(x, c));
            let full = dim / 32 * 32;
            offsets.push(128 * c[..full].iter().map(|&v| i32::from(v)).sum::<i32>());
        }
        NarrowQueries {
            dim,
            codes,
            wide: std::sync::OnceLock::new(),
            scales,
            offsets,
        }
    }

    /// Number of queries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.scales.len()
    }

    /// Whether there are no queries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }

    /// Values per query.
    #[must_use]
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Every query's scale: query `j`'s values are about its codes times `scales()[j]`.
    #[must_use]
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// All queries' codes, query after query.
    #[must_use]
    pub fn codes(&self) -> &[i8] {
        &self.codes
    }

    /// The same codes widened to int16, for kernels that take 15-bit queries.
    pub(crate) fn wide(&self) -> &[i16] {
        self.wide
            .get_or_init(|| self.codes.iter().map(|&c| i16::from(c)).collect())
    }

    /// `128 * sum` of each query's codes over its whole 32-value steps.
    pub(crate) fn offsets(&self) -> &[i32] {
        &self.offsets
    }
}

/// The largest int16 partial sum a narrow scan can reach with query codes `c`, over all
/// stored int8 vectors (see [`NarrowQueries`]).
fn narrow_bound(c: &[i8]) -> i32 {
    let (steps, _) = c.as_chunks::<32>();
    let mut worst = 0;
    for group in steps.chunks(NARROW_GROUP) {
        let mut sum = [0i32; 16];
        let mut abs = [0i32; 16];
        for step in group {
            for l in 0..16 {
                let (a, b) = (i32::from(step[2 * l]), i32::from(step[2 * l + 1]));
                sum[l] += a + b;
                abs[l] += a.abs() + b.abs();
            }
        }
        for (s, a) in sum.iter().zip(&abs) {
            worst = worst.max(128 * (s.abs() + a));
        }
    }
    worst
}

/// Quantises `x` to narrow codes (at most [`NARROW_MAX`] a side, fewer when a lane's partial
/// sum could leave int16); returns the scale.
fn quantize_narrow(x: &[f32], out: &mut [i8]) -> f32 {
    let amax = abs_max(x);
    let mut max_code = NARROW_MAX;
    loop {
        let scale = quantize_scaled(x, amax, out, max_code as f32, |v| v as i8);
        let bound = narrow_bound(out);
        if bound <= i32::from(i16::MAX) || max_code == 1 {
            return scale;
        }
        // The bound grows about linearly with the codes.
        let shrunk = (i64::from(max_code) * i64::from(i16::MAX) / i64::from(bound)) as i32;
        max_code = shrunk.clamp(1, max_code - 1);
    }
}

/// Reconstructs `codes * scale` into `out`.
pub fn dequantize_i8(codes: &[i8], scale: f32, out: &mut [f32]) {
    assert_eq!(codes.len(), out.len(), "dequantize: length mismatch");
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = f32::from(c) * scale;
    }
}

/// Levels of the residual per int8 step: residual codes are `-7..=7`.
const RESIDUAL_STEPS: f32 = 14.0;

/// Bytes of the packed 4-bit residual of a `dim`-value vector.
#[must_use]
pub const fn residual_bytes(dim: usize) -> usize {
    dim.div_ceil(2)
}

/// The two's-complement low and high nibbles of a packed residual byte (values `2j` and
/// `2j + 1`): each shifted to the top, then sign-extended back down.
#[inline]
fn nibbles(b: u8) -> (i8, i8) {
    (((b << 4) as i8) >> 4, (b as i8) >> 4)
}

/// Fills `out` ([`residual_bytes`] long) with the 4-bit residual of `x` after its int8
/// quantisation (`codes`, `scale` from [`quantize_i8`]). All zero when `scale` is 0.
pub fn quantize_residual(x: &[f32], codes: &[i8], scale: f32, out: &mut [u8]) {
    assert_eq!(x.len(), codes.len(), "quantize_residual: length mismatch");
    assert_eq!(
        out.len(),
        residual_bytes(x.len()),
        "quantize_residual: output length"
    );
    out.fill(0);
    if scale == 0.0 {
        return;
    }
    let inv = RESIDUAL_STEPS / scale;
    for (i, (&v, &c)) in x.iter().zip(codes).enumerate() {
        let r = ((v - f32::from(c) * scale) * inv).round().clamp(-7.0, 7.0) as i8;
        out[i / 2] |= ((r as u8) & 0x0f) << (4 * (i % 2));
    }
}

/// Unpacks a residual into one `-7..=7` value per vector value (`out`, the vector's length),
/// for the int8 dot-product kernels.
pub fn unpack_residual(packed: &[u8], out: &mut [i8]) {
    assert_eq!(
        packed.len(),
        residual_bytes(out.len()),
        "unpack_residual: length"
    );
    let mut pairs = out.chunks_exact_mut(2);
    for (pair, &b) in (&mut pairs).zip(packed) {
        (pair[0], pair[1]) = nibbles(b);
    }
    if let [last] = pairs.into_remainder() {
        *last = nibbles(packed[packed.len() - 1]).0;
    }
}

/// The score of a query against a stored vector from the kernels' integer dot products of
/// the query's codes with the vector's int8 `codes` (`coarse`) and with its unpacked
/// residual (`residual`): `q . x` with `x ~= (codes + residual / 14) * scale`.
#[must_use]
pub fn refined_score(coarse: i32, residual: i32, scale: f32, query_scale: f32) -> f32 {
    let fine = f64::from(coarse) * f64::from(RESIDUAL_STEPS) + f64::from(residual);
    (fine * (f64::from(scale) * f64::from(query_scale) / f64::from(RESIDUAL_STEPS))) as f32
}

/// Reconstructs `(codes + residual / 14) * scale` into `out`.
pub fn dequantize_refined(codes: &[i8], residual: &[u8], scale: f32, out: &mut [f32]) {
    assert_eq!(codes.len(), out.len(), "dequantize: length mismatch");
    assert_eq!(
        residual.len(),
        residual_bytes(out.len()),
        "dequantize: residual"
    );
    let mut unpacked = vec![0i8; out.len()];
    unpack_residual(residual, &mut unpacked);
    let step = scale / RESIDUAL_STEPS;
    for ((o, &c), &r) in out.iter_mut().zip(codes).zip(&unpacked) {
        // The value in units of `scale / 14`: `14 * code + residual`.
        *o = f32::from(i16::from(c) * 14 + i16::from(r)) * step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_error_is_bounded_by_half_a_step() {
        let x: Vec<f32> = (0..384)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        let mut codes = vec![0i8; x.len()];
        let scale = quantize_i8(&x, &mut codes);
        let mut back = vec![0.0; x.len()];
        dequantize_i8(&codes, scale, &mut back);
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() <= scale * 0.5 + 1e-6, "{a} vs {b}");
        }
        assert!(codes.iter().all(|&c| c != i8::MIN));
        assert!(codes.iter().any(|&c| c.unsigned_abs() == 127));
    }

    #[test]
    fn round_small_is_round() {
        let mut ys: Vec<f32> = (-400..=400).map(|i| i as f32 * 0.25).collect();
        for y in [
            0.499_999_97,
            -0.499_999_97,
            16_383.5,
            -16_383.5,
            8_388_607.0,
            -0.0,
        ] {
            ys.push(y);
        }
        for y in ys {
            assert_eq!(
                round_small(y).to_bits() & !(1 << 31),
                y.round().to_bits() & !(1 << 31),
                "{y}"
            );
            assert_eq!(round_small(y) < 0.0, y.round() < 0.0, "{y}");
        }
    }

    #[test]
    fn zero_vector_has_zero_scale() {
        let mut codes = vec![1i8; 4];
        assert_eq!(
            quantize_i8(&[0.0; 4], &mut codes).to_bits(),
            0.0f32.to_bits()
        );
        assert_eq!(codes, vec![0; 4]);
    }

    fn wave(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0 + (i as f32 * 0.7).sin())
            .collect()
    }

    #[test]
    fn residual_cuts_the_error_to_a_fourteenth_of_a_step() {
        for dim in [1, 2, 7, 384, 385] {
            let x = wave(dim);
            let mut codes = vec![0i8; dim];
            let scale = quantize_i8(&x, &mut codes);
            let mut res = vec![0u8; residual_bytes(dim)];
            quantize_residual(&x, &codes, scale, &mut res);
            let mut back = vec![0.0; dim];
            dequantize_refined(&codes, &res, scale, &mut back);
            for (a, b) in x.iter().zip(&back) {
                assert!(
                    (a - b).abs() <= scale / 28.0 + 1e-6,
                    "dim {dim}: {a} vs {b}"
                );
            }
            // Every residual value is used in a vector with enough values.
            if dim >= 384 {
                let mut unpacked = vec![0i8; dim];
                unpack_residual(&res, &mut unpacked);
                let used: std::collections::BTreeSet<i8> = unpacked.into_iter().collect();
                assert_eq!(used.len(), 15, "{used:?}");
            }
        }
    }

    #[test]
    fn refined_score_matches_the_reconstruction() {
        for dim in [1, 2, 385] {
            let x = wave(dim);
            let q: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.31).cos()).collect();
            let mut codes = vec![0i8; dim];
            let scale = quantize_i8(&x, &mut codes);
            let mut res = vec![0u8; residual_bytes(dim)];
            quantize_residual(&x, &codes, scale, &mut res);
            let mut unpacked = vec![0i8; dim];
            unpack_residual(&res, &mut unpacked);
            // Value i sits in byte i / 2, low nibble first.
            for (i, &u) in unpacked.iter().enumerate() {
                let (lo, hi) = nibbles(res[i / 2]);
                assert_eq!(u, if i % 2 == 0 { lo } else { hi }, "dim {dim}, value {i}");
            }
            let mut qc = vec![0i16; dim];
            let qs = quantize_query(&q, &mut qc);
            let idot = |a: &[i8]| -> i32 {
                a.iter()
                    .zip(&qc)
                    .map(|(&a, &b)| i32::from(a) * i32::from(b))
                    .sum()
            };
            let got = f64::from(refined_score(idot(&codes), idot(&unpacked), scale, qs));
            let mut back = vec![0.0; dim];
            dequantize_refined(&codes, &res, scale, &mut back);
            let want: f64 = q.iter().zip(&back).map(|(a, b)| f64::from(a * b)).sum();
            // Off by the 15-bit query's rounding only.
            let norm = |v: &[f32]| v.iter().map(|a| f64::from(a * a)).sum::<f64>().sqrt();
            let tol = 1e-5 * norm(&q) * norm(&x);
            assert!((got - want).abs() < tol, "dim {dim}: {got} vs {want}");
        }
    }

    #[test]
    fn narrow_queries_keep_every_int16_sum_in_range() {
        let mut seed = 7u64;
        let mut gauss = || {
            // Sum of uniforms: close enough to a normal draw for spread-out values.
            (0..4)
                .map(|_| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .sum::<f32>()
        };
        let spread: Vec<f32> = (0..8 * 384).map(|_| gauss()).collect();
        let flat = vec![0.25f32; 384];
        let spike: Vec<f32> = (0..384)
            .map(|i| if i % 32 < 2 { 1.0 } else { 0.01 })
            .collect();
        for (name, x, dim) in [
            ("spread", &spread[..], 384),
            ("flat", &flat[..], 384),
            ("spike", &spike[..], 384),
            ("odd", &spread[..7 * 385], 385),
            ("short", &spread[..3 * 31], 31),
        ] {
            let nq = NarrowQueries::new(x, dim);
            assert_eq!(nq.len() * dim, x.len());
            for ((xq, c), &scale) in x
                .chunks_exact(dim)
                .zip(nq.codes().chunks_exact(dim))
                .zip(nq.scales())
            {
                assert!(narrow_bound(c) <= i32::from(i16::MAX), "{name}");
                assert!(
                    c.iter().all(|&v| i32::from(v).abs() <= NARROW_MAX),
                    "{name}"
                );
                let top = c.iter().map(|&v| i32::from(v).abs()).max().unwrap();
                for (&v, &q) in xq.iter().zip(c) {
                    assert!(
                        (v - f32::from(q) * scale).abs() <= scale * 0.5 + 1e-6,
                        "{name}"
                    );
                }
                // Spread-out values keep most of the 64 levels; a flat query is cut down
                // (one lane's 8 values all add up), but not to nothing.
                match name {
                    "flat" => assert!((8..32).contains(&top), "{name}: {top}"),
                    "spike" => assert!((8..=NARROW_MAX).contains(&top), "{name}: {top}"),
                    _ => assert!(top >= 30, "{name}: {top}"),
                }
            }
        }
    }

    #[test]
    fn zero_scale_gives_a_zero_residual() {
        let mut res = vec![0xffu8; 2];
        quantize_residual(&[0.0; 3], &[0; 3], 0.0, &mut res);
        assert_eq!(res, vec![0, 0]);
    }
}
