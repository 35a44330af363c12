//! Dot products whose rounding does not depend on the CPU.
//!
//! The ordinary kernels sum in whatever order suits each instruction set, so AVX-512, AVX2 and
//! the scalar fallback can differ in the last bits. That is harmless for search, but a seeded
//! k-means must produce the *same* codebooks on every machine, and one flipped near-tie in an
//! assignment changes everything after it. These kernels fix the arithmetic instead:
//!
//! * element `i` of a dot product is fused-multiply-added into lane `i % 16` of sixteen
//!   accumulators, in increasing `i`; a ragged tail is padded with zeros;
//! * the sixteen lanes are summed by one fixed tree: `l[i] + l[i + 8]`, then `+4`, `+2`, `+1`.
//!
//! AVX-512 keeps the sixteen lanes in one register, AVX2 in two, the portable version in an
//! array (with `f32::mul_add`, a correctly rounded FMA everywhere), and every backend gives the
//! bit-identical result. aarch64 uses the portable version, where `mul_add` is one `fmadd`.

/// Lanes of the fixed summation order.
pub(crate) const LANES: usize = 16;

/// Rows per cache block in the batched driver: 32 rows of 384 f32 are 48 KiB.
const ROW_BLOCK: usize = 32;

/// The fixed reduction tree over sixteen lanes.
#[inline]
pub(crate) fn reduce16(l: &[f32; LANES]) -> f32 {
    let mut s8 = [0.0f32; 8];
    for i in 0..8 {
        s8[i] = l[i] + l[i + 8];
    }
    let mut s4 = [0.0f32; 4];
    for i in 0..4 {
        s4[i] = s8[i] + s8[i + 4];
    }
    let s2 = [s4[0] + s4[2], s4[1] + s4[3]];
    s2[0] + s2[1]
}

/// `xs`: R rows of `dim` values; `q`: Q queries one after another.
fn tile_scalar<const R: usize, const Q: usize>(
    xs: [&[f32]; R],
    q: &[f32],
    dim: usize,
) -> [[f32; Q]; R] {
    let mut acc = [[[0.0f32; LANES]; Q]; R];
    let mut i = 0;
    while i < dim {
        let w = (dim - i).min(LANES);
        let mut qv = [[0.0f32; LANES]; Q];
        for j in 0..Q {
            qv[j][..w].copy_from_slice(&q[j * dim + i..j * dim + i + w]);
        }
        for r in 0..R {
            let mut xv = [0.0f32; LANES];
            xv[..w].copy_from_slice(&xs[r][i..i + w]);
            for j in 0..Q {
                for l in 0..LANES {
                    acc[r][j][l] = xv[l].mul_add(qv[j][l], acc[r][j][l]);
                }
            }
        }
        i += LANES;
    }
    let mut out = [[0.0f32; Q]; R];
    for r in 0..R {
        for j in 0..Q {
            out[r][j] = reduce16(&acc[r][j]);
        }
    }
    out
}

