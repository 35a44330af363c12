//! Symmetric quantisation: `x ~= codes * scale`, zero point 0.
//!
//! Stored vectors use int8 codes in `-127..=127` (the value -128 is never produced, so the
//! range is symmetric). Queries use wider codes, up to 15 bits (`-16383..=16383`), so the
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

fn quantize_into<T>(x: &[f32], out: &mut [T], max_code: f32, cast: impl Fn(f32) -> T) -> f32 {
    assert_eq!(x.len(), out.len(), "quantize: length mismatch");
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 || !amax.is_finite() {
        for o in out.iter_mut() {
            *o = cast(0.0);
        }
        return 0.0;
    }
    let inv = max_code / amax;
    for (o, v) in out.iter_mut().zip(x) {
        *o = cast((v * inv).round().clamp(-max_code, max_code));
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

/// Reconstructs `codes * scale` into `out`.
pub fn dequantize_i8(codes: &[i8], scale: f32, out: &mut [f32]) {
    assert_eq!(codes.len(), out.len(), "dequantize: length mismatch");
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = f32::from(c) * scale;
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
    fn zero_vector_has_zero_scale() {
        let mut codes = vec![1i8; 4];
        assert_eq!(
            quantize_i8(&[0.0; 4], &mut codes).to_bits(),
            0.0f32.to_bits()
        );
        assert_eq!(codes, vec![0; 4]);
    }
}
