//! Inner-product kernels and exact top-k selection for imesde.
//!
//! Every kernel exists once per backend (AVX-512 with and without VNNI, AVX2+FMA, NEON and a
//! portable scalar fallback). The backend is chosen at run time from what the CPU reports, so
//! one binary built for the baseline target runs the fastest code each machine supports and
//! never executes an instruction the machine lacks.
//!
//! Int8 storage uses symmetric per-vector quantisation ([`quant`]): a stored vector is
//! `codes * scale` with `codes` in `-127..=127`. Queries against int8 rows are quantised to
//! 15-bit integers, so the query side adds almost no error; the integer dot product is exact.

#![warn(missing_docs)]

/// `fn $name(args) -> ret` that runs `$body` compiled for AVX-512 (F, BW, VL) or AVX2 when
/// the CPU has them (and [`Kernels::best`], capped by `IMESDE_SIMD`, uses them) and the
/// portable build otherwise. The bodies are element-wise IEEE arithmetic in a written order
/// (Rust neither fuses nor reorders float operations), so every build gives the same results;
/// the wider instruction sets only make the vectors wider.
#[macro_export]
macro_rules! avx2_dispatch {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:ident;) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
                #[allow(clippy::too_many_arguments)]
                fn wider($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                fn wide($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match $crate::dispatch_width() {
                    // SAFETY: the CPU supports these AVX-512 subsets (`dispatch_width`).
                    2 => return unsafe { wider($($arg),*) },
                    // SAFETY: the CPU supports AVX2 (`dispatch_width`).
                    1 => return unsafe { wide($($arg),*) },
                    _ => {}
                }
            }
            $body($($arg),*)
        }
    };
}

pub mod binary;
mod fixed;
pub mod packed;
pub mod quant;
mod scalar;
pub mod similarity;
pub mod topk;

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::OnceLock;

pub use topk::{TopK, sort_best_first, top_k};

/// How wide the bodies of `avx2_dispatch!` run here, decided once from [`Kernels::best`] (so
/// `IMESDE_SIMD` caps them too): 2 for AVX-512 (F, BW, VL), 1 for AVX2, 0 for portable code.
#[doc(hidden)]
#[must_use]
pub fn dispatch_width() -> u8 {
    static WIDTH: OnceLock<u8> = OnceLock::new();
    *WIDTH.get_or_init(|| match Kernels::best().backend() {
        Backend::Avx512 | Backend::Avx512Vnni => 2,
        Backend::Avx2 => 1,
        _ => 0,
    })
}

/// A family of kernels, each tied to an instruction set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// Portable Rust; the reference every other backend is tested against.
    Scalar,
    /// x86-64 AVX2 with FMA.
    Avx2,
    /// x86-64 AVX-512 (F, BW, VL).
    Avx512,
    /// x86-64 AVX-512 plus VNNI (`vpdpwssd` for the int8 kernels).
    Avx512Vnni,
    /// aarch64 Advanced SIMD.
    Neon,
}

impl Backend {
    /// Every backend, slowest first.
    pub const ALL: [Backend; 5] = [
        Backend::Scalar,
        Backend::Avx2,
        Backend::Avx512,
        Backend::Avx512Vnni,
        Backend::Neon,
    ];

