//! aarch64 Advanced SIMD kernels. NEON is part of the aarch64 baseline; the dispatch still
//! goes through detection so every backend is chosen the same way.

use std::arch::aarch64::{
    float32x4_t, int32x4_t, vaddvq_f32, vaddvq_s32, vdupq_n_f32, vdupq_n_s32, vfmaq_f32,
    vget_low_s16, vld1_s8, vld1q_f32, vld1q_s16, vmlal_high_s16, vmlal_s16, vmovl_s8,
};

#[target_feature(enable = "neon")]
#[inline]
unsafe fn tile_f32<const R: usize, const Q: usize>(
    x: *const f32,
    q: *const f32,
    dim: usize,
) -> [[f32; Q]; R] {
    let mut acc: [[float32x4_t; Q]; R] = [[vdupq_n_f32(0.0); Q]; R];
    let mut out = [[0.0f32; Q]; R];
    let mut i = 0;
    // SAFETY: rows r < R and queries j < Q of `dim` values start at x and q (caller); vector
    // loads stay below i + 4 <= dim, the tail is read element by element.
    unsafe {
        while i + 4 <= dim {
            for r in 0..R {
                let xv = vld1q_f32(x.add(r * dim + i));
                for j in 0..Q {
                    acc[r][j] = vfmaq_f32(acc[r][j], xv, vld1q_f32(q.add(j * dim + i)));
                }
            }
            i += 4;
        }
        for r in 0..R {
            for j in 0..Q {
                let mut s = vaddvq_f32(acc[r][j]);
                for t in i..dim {
                    s = (*x.add(r * dim + t)).mul_add(*q.add(j * dim + t), s);
                }
                out[r][j] = s;
            }
        }
    }
    out
}

#[target_feature(enable = "neon")]
#[inline]
unsafe fn tile_i8<const R: usize, const Q: usize>(
    x: *const i8,
    q: *const i16,
    dim: usize,
) -> [[i32; Q]; R] {
    let mut acc: [[int32x4_t; Q]; R] = [[vdupq_n_s32(0); Q]; R];
    let mut out = [[0i32; Q]; R];
    let mut i = 0;
    // SAFETY: as in `tile_f32`, 8 values per step (int8 rows widened to i16).
    unsafe {
        while i + 8 <= dim {
            for r in 0..R {
                let xv = vmovl_s8(vld1_s8(x.add(r * dim + i)));
                for j in 0..Q {
                    let qv = vld1q_s16(q.add(j * dim + i));
                    let lo = vmlal_s16(acc[r][j], vget_low_s16(xv), vget_low_s16(qv));
                    acc[r][j] = vmlal_high_s16(lo, xv, qv);
                }
            }
            i += 8;
        }
        for r in 0..R {
            for j in 0..Q {
                let mut s = vaddvq_s32(acc[r][j]);
                for t in i..dim {
                    s += i32::from(*x.add(r * dim + t)) * i32::from(*q.add(j * dim + t));
                }
                out[r][j] = s;
            }
        }
    }
    out
}

macro_rules! drivers {
    ($tile:ident, $x:ty, $q:ty, $o:ty, $scan:ident, $multi:ident) => {
        #[target_feature(enable = "neon")]
        pub(crate) unsafe fn $scan(q: &[$q], rows: &[$x], out: &mut [$o]) {
            let dim = q.len();
            let n = out.len();
            let mut r = 0;
            // SAFETY: rows.len() == n * dim (caller).
            unsafe {
                while r + 4 <= n {
                    let t = $tile::<4, 1>(rows.as_ptr().add(r * dim), q.as_ptr(), dim);
                    for a in 0..4 {
                        out[r + a] = t[a][0];
                    }
                    r += 4;
                }
                while r < n {
                    out[r] = $tile::<1, 1>(rows.as_ptr().add(r * dim), q.as_ptr(), dim)[0][0];
                    r += 1;
                }
            }
        }

        #[target_feature(enable = "neon")]
        pub(crate) unsafe fn $multi(qs: &[$q], nq: usize, rows: &[$x], out: &mut [$o]) {
            let dim = qs.len() / nq;
            let n = out.len() / nq;
            for j in 0..nq {
                // SAFETY: query j is the j-th `dim`-long slice; shapes checked by the caller.
                unsafe {
                    $scan(
                        &qs[j * dim..(j + 1) * dim],
                        rows,
                        &mut out[j * n..(j + 1) * n],
                    )
                };
            }
        }
    };
}

drivers!(tile_f32, f32, f32, f32, scan_f32, scan_multi_f32);
drivers!(tile_i8, i8, i16, i32, scan_i8, scan_multi_i8);

#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: equal lengths (caller).
    unsafe { tile_f32::<1, 1>(a.as_ptr(), b.as_ptr(), a.len())[0][0] }
}

#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let wide: Vec<i16> = b.iter().map(|&v| i16::from(v)).collect();
    // SAFETY: equal lengths (caller); `wide` is b widened to i16.
    unsafe { tile_i8::<1, 1>(a.as_ptr(), wide.as_ptr(), a.len())[0][0] }
}
