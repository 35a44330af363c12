//! Peak multiply-add rate of this CPU core for the instructions the kernels are built from,
//! each alone in a loop of ten independent accumulators (no loads):
//!
//!     cargo run --release -p imesde-simd --example peak
//!
//! `vfmadd231ps` (f32, 8 per instruction) bounds the f32 kernels, `vpmaddwd` + `vpaddd`
//! (int16 pairs into int32, 16 per instruction) the int8 x int16 ones on AVX2, and
//! `vpmaddubsw` + `vpaddw` (uint8 x int8 pairs into saturating int16, 32 per instruction) a
//! kernel that could keep int16 sums, which needs queries of a few bits.

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi8, _mm256_add_epi16, _mm256_add_epi32, _mm256_add_ps,
        _mm256_fmadd_ps, _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_set1_epi8,
        _mm256_set1_epi16, _mm256_set1_ps, _mm256_setzero_ps, _mm256_setzero_si256,
        _mm256_storeu_ps, _mm256_storeu_si256,
    };
    use std::time::Instant;

    const STEPS: u64 = 20_000_000;
    const ACC: usize = 10;

    fn fold_i32(v: __m256i) -> i64 {
        let mut o = [0i32; 8];
        // SAFETY: o holds 32 bytes.
        unsafe { _mm256_storeu_si256(o.as_mut_ptr().cast(), v) };
        o.iter().map(|&x| i64::from(x)).sum()
    }

    #[target_feature(enable = "avx2,fma")]
    fn fma() -> f32 {
        let mut acc = [_mm256_setzero_ps(); ACC];
        let (mut x, b, step) = (
            _mm256_set1_ps(1.0),
            _mm256_set1_ps(0.5),
            _mm256_set1_ps(1e-9),
        );
        for _ in 0..STEPS {
            for a in &mut acc {
                *a = _mm256_fmadd_ps(x, b, *a);
            }
            x = _mm256_add_ps(x, step);
        }
        let s = acc
            .iter()
            .fold(_mm256_setzero_ps(), |s, &a| _mm256_add_ps(s, a));
        let mut o = [0f32; 8];
        // SAFETY: o holds 8 floats.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), s) };
        o.iter().sum()
    }

    #[target_feature(enable = "avx2")]
    fn madd16() -> i64 {
        let mut acc = [_mm256_setzero_si256(); ACC];
        let bs: [__m256i; ACC] = std::array::from_fn(|j| _mm256_set1_epi16(5 + j as i16));
        let (mut x, one) = (_mm256_set1_epi16(3), _mm256_set1_epi16(1));
        for _ in 0..STEPS {
            for (a, &b) in acc.iter_mut().zip(&bs) {
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(x, b));
            }
            x = _mm256_add_epi16(x, one);
        }
        acc.iter().map(|&a| fold_i32(a)).sum()
    }

    #[target_feature(enable = "avx2")]
    fn maddubs() -> i64 {
        let mut acc = [_mm256_setzero_si256(); ACC];
        let bs: [__m256i; ACC] = std::array::from_fn(|j| _mm256_set1_epi8(5 + j as i8));
        let (mut x, one) = (_mm256_set1_epi8(3), _mm256_set1_epi8(1));
        for _ in 0..STEPS {
            for (a, &b) in acc.iter_mut().zip(&bs) {
                *a = _mm256_add_epi16(*a, _mm256_maddubs_epi16(x, b));
            }
            x = _mm256_add_epi8(x, one);
        }
        acc.iter().map(|&a| fold_i32(a)).sum()
    }

    /// Giga multiply-adds per second of `f`, which runs `STEPS * ACC` instructions of `per`.
    fn rate(per: f64, f: impl FnOnce() -> f64) -> f64 {
        let t = Instant::now();
        let sink = f();
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(sink);
        (STEPS * ACC as u64) as f64 * per / secs / 1e9
    }

    pub fn main() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            println!("this CPU has no AVX2 + FMA");
            return;
        }
        // SAFETY: AVX2 and FMA were detected above.
        let f = rate(8.0, || f64::from(unsafe { fma() }));
        // SAFETY: as above.
        let m = rate(16.0, || unsafe { madd16() } as f64);
        // SAFETY: as above.
        let u = rate(32.0, || unsafe { maddubs() } as f64);
        println!(
            "one core, G multiply-adds/s: f32 FMA {f:.1}, vpmaddwd {m:.1} ({:.2}x), vpmaddubsw {u:.1} ({:.2}x)",
            m / f,
            u / f
        );
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    x86::main();
    #[cfg(not(target_arch = "x86_64"))]
    println!("x86_64 only");
}