    /// Short lowercase name, as reported in stats (`"avx512-vnni"`, `"scalar"`, ...).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Backend::Scalar => "scalar",
            Backend::Avx2 => "avx2",
            Backend::Avx512 => "avx512",
            Backend::Avx512Vnni => "avx512-vnni",
            Backend::Neon => "neon",
        }
    }

    /// Whether this CPU can run the backend.
    #[must_use]
    pub fn is_supported(self) -> bool {
        match self {
            Backend::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512Vnni => {
                Backend::Avx512.is_supported() && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            Backend::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The backends this CPU supports, slowest first.
    #[must_use]
    pub fn supported() -> Vec<Backend> {
        Backend::ALL
            .into_iter()
            .filter(|b| b.is_supported())
            .collect()
    }
}

/// The CPU features that decide which model runs fastest here (ONNX Runtime's integer GEMM
/// has kernels for each): `"avx2"`, `"avx512f"`, `"avx512vnni"`, `"avxvnni"` on x86-64,
/// `"neon"`, `"dotprod"`, `"i8mm"` on `AArch64`; those this CPU has.
#[must_use]
pub fn cpu_features() -> Vec<&'static str> {
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        for (name, has) in [
            ("avx2", is_x86_feature_detected!("avx2")),
            ("avx512f", is_x86_feature_detected!("avx512f")),
            ("avx512vnni", is_x86_feature_detected!("avx512vnni")),
            ("avxvnni", is_x86_feature_detected!("avxvnni")),
        ] {
            if has {
                out.push(name);
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        for (name, has) in [
            ("neon", std::arch::is_aarch64_feature_detected!("neon")),
            (
                "dotprod",
                std::arch::is_aarch64_feature_detected!("dotprod"),
            ),
            ("i8mm", std::arch::is_aarch64_feature_detected!("i8mm")),
        ] {
            if has {
                out.push(name);
            }
        }
    }
    out
}

type DotF32 = unsafe fn(&[f32], &[f32]) -> f32;
type DotI8 = unsafe fn(&[i8], &[i8]) -> i32;
type ScanF32 = unsafe fn(&[f32], &[f32], &mut [f32]);
type ScanMultiF32 = unsafe fn(&[f32], usize, &[f32], &mut [f32]);
type ScanI8 = unsafe fn(&[i16], &[i8], &mut [i32]);
type ScanMultiI8 = unsafe fn(&[i16], usize, &[i8], &mut [i32]);
type ScanPacked = Option<unsafe fn(&[i16], usize, &[i16], &mut [i32])>;
type ScanPackedBytes = Option<unsafe fn(&[u8], usize, &[i8], &[i32], &mut [i32])>;
type ScanMultiNarrow = Option<unsafe fn(&[i8], &[i32], &[i8], &mut [i32])>;
type ScanMultiF32Fixed = unsafe fn(&[f32], usize, &[f32], &mut [f32]);
type DotsF32FixedGather = unsafe fn(&[f32], &[f32], &[u32], &mut [f32]);

/// One backend's kernels. Obtain one with [`Kernels::best`] or [`Kernels::get`]; the safe
/// methods check the slice lengths, the constructor guarantees the CPU supports the backend.
#[derive(Debug)]
pub struct Kernels {
    backend: Backend,
    dot_f32: DotF32,
    dot_i8: DotI8,
    scan_f32: ScanF32,
    scan_multi_f32: ScanMultiF32,
    scan_i8: ScanI8,
    scan_multi_i8: ScanMultiI8,
    /// `None`: the backend widens narrow queries to int16 for `scan_multi_i8`.
    scan_multi_narrow: ScanMultiNarrow,
    /// `None`: the backend runs `scan_multi_i8` on the unpacked rows for `scan_packed_i8`.
    scan_packed: ScanPacked,
    /// `Some` where bytes multiply at twice the rate: `scan_packed_i8` then takes queries
    /// within `-127..=127` through it.
    scan_packed_bytes: ScanPackedBytes,
    scan_multi_f32_fixed: ScanMultiF32Fixed,
    dots_f32_fixed_gather: DotsF32FixedGather,
}

static SCALAR: Kernels = Kernels {
    backend: Backend::Scalar,
    dot_f32: scalar::dot_f32,
    dot_i8: scalar::dot_i8,
    scan_f32: scalar::scan_f32,
    scan_multi_f32: scalar::scan_multi_f32,
    scan_i8: scalar::scan_i8,
    scan_multi_i8: scalar::scan_multi_i8,
    scan_multi_narrow: None,
    scan_packed: None,
    scan_packed_bytes: None,
    scan_multi_f32_fixed: fixed::scan_multi_f32_fixed_scalar,
    dots_f32_fixed_gather: fixed::dots_f32_fixed_gather_scalar,
};

#[cfg(target_arch = "x86_64")]
static AVX2: Kernels = Kernels {
    backend: Backend::Avx2,
    dot_f32: x86::dot_f32_avx2,
    dot_i8: x86::dot_i8_avx2,
    scan_f32: x86::scan_f32_avx2,
    scan_multi_f32: x86::scan_multi_f32_avx2,
    scan_i8: x86::scan_i8_avx2,
    scan_multi_i8: x86::scan_multi_i8_avx2,
    scan_multi_narrow: Some(x86::scan_multi_narrow_avx2),
    scan_packed: Some(packed::x86::scan_packed_avx2),
    scan_packed_bytes: None,
    scan_multi_f32_fixed: fixed::scan_multi_f32_fixed_avx2,
    dots_f32_fixed_gather: fixed::dots_f32_fixed_gather_avx2,
};

#[cfg(target_arch = "x86_64")]
static AVX512: Kernels = Kernels {
    backend: Backend::Avx512,
    dot_f32: x86::dot_f32_avx512,
    dot_i8: x86::dot_i8_avx512,
    scan_f32: x86::scan_f32_avx512,
    scan_multi_f32: x86::scan_multi_f32_avx512,
    scan_i8: x86::scan_i8_avx512,
    scan_multi_i8: x86::scan_multi_i8_avx512,
    scan_multi_narrow: None,
    scan_packed: Some(packed::x86::scan_packed_avx512),
    scan_packed_bytes: None,
    scan_multi_f32_fixed: fixed::scan_multi_f32_fixed_avx512,
    dots_f32_fixed_gather: fixed::dots_f32_fixed_gather_avx512,
};

#[cfg(target_arch = "x86_64")]
static AVX512_VNNI: Kernels = Kernels {
    backend: Backend::Avx512Vnni,
    dot_f32: x86::dot_f32_avx512,
    dot_i8: x86::dot_i8_vnni,
    scan_f32: x86::scan_f32_avx512,
    scan_multi_f32: x86::scan_multi_f32_avx512,
    scan_i8: x86::scan_i8_vnni,
    scan_multi_i8: x86::scan_multi_i8_vnni,
    scan_multi_narrow: None,
    scan_packed: Some(packed::x86::scan_packed_vnni),
    scan_packed_bytes: Some(packed::x86::scan_packed_bytes_vnni),
    scan_multi_f32_fixed: fixed::scan_multi_f32_fixed_avx512,
    dots_f32_fixed_gather: fixed::dots_f32_fixed_gather_avx512,
};

#[cfg(target_arch = "aarch64")]
static NEON: Kernels = Kernels {
    backend: Backend::Neon,
    dot_f32: neon::dot_f32,
    dot_i8: neon::dot_i8,
    scan_f32: neon::scan_f32,
    scan_multi_f32: neon::scan_multi_f32,
    scan_i8: neon::scan_i8,
    scan_multi_i8: neon::scan_multi_i8,
    scan_multi_narrow: None,
    scan_packed: None,
    scan_packed_bytes: None,
    scan_multi_f32_fixed: fixed::scan_multi_f32_fixed_scalar,
    dots_f32_fixed_gather: fixed::dots_f32_fixed_gather_scalar,
};

impl Kernels {
    /// The kernels of `backend`, or `None` when this CPU cannot run them.
    #[must_use]
    pub fn get(backend: Backend) -> Option<&'static Kernels> {
        if !backend.is_supported() {
            return None;
        }
        match backend {
            Backend::Scalar => Some(&SCALAR),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => Some(&AVX2),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => Some(&AVX512),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512Vnni => Some(&AVX512_VNNI),
            #[cfg(target_arch = "aarch64")]
            Backend::Neon => Some(&NEON),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The fastest kernels this CPU supports, detected once. Setting the environment variable
    /// `IMESDE_SIMD` to a backend name (`scalar`, `avx2`, ...) caps the choice, for testing;
    /// another value is ignored with a warning on stderr (an empty one, as unset, silently).
    pub fn best() -> &'static Kernels {
        static BEST: OnceLock<&'static Kernels> = OnceLock::new();
        BEST.get_or_init(|| {
            let cap = std::env::var("IMESDE_SIMD").ok().filter(|v| !v.is_empty());
            if let Some(name) = cap.as_deref()
                && !Backend::ALL.iter().any(|b| b.name() == name)
            {
                let names: Vec<&str> = Backend::ALL.iter().map(|b| b.name()).collect();
                eprintln!(
                    "imesde: IMESDE_SIMD={name:?} names no backend ({}); ignored",
                    names.join(", ")
                );
            }
            let mut best = &SCALAR;
            for backend in Backend::ALL {
                if let Some(k) = Kernels::get(backend) {
                    best = k;
                }
                if cap.as_deref() == Some(backend.name()) {
                    break;
                }
            }
            best
        })
    }

    /// Which backend these kernels belong to.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Inner product of two f32 vectors of equal length.
    #[must_use]
    pub fn dot_f32(&self, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "dot_f32: length mismatch");
        // SAFETY: `self` exists only for backends the CPU supports; lengths are equal.
        unsafe { (self.dot_f32)(a, b) }
    }

    /// Exact integer inner product of two int8 vectors of equal length (at most 131,072, so
    /// that `128 * 128 * len` fits in an i32).
    #[must_use]
    pub fn dot_i8(&self, a: &[i8], b: &[i8]) -> i32 {
        assert_eq!(a.len(), b.len(), "dot_i8: length mismatch");
        assert!(a.len() <= 1 << 17, "dot_i8: vectors too long for i32");
        // SAFETY: as in `dot_f32`.
        unsafe { (self.dot_i8)(a, b) }
    }

    /// `out[r] = dot(query, rows[r])` for the `out.len()` rows stored back to back in `rows`.
    pub fn scan_f32(&self, query: &[f32], rows: &[f32], out: &mut [f32]) {
        assert!(!query.is_empty(), "scan_f32: empty query");
        assert_eq!(
            rows.len(),
            query.len() * out.len(),
            "scan_f32: rows / out mismatch"
        );
        // SAFETY: as in `dot_f32`; rows holds exactly out.len() rows of query.len() values.
        unsafe { (self.scan_f32)(query, rows, out) }
    }

    /// `out[q * n + r] = dot(queries[q], rows[r])` for `nq` queries and `n = out.len() / nq`
    /// rows, all stored back to back.
    pub fn scan_multi_f32(&self, queries: &[f32], nq: usize, rows: &[f32], out: &mut [f32]) {
        let (dim, n) = multi_shape(queries.len(), nq, out.len());
        assert_eq!(rows.len(), dim * n, "scan_multi_f32: rows / out mismatch");
        // SAFETY: as in `dot_f32`; the shapes were checked above.
        unsafe { (self.scan_multi_f32)(queries, nq, rows, out) }
    }

    /// Int8 rows against a query quantised with [`quant::quantize_query`]: `out[r]` is the
    /// exact integer dot product. Dimensions are limited to [`quant::MAX_I8_DIM`], and query
    /// codes must stay within [`quant::query_max_code`] so the sums cannot overflow.
    pub fn scan_i8(&self, query: &[i16], rows: &[i8], out: &mut [i32]) {
        assert!(!query.is_empty(), "scan_i8: empty query");
        assert!(
            query.len() <= quant::MAX_I8_DIM,
            "scan_i8: dimension too large"
        );
        assert_eq!(
            rows.len(),
            query.len() * out.len(),
            "scan_i8: rows / out mismatch"
        );
        // SAFETY: as in `dot_f32`.
        unsafe { (self.scan_i8)(query, rows, out) }
    }

    /// The batched form of [`Kernels::scan_i8`], laid out like [`Kernels::scan_multi_f32`].
    pub fn scan_multi_i8(&self, queries: &[i16], nq: usize, rows: &[i8], out: &mut [i32]) {
        let (dim, n) = multi_shape(queries.len(), nq, out.len());
        assert!(
            dim <= quant::MAX_I8_DIM,
            "scan_multi_i8: dimension too large"
        );
        assert_eq!(rows.len(), dim * n, "scan_multi_i8: rows / out mismatch");
        // SAFETY: as in `dot_f32`.
        unsafe { (self.scan_multi_i8)(queries, nq, rows, out) }
    }
}

impl Kernels {
    /// [`Kernels::scan_multi_i8`] against rows packed by [`packed::PackedRows`]: the same exact
    /// integer dot products, `out[q * n + r]` for `nq` queries and the `n` packed rows, without
    /// the per-pair horizontal sums (about twice the rate for rows of a few hundred values).
    ///
    /// # Panics
    /// If the queries' dimension differs from the rows' or `out.len() != nq * rows.len()`.
    pub fn scan_packed_i8(
        &self,
        queries: &[i16],
        nq: usize,
        rows: &packed::PackedRows,
        out: &mut [i32],
    ) {
        let (dim, n) = multi_shape(queries.len(), nq, out.len());
        assert!(
            dim == rows.dim() && n == rows.len(),
            "scan_packed_i8: rows / out mismatch"
        );
        if let Some(f) = self.scan_packed_bytes
            && let Some((bytes, _)) = packed::unsigned_queries(queries, nq)
        {
            // SAFETY: shapes checked above; the byte queries have whole quads, PackedRows
            // holds every block and sum the kernel reads; |sums| <= 255 * 128 * MAX_I8_DIM
            // < 2^31.
            unsafe { f(&bytes, nq, rows.quads(), rows.sums(), out) };
            return;
        }
        match self.scan_packed {
            // SAFETY: shapes checked above; PackedRows bounds the dimension (<= MAX_I8_DIM)
            // and holds every block the kernel reads.
            Some(f) => unsafe { f(queries, nq, rows.packed(), out) },
            None => self.scan_multi_i8(queries, nq, rows.rows(), out),
        }
    }

    /// The largest query code at which [`Kernels::scan_packed_i8`] runs at its full rate for
    /// rows of `dim` values: 127 where bytes are multiplied (AVX-512 VNNI), else
    /// [`quant::query_max_code`]. Any code up to `query_max_code` gives exact results.
    #[must_use]
    pub fn packed_query_max_code(&self, dim: usize) -> i16 {
        let widest = quant::query_max_code(dim);
        if self.scan_packed_bytes.is_some() {
            widest.min(127)
        } else {
            widest
        }
    }

    /// Exact integer dot products of every narrow query with every int8 row:
    /// `out[j * n + r] = queries_j . rows_r` for `n = out.len() / queries.len()` rows. The
    /// batched int8 scan for many queries where 7-bit queries are precise enough (candidates
    /// then rescored): 1.4-1.9x the multiply-adds per second of [`Kernels::scan_multi_i8`]
    /// on AVX2 (see the x86 module); other backends widen the codes and give the same numbers.
    ///
    /// # Panics
    /// If there are no queries, `rows.len() != dim * n` or `out.len()` is not a multiple of
    /// the number of queries.
    pub fn scan_multi_narrow(&self, queries: &quant::NarrowQueries, rows: &[i8], out: &mut [i32]) {
        let nq = queries.len();
        let (dim, n) = multi_shape(queries.codes().len(), nq, out.len());
        assert_eq!(
            rows.len(),
            dim * n,
            "scan_multi_narrow: rows / out mismatch"
        );
        match self.scan_multi_narrow {
            // SAFETY: shapes checked above; NarrowQueries bounds the kernel's int16 sums and
            // its dimension (<= MAX_I8_DIM).
            Some(f) => unsafe { f(queries.codes(), queries.offsets(), rows, out) },
            None => self.scan_multi_i8(queries.wide(), nq, rows, out),
        }
    }
}

impl Kernels {
    /// [`Kernels::scan_multi_f32`] with rounding that is the same on every backend and every
    /// machine (see the `fixed` module): sixteen FMA lanes in a fixed order and a fixed
    /// reduction tree. About as fast as the ordinary scan on AVX-512; use it where results must
    /// be reproducible bit for bit, such as seeded clustering.
    pub fn scan_multi_f32_fixed(&self, queries: &[f32], nq: usize, rows: &[f32], out: &mut [f32]) {
        let (dim, n) = multi_shape(queries.len(), nq, out.len());
        assert_eq!(
            rows.len(),
            dim * n,
            "scan_multi_f32_fixed: rows / out mismatch"
        );
        // SAFETY: as in `dot_f32`; the shapes were checked above.
        unsafe { (self.scan_multi_f32_fixed)(queries, nq, rows, out) }
    }

    /// `out[t]` = the dot product of `query` with row `idx[t]` of `rows` (`n x query.len()`),
    /// bit-identical to what [`Kernels::scan_multi_f32_fixed`] gives for that pair, for picking
    /// among a few scattered candidates at full speed.
    ///
    /// # Panics
    /// When `rows` is not a whole number of rows, `idx` and `out` differ in length, or an
    /// index is out of range.
    pub fn dots_f32_fixed_gather(&self, query: &[f32], rows: &[f32], idx: &[u32], out: &mut [f32]) {
        let dim = query.len();
        assert!(
            dim > 0 && rows.len().is_multiple_of(dim),
            "dots_f32_fixed_gather: rows / query mismatch"
        );
        assert_eq!(
            idx.len(),
            out.len(),
            "dots_f32_fixed_gather: idx / out mismatch"
        );
        let n = rows.len() / dim;
        assert!(
            idx.iter().all(|&j| (j as usize) < n),
            "dots_f32_fixed_gather: index out of range"
        );
        // SAFETY: as in `dot_f32`; every row read is in range (checked above).
        unsafe { (self.dots_f32_fixed_gather)(query, rows, idx, out) }
    }
}

fn multi_shape(q_len: usize, nq: usize, out_len: usize) -> (usize, usize) {
    assert!(
        nq > 0 && q_len > 0 && q_len.is_multiple_of(nq),
        "queries / nq mismatch"
    );
    assert!(out_len.is_multiple_of(nq), "out / nq mismatch");
    (q_len / nq, out_len / nq)
}

/// [`Kernels::dot_f32`] on the best backend.
#[must_use]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    Kernels::best().dot_f32(a, b)
}

/// [`Kernels::dot_i8`] on the best backend.
#[must_use]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    Kernels::best().dot_i8(a, b)
}

/// Asks the CPU to start loading the cache lines of `data` into cache, so that reads of
/// scattered rows overlap their memory latency (x86-64 only; elsewhere it does nothing).
#[inline]
pub fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = data.as_ptr().cast::<i8>();
        for off in (0..size_of_val(data)).step_by(64) {
            // SAFETY: SSE is part of x86-64; a prefetch of an address inside `data` never
            // faults and changes nothing observable.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// Scales `x` to unit L2 norm in place and returns its original norm (summed in f64). A zero
/// vector is left unchanged and 0.0 returned; callers decide whether that is an error. The
/// scaling is done in f64 too, so vectors of any finite magnitude (1e30, or 1e-40) come out
/// of unit length (the reciprocal of such a norm is not a normal f32).
pub fn normalize_l2(x: &mut [f32]) -> f64 {
    let norm = x
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        let inv = 1.0 / norm;
        for v in x.iter_mut() {
            *v = (f64::from(*v) * inv) as f32;
        }
    }
    norm
}
