//! Int8 rows packed side by side, for scanning many queries without horizontal sums.
//!
//! [`crate::Kernels::scan_multi_i8`] multiplies a query and a row lane by lane, so every
//! (query, row) pair ends with one accumulator's lanes added up: for rows of a few hundred
//! values those reductions cost about as much as the multiplies. [`PackedRows`] stores
//! [`PACK`] rows side by side instead: in block `b`, the 64 bytes of pair `p` hold, in lane
//! `l`, values `2p` and `2p + 1` of row `PACK b + l` as two int16. One `vpdpwssd` (or
//! `vpmaddwd` and an add) of a query's pair `p`, broadcast to every lane, then adds that pair's
//! products to sixteen row sums at once, and the sixteen sums leave the register in row order.
//! The scores are the same exact integer dot products as `scan_multi_i8`'s on every backend
//! (backends without a packed kernel run `scan_multi_i8` on the unpacked rows).
//!
//! Where the CPU multiplies bytes (AVX-512 VNNI `vpdpbusd`: unsigned by signed bytes, four
//! products per 32-bit lane), queries whose codes all lie in `-127..=127` take a second
//! layout, four values per lane: twice the products per instruction. The query codes are
//! made unsigned by adding 128, and `128 * sum(row)` is subtracted from each sum afterwards.
//! [`crate::Kernels::packed_query_max_code`] says which query codes reach that rate.

use crate::quant::MAX_I8_DIM;

/// Rows per packed block (the lanes of one 512-bit register of int32 sums).
pub const PACK: usize = 16;

/// Int8 rows (such as a k-means codebook) in the layout of the packed scan, with the rows
/// as given beside it. Build once, scan many times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedRows {
    dim: usize,
    rows: Vec<i8>,
    /// Pairs of values as int16, `2 * PACK` per pair of a block.
    packed: Vec<i16>,
    /// Quads of values as bytes, `4 * PACK` per quad of a block.
    quads: Vec<i8>,
    /// Each row's sum, zero past the last row of the last block.
    sums: Vec<i32>,
}

impl PackedRows {
    /// Packs the rows of `rows` (`dim` values each).
    ///
    /// # Panics
    /// If `dim` is 0, above [`MAX_I8_DIM`], or does not divide `rows.len()`.
    #[must_use]
    pub fn new(rows: &[i8], dim: usize) -> Self {
        assert!(
            dim > 0 && dim <= MAX_I8_DIM && rows.len().is_multiple_of(dim),
            "PackedRows: bad shape"
        );
        let n = rows.len() / dim;
        let pairs = dim.div_ceil(2);
        let quads = dim.div_ceil(4);
        let blocks = n.div_ceil(PACK);
        let mut packed = vec![0i16; blocks * pairs * 2 * PACK];
        let mut quad = vec![0i8; blocks * quads * 4 * PACK];
        let mut sums = vec![0i32; blocks * PACK];
        for (r, row) in rows.chunks_exact(dim).enumerate() {
            let (b, l) = (r / PACK, r % PACK);
            let pair_block = &mut packed[b * pairs * 2 * PACK..];
            let quad_block = &mut quad[b * quads * 4 * PACK..];
            for (i, &v) in row.iter().enumerate() {
                pair_block[(i / 2 * PACK + l) * 2 + i % 2] = i16::from(v);
                quad_block[(i / 4 * PACK + l) * 4 + i % 4] = v;
            }
            sums[r] = row.iter().map(|&v| i32::from(v)).sum();
        }
        PackedRows {
            dim,
            rows: rows.to_vec(),
            packed,
            quads: quad,
            sums,
        }
    }

    /// Number of rows.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rows.len() / self.dim
    }

    /// Whether there are no rows.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Values per row.
    #[must_use]
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The rows as given, back to back.
    #[must_use]
    pub fn rows(&self) -> &[i8] {
        &self.rows
    }

    pub(crate) fn packed(&self) -> &[i16] {
        &self.packed
    }

    pub(crate) fn quads(&self) -> &[i8] {
        &self.quads
    }

    pub(crate) fn sums(&self) -> &[i32] {
        &self.sums
    }
}

