//! Selection over rows of values: which are at most a limit, the `m` smallest, the minimum.
//! Shared by k-means training and the integer prefilter; vectorised in sixteen lanes.

avx2_dispatch! {
    /// The indices `j` with `v[j] <= limit`, in increasing order, into `out` (cleared first).
    pub(crate) fn indices_at_most(v: &[f32], limit: f32, out: &mut Vec<u32>) = indices_at_most_any;
}

#[inline(always)]
fn indices_at_most_any(v: &[f32], limit: f32, out: &mut Vec<u32>) {
    out.clear();
    each_at_most(v, limit, |j| out.push(j as u32));
}

/// Minimum of a slice in sixteen independent lanes (vectorises; exact, order-free for min).
pub(crate) fn min_f32(v: &[f32]) -> f32 {
    let mut lanes = [f32::INFINITY; 16];
    let (chunks, tail) = v.as_chunks::<16>();
    for c in chunks {
        for l in 0..16 {
            lanes[l] = if c[l] < lanes[l] { c[l] } else { lanes[l] };
        }
    }
    let mut m = f32::INFINITY;
    for &x in lanes.iter().chain(tail) {
        if x < m {
            m = x;
        }
    }
    m
}

avx2_dispatch! {
    /// The `ix.len()` smallest values of `vals` (at least that many), cheapest first with ties
    /// by index: their indices into `ix` and values into `cs`.
    pub(crate) fn smallest_into(vals: &[f32], ix: &mut [u32], cs: &mut [f32]) = smallest_into_any;
}

#[inline(always)]
fn smallest_into_any(vals: &[f32], ix: &mut [u32], cs: &mut [f32]) {
    let m = ix.len();
    // Each of sixteen lanes (j % 16) holds a value <= the largest lane minimum, so when m <= 16
    // nothing above it can be among the m smallest: only the few values at or below it (about
    // a fifth of 256 random ones) are kept, and only those are ordered.
    let below = if m <= 16 && vals.len() >= 16 {
        max_lane_min_any(vals)
    } else {
        f32::INFINITY
    };
    // (value, index) as one integer that orders like `total_cmp`, then by index.
    let key = |v: f32, j: usize| {
        let b = v.to_bits();
        let b = if b >> 31 == 1 { !b } else { b | 1 << 31 };
        (u64::from(b) << 32) | j as u64
    };
    let mut kept: Vec<u64> = Vec::with_capacity(vals.len().min(64));
    each_at_most(vals, below, |j| kept.push(key(vals[j], j)));
    if kept.len() > m {
        kept.select_nth_unstable(m - 1);
        kept.truncate(m);
    }
    kept.sort_unstable();
    for (t, &k) in kept.iter().enumerate() {
        let j = k as u32 as usize;
        cs[t] = vals[j];
        ix[t] = j as u32;
    }
}

/// Calls `f(j)` for every `j` with `v[j] <= limit`, in increasing order: one bit mask per
/// sixteen values (vector compares where the caller is compiled for them), then one step per
/// index found.
#[inline(always)]
pub(crate) fn each_at_most(v: &[f32], limit: f32, mut f: impl FnMut(usize)) {
    let (chunks, tail) = v.as_chunks::<16>();
    for (c, chunk) in chunks.iter().enumerate() {
        let mut mask = 0u32;
        for l in 0..16 {
            mask |= u32::from(chunk[l] <= limit) << l;
        }
        while mask != 0 {
            f(c * 16 + mask.trailing_zeros() as usize);
            mask &= mask - 1;
        }
    }
    let base = chunks.len() * 16;
    for (l, &x) in tail.iter().enumerate() {
        if x <= limit {
            f(base + l);
        }
    }
}

/// The largest of the sixteen lane minima of `vals` (lane `j % 16`, whole chunks only).
#[inline(always)]
fn max_lane_min_any(vals: &[f32]) -> f32 {
    let mut lanes = [f32::INFINITY; 16];
    for c in vals.as_chunks::<16>().0 {
        for l in 0..16 {
            lanes[l] = if c[l] < lanes[l] { c[l] } else { lanes[l] };
        }
    }
    lanes.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::tests::rng;

    #[test]
    fn indices_at_most_lists_every_value_at_or_below_the_limit() {
        let mut seed = 0x1D1Cu64;
        let mut out = vec![7u32];
        for len in 0..100 {
            let v: Vec<f32> = (0..len).map(|_| (rng(&mut seed) * 8.0).round()).collect();
            let limit = (rng(&mut seed) * 8.0).round();
            indices_at_most(&v, limit, &mut out);
            let want: Vec<u32> = (0..len as u32)
                .filter(|&j| v[j as usize] <= limit)
                .collect();
            assert_eq!(out, want, "len {len}");
        }
    }

    #[test]
    fn smallest_into_is_the_head_of_a_sort() {
        let mut seed = 0xC0FF_EE12_3456_789Au64;
        for case in 0..600 {
            let len = 1 + case % 300;
            let m = (1 + case % 24).min(len);
            // Few distinct values on some cases, so ties by index are exercised.
            let levels = if case % 3 == 0 { 5.0 } else { 1e6 };
            let vals: Vec<f32> = (0..len)
                .map(|_| (rng(&mut seed) * levels).round())
                .collect();
            let mut want: Vec<(f32, u32)> = vals.iter().copied().zip(0u32..).collect();
            want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let (mut ix, mut cs) = (vec![u32::MAX; m], vec![f32::NAN; m]);
            smallest_into(&vals, &mut ix, &mut cs);
            let got: Vec<(f32, u32)> = cs.into_iter().zip(ix).collect();
            assert_eq!(got, want[..m], "case {case}: len {len}, m {m}");
        }
    }
}