macro_rules! fixed_driver {
    ($(#[$attr:meta])* $name:ident, $tile:ident, $tr:literal, $tq:literal) => {
        $(#[$attr])*
        pub(crate) unsafe fn $name(qs: &[f32], nq: usize, rows: &[f32], out: &mut [f32]) {
            let dim = qs.len() / nq;
            let n = out.len() / nq;
            let mut r0 = 0;
            while r0 < n {
                let r1 = (r0 + ROW_BLOCK).min(n);
                let mut j = 0;
                while j < nq {
                    let tq = if j + $tq <= nq { $tq } else { 1 };
                    let qj = &qs[j * dim..(j + tq) * dim];
                    let mut r = r0;
                    while r < r1 {
                        let tr = if r + $tr <= r1 { $tr } else { 1 };
                        let xr = |a: usize| &rows[(r + a) * dim..(r + a + 1) * dim];
                        // SAFETY: the slices hold exactly tr rows and tq queries of dim values.
                        unsafe {
                            match (tr, tq) {
                                ($tr, $tq) => {
                                    let t = $tile::<$tr, $tq>(core::array::from_fn(xr), qj, dim);
                                    for a in 0..$tr {
                                        for b in 0..$tq {
                                            out[(j + b) * n + r + a] = t[a][b];
                                        }
                                    }
                                }
                                ($tr, _) => {
                                    let t = $tile::<$tr, 1>(core::array::from_fn(xr), qj, dim);
                                    for a in 0..$tr {
                                        out[j * n + r + a] = t[a][0];
                                    }
                                }
                                (_, $tq) => {
                                    let t = $tile::<1, $tq>([xr(0)], qj, dim);
                                    for b in 0..$tq {
                                        out[(j + b) * n + r] = t[0][b];
                                    }
                                }
                                _ => out[j * n + r] = $tile::<1, 1>([xr(0)], qj, dim)[0][0],
                            }
                        }
                        r += tr;
                    }
                    j += tq;
                }
                r0 = r1;
            }
        }
    };
}

/// A driver for [`crate::Kernels::dots_f32_fixed_gather`]: the query against the rows named by
/// `idx`, four at a time (four independent accumulator sets keep the FMA pipes busy), each
/// with exactly the arithmetic of the batched scan.
macro_rules! fixed_gather {
    ($(#[$attr:meta])* $name:ident, $tile:ident) => {
        $(#[$attr])*
        pub(crate) unsafe fn $name(q: &[f32], rows: &[f32], idx: &[u32], out: &mut [f32]) {
            let dim = q.len();
            let row = |j: u32| &rows[j as usize * dim..(j as usize + 1) * dim];
            let mut quads = idx.chunks_exact(4);
            let mut t = 0;
            for ix in &mut quads {
                // SAFETY: every slice is one row or the query of dim values.
                let d = unsafe { $tile::<4, 1>([row(ix[0]), row(ix[1]), row(ix[2]), row(ix[3])], q, dim) };
                for a in 0..4 {
                    out[t + a] = d[a][0];
                }
                t += 4;
            }
            for &j in quads.remainder() {
                // SAFETY: as above.
                out[t] = unsafe { $tile::<1, 1>([row(j)], q, dim) }[0][0];
                t += 1;
            }
        }
    };
}

/// Safe-signature wrapper so the portable tile fits the driver macro.
#[allow(clippy::unnecessary_wraps)]
#[inline]
unsafe fn tile_portable<const R: usize, const Q: usize>(
    xs: [&[f32]; R],
    q: &[f32],
    dim: usize,
) -> [[f32; Q]; R] {
    tile_scalar::<R, Q>(xs, q, dim)
}

fixed_driver!(
    /// Portable fixed-order batched scan.
    scan_multi_f32_fixed_scalar,
    tile_portable,
    2,
    2
);

fixed_gather!(
    /// Portable fixed-order gathered dot products.
    dots_f32_fixed_gather_scalar,
    tile_portable
);

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{LANES, ROW_BLOCK};
    use std::arch::x86_64::{
        __m256, __m256i, __m512, _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_movehdup_ps,
        _mm_movehl_ps, _mm256_add_ps, _mm256_castpd_ps, _mm256_castps256_ps128,
        _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_maskload_ps,
        _mm256_set_epi32, _mm256_setzero_ps, _mm512_castps_pd, _mm512_castps512_ps256,
        _mm512_extractf64x4_pd,
    };

    /// The fixed tree on the eight partial sums `s8[i] = l[i] + l[i + 8]`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn reduce8(s8: __m256) -> f32 {
        let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)))
    }

    #[target_feature(enable = "avx512f,avx2")]
    #[inline]
    fn reduce16_512(v: __m512) -> f32 {
        let lo = _mm512_castps512_ps256(v);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        reduce8(_mm256_add_ps(lo, hi))
    }

    #[target_feature(enable = "avx512f,avx2")]
    #[inline]
    pub(super) unsafe fn tile_512<const R: usize, const Q: usize>(
        xs: [&[f32]; R],
        q: &[f32],
        dim: usize,
    ) -> [[f32; Q]; R] {
        debug_assert!(xs.iter().all(|x| x.len() == dim) && q.len() == Q * dim);
        // SAFETY: each of xs is a row of dim values and q holds Q queries (caller); the shared
        // accumulation adds element i into lane i % 16 in increasing i, as this module needs.
        let acc =
            unsafe { crate::x86::acc_f32_512::<R, Q>(xs.map(<[f32]>::as_ptr), q.as_ptr(), dim) };
        let mut out = [[0.0f32; Q]; R];
        for r in 0..R {
            for j in 0..Q {
                out[r][j] = reduce16_512(acc[r][j]);
            }
        }
        out
    }

    /// Mask of the first `w` of eight lanes, for `maskload`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn lanes_mask(w: usize) -> __m256i {
        let on = |l: usize| if l < w { -1 } else { 0 };
        _mm256_set_epi32(on(7), on(6), on(5), on(4), on(3), on(2), on(1), on(0))
    }

    /// Loads lanes `i..i + 8` of a row, zero past `dim`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn load8(p: *const f32, i: usize, dim: usize) -> __m256 {
        // SAFETY: p points at a row of dim values (caller); a full load needs i + 8 <= dim,
        // otherwise maskload reads only the lanes below dim.
        unsafe {
            if i + 8 <= dim {
                _mm256_loadu_ps(p.add(i))
            } else if i < dim {
                _mm256_maskload_ps(p.add(i), lanes_mask(dim - i))
            } else {
                _mm256_setzero_ps()
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn tile_256<const R: usize, const Q: usize>(
        xs: [&[f32]; R],
        q: &[f32],
        dim: usize,
    ) -> [[f32; Q]; R] {
        debug_assert!(xs.iter().all(|x| x.len() == dim) && q.len() == Q * dim);
        let (xp, qp) = (xs.map(<[f32]>::as_ptr), q.as_ptr());
        // Lanes 0..8 and 8..16 of each sixteen-lane accumulator.
        let mut lo = [[_mm256_setzero_ps(); Q]; R];
        let mut hi = [[_mm256_setzero_ps(); Q]; R];
        let mut i = 0;
        // SAFETY: as in `tile_512`; `load8` masks every read past dim.
        unsafe {
            while i + LANES <= dim {
                for r in 0..R {
                    let x0 = _mm256_loadu_ps(xp[r].add(i));
                    let x1 = _mm256_loadu_ps(xp[r].add(i + 8));
                    for j in 0..Q {
                        let q0 = _mm256_loadu_ps(qp.add(j * dim + i));
                        let q1 = _mm256_loadu_ps(qp.add(j * dim + i + 8));
                        lo[r][j] = _mm256_fmadd_ps(x0, q0, lo[r][j]);
                        hi[r][j] = _mm256_fmadd_ps(x1, q1, hi[r][j]);
                    }
                }
                i += LANES;
            }
            if i < dim {
                for r in 0..R {
                    let x0 = load8(xp[r], i, dim);
                    let x1 = load8(xp[r], i + 8, dim);
                    for j in 0..Q {
                        let q0 = load8(qp.add(j * dim), i, dim);
                        let q1 = load8(qp.add(j * dim), i + 8, dim);
                        lo[r][j] = _mm256_fmadd_ps(x0, q0, lo[r][j]);
                        hi[r][j] = _mm256_fmadd_ps(x1, q1, hi[r][j]);
                    }
                }
            }
        }
        let mut out = [[0.0f32; Q]; R];
        for r in 0..R {
            for j in 0..Q {
                out[r][j] = reduce8(_mm256_add_ps(lo[r][j], hi[r][j]));
            }
        }
        out
    }

    fixed_driver!(
        /// AVX-512 fixed-order batched scan.
        #[target_feature(enable = "avx512f,avx2,fma")]
        scan_multi_f32_fixed_avx512,
        tile_512,
        4,
        4
    );

    fixed_driver!(
        /// AVX2 fixed-order batched scan.
        #[target_feature(enable = "avx2,fma")]
        scan_multi_f32_fixed_avx2,
        tile_256,
        2,
        2
    );

    fixed_gather!(
        /// AVX-512 fixed-order gathered dot products.
        #[target_feature(enable = "avx512f,avx2,fma")]
        dots_f32_fixed_gather_avx512,
        tile_512
    );

    fixed_gather!(
        /// AVX2 fixed-order gathered dot products.
        #[target_feature(enable = "avx2,fma")]
        dots_f32_fixed_gather_avx2,
        tile_256
    );
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{
    dots_f32_fixed_gather_avx2, dots_f32_fixed_gather_avx512, scan_multi_f32_fixed_avx2,
    scan_multi_f32_fixed_avx512,
};