/// Query codes within `-127..=127` as unsigned bytes (`q + 128`), each query padded to a
/// whole number of quads; `None` when a code is outside that range.
pub(crate) fn unsigned_queries(queries: &[i16], nq: usize) -> Option<(Vec<u8>, usize)> {
    let dim = queries.len() / nq;
    let d4 = dim.div_ceil(4) * 4;
    let widest = queries.iter().fold(0u16, |m, &q| m.max(q.unsigned_abs()));
    if widest > 127 {
        return None;
    }
    let mut out = vec![128u8; nq * d4];
    for (src, dst) in queries.chunks_exact(dim).zip(out.chunks_exact_mut(d4)) {
        for (d, &q) in dst.iter_mut().zip(src) {
            // In 1..=255 (checked above).
            *d = (q + 128) as u8;
        }
    }
    Some((out, d4))
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::PACK;
    use crate::x86::{madd_acc_512, vnni_acc_512};
    use std::arch::x86_64::{
        __m512i, __mmask16, _mm256_add_epi32, _mm256_loadu_si256, _mm256_madd_epi16,
        _mm256_set1_epi32, _mm256_setzero_si256, _mm256_storeu_si256, _mm512_dpbusd_epi32,
        _mm512_loadu_si512, _mm512_mask_storeu_epi32, _mm512_set1_epi32, _mm512_setzero_si512,
        _mm512_slli_epi32, _mm512_storeu_si512, _mm512_sub_epi32,
    };

    /// Query `r`'s values `2p, 2p + 1` as one 32-bit lane (the high half 0 past an odd end).
    ///
    /// # Safety
    /// `q` holds `dim` values; `2p < dim`.
    #[inline(always)]
    unsafe fn pair(q: *const i16, dim: usize, p: usize) -> i32 {
        // SAFETY: 2p < dim (caller); the second value exists when 2p + 1 < dim.
        unsafe {
            if 2 * p + 1 < dim {
                q.add(2 * p).cast::<i32>().read_unaligned()
            } else {
                i32::from(*q.add(2 * p).cast::<u16>())
            }
        }
    }

    /// Stores a register of sixteen sums at `at`, only the first `left` when fewer remain.
    ///
    /// # Safety
    /// `at` has room for `min(left, 16)` values.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store16(at: *mut i32, left: usize, v: __m512i) {
        // SAFETY: as the caller guarantees.
        unsafe {
            if left >= PACK {
                _mm512_storeu_si512(at.cast(), v);
            } else {
                _mm512_mask_storeu_epi32(at, ((1u32 << left) - 1) as __mmask16, v);
            }
        }
    }

    /// Calls `$tile!(R, B, j, b0)` over every tile of `nq` queries and `blocks` packed
    /// blocks: groups of four blocks six queries at a time, the blocks left over one at a
    /// time eight queries at a time, then the queries left over one by one.
    macro_rules! walk_tiles {
        ($blocks:expr, $nq:expr, $tile:ident) => {{
            let (blocks, nq) = ($blocks, $nq);
            let mut b0 = 0;
            while b0 < blocks {
                let mut j = 0;
                if b0 + 4 <= blocks {
                    while j + 6 <= nq {
                        $tile!(6, 4, j, b0);
                        j += 6;
                    }
                    while j < nq {
                        $tile!(1, 4, j, b0);
                        j += 1;
                    }
                    b0 += 4;
                } else {
                    while j + 8 <= nq {
                        $tile!(8, 1, j, b0);
                        j += 8;
                    }
                    while j < nq {
                        $tile!(1, 1, j, b0);
                        j += 1;
                    }
                    b0 += 1;
                }
            }
        }};
    }

    macro_rules! packed_512 {
        ($name:ident, $tile:ident, $feat:literal, $acc:ident) => {
            /// R queries against B packed blocks (16 R B sums), one pass over the pairs.
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn $tile<const R: usize, const B: usize>(
                q: *const i16,
                dim: usize,
                c: *const i16,
                out: *mut i32,
                n: usize,
                col: usize,
            ) {
                let pairs = dim.div_ceil(2);
                let stride = pairs * 2 * PACK;
                let mut acc = [[_mm512_setzero_si512(); B]; R];
                let mut cv = [_mm512_setzero_si512(); B];
                // SAFETY: the caller passes R queries of dim values at q, B whole blocks at c
                // and an out with R rows of n sums from column col (masked past n).
                unsafe {
                    for p in 0..pairs {
                        for b in 0..B {
                            cv[b] = _mm512_loadu_si512(c.add(b * stride + p * 2 * PACK).cast());
                        }
                        for r in 0..R {
                            let qv = _mm512_set1_epi32(pair(q.add(r * dim), dim, p));
                            for b in 0..B {
                                acc[r][b] = $acc(acc[r][b], qv, cv[b]);
                            }
                        }
                    }
                    for r in 0..R {
                        for b in 0..B {
                            let at = out.add(r * n + col + b * PACK);
                            store16(at, n - col - b * PACK, acc[r][b]);
                        }
                    }
                }
            }

            /// `out[j * n + r] = queries_j . rows_r` for packed rows; shapes checked by the
            /// caller (`Kernels::scan_packed_i8`).
            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn $name(
                queries: &[i16],
                nq: usize,
                packed: &[i16],
                out: &mut [i32],
            ) {
                let dim = queries.len() / nq;
                let n = out.len() / nq;
                let blocks = n.div_ceil(PACK);
                let stride = dim.div_ceil(2) * 2 * PACK;
                let (q, c, o) = (queries.as_ptr(), packed.as_ptr(), out.as_mut_ptr());
                macro_rules! tile {
                    ($r:literal, $b:literal, $j:expr, $b0:expr) => {
                        $tile::<$r, $b>(
                            q.add($j * dim),
                            dim,
                            c.add($b0 * stride),
                            o.add($j * n),
                            n,
                            $b0 * PACK,
                        )
                    };
                }
                // SAFETY: every tile reads queries below nq, blocks below `blocks` (packed
                // holds them all) and writes sums below n in rows below nq.
                unsafe { walk_tiles!(blocks, nq, tile) }
            }
        };
    }

    packed_512!(
        scan_packed_avx512,
        tile_avx512,
        "avx512f,avx512bw,avx512vl",
        madd_acc_512
    );
    packed_512!(
        scan_packed_vnni,
        tile_vnni,
        "avx512f,avx512bw,avx512vl,avx512vnni",
        vnni_acc_512
    );

    /// R unsigned-byte queries (`d4` bytes each) against B blocks of quads: `vpdpbusd`, then
    /// `128 * sum(row)` subtracted from each sum.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn tile_bytes<const R: usize, const B: usize>(
        q: *const u8,
        d4: usize,
        c: *const i8,
        sums: *const i32,
        out: *mut i32,
        n: usize,
        col: usize,
    ) {
        let quads = d4 / 4;
        let stride = quads * 4 * PACK;
        let mut acc = [[_mm512_setzero_si512(); B]; R];
        let mut cv = [_mm512_setzero_si512(); B];
        // SAFETY: the caller passes R queries of d4 bytes at q, B whole blocks at c (and
        // their sums at sums) and an out with R rows of n sums from column col (masked).
        unsafe {
            for p in 0..quads {
                for b in 0..B {
                    cv[b] = _mm512_loadu_si512(c.add(b * stride + p * 4 * PACK).cast());
                }
                for r in 0..R {
                    let qv =
                        _mm512_set1_epi32(q.add(r * d4 + 4 * p).cast::<i32>().read_unaligned());
                    for b in 0..B {
                        acc[r][b] = _mm512_dpbusd_epi32(acc[r][b], qv, cv[b]);
                    }
                }
            }
            for b in 0..B {
                let offset = _mm512_slli_epi32::<7>(_mm512_loadu_si512(sums.add(b * PACK).cast()));
                for r in 0..R {
                    let v = _mm512_sub_epi32(acc[r][b], offset);
                    store16(out.add(r * n + col + b * PACK), n - col - b * PACK, v);
                }
            }
        }
    }

    /// The byte form of the packed scan: `queries` from `unsigned_queries` (`nq` rows of a
    /// whole number of quads), `quads` and `sums` from the same `PackedRows`; shapes checked
    /// by the caller (`Kernels::scan_packed_i8`).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(crate) unsafe fn scan_packed_bytes_vnni(
        queries: &[u8],
        nq: usize,
        quads: &[i8],
        sums: &[i32],
        out: &mut [i32],
    ) {
        let d4 = queries.len() / nq;
        let n = out.len() / nq;
        let blocks = n.div_ceil(PACK);
        let stride = d4 * PACK;
        let (q, c, o) = (queries.as_ptr(), quads.as_ptr(), out.as_mut_ptr());
        macro_rules! tile {
            ($r:literal, $b:literal, $j:expr, $b0:expr) => {
                tile_bytes::<$r, $b>(
                    q.add($j * d4),
                    d4,
                    c.add($b0 * stride),
                    sums.as_ptr().add($b0 * PACK),
                    o.add($j * n),
                    n,
                    $b0 * PACK,
                )
            };
        }
        // SAFETY: as in the int16 drivers.
        unsafe { walk_tiles!(blocks, nq, tile) }
    }

    /// R queries against one packed block, its sixteen lanes in two 256-bit halves.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn tile_avx2<const R: usize>(
        q: *const i16,
        dim: usize,
        c: *const i16,
        out: *mut i32,
        n: usize,
        col: usize,
    ) {
        let pairs = dim.div_ceil(2);
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        // SAFETY: as in the AVX-512 tiles, for one block.
        unsafe {
            for p in 0..pairs {
                let lo = _mm256_loadu_si256(c.add(p * 2 * PACK).cast());
                let hi = _mm256_loadu_si256(c.add(p * 2 * PACK + PACK).cast());
                for r in 0..R {
                    let qv = _mm256_set1_epi32(pair(q.add(r * dim), dim, p));
                    acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(qv, lo));
                    acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(qv, hi));
                }
            }
            let left = (n - col).min(PACK);
            for r in 0..R {
                let mut sums = [0i32; PACK];
                _mm256_storeu_si256(sums.as_mut_ptr().cast(), acc[r][0]);
                _mm256_storeu_si256(sums.as_mut_ptr().add(PACK / 2).cast(), acc[r][1]);
                std::ptr::copy_nonoverlapping(sums.as_ptr(), out.add(r * n + col), left);
            }
        }
    }

    /// The AVX2 form of the packed scan (`vpmaddwd` and an add per half block).
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn scan_packed_avx2(
        queries: &[i16],
        nq: usize,
        packed: &[i16],
        out: &mut [i32],
    ) {
        let dim = queries.len() / nq;
        let n = out.len() / nq;
        let stride = dim.div_ceil(2) * 2 * PACK;
        let (q, c, o) = (queries.as_ptr(), packed.as_ptr(), out.as_mut_ptr());
        // SAFETY: as in the AVX-512 driver.
        unsafe {
            for b in 0..n.div_ceil(PACK) {
                let (cb, col) = (c.add(b * stride), b * PACK);
                let mut j = 0;
                while j + 4 <= nq {
                    tile_avx2::<4>(q.add(j * dim), dim, cb, o.add(j * n), n, col);
                    j += 4;
                }
                while j < nq {
                    tile_avx2::<1>(q.add(j * dim), dim, cb, o.add(j * n), n, col);
                    j += 1;
                }
            }
        }
    }
}
