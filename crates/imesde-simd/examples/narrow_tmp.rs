use imesde_simd::{Kernels, quant};
use std::time::Instant;
fn main() {
    let dim = 384; let n: usize = std::env::var("N").map_or(1024, |v| v.parse().unwrap()); let nq = 64;
    let mut s = 12345u64;
    let mut rnd = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; ((s >> 11) as f64 / (1u64 << 53) as f64) as f32 - 0.5 };
    let rows: Vec<f32> = (0..2 * n * dim).map(|_| rnd()).collect();
    let qs: Vec<f32> = (0..nq * dim).map(|_| rnd()).collect();
    let mut codes = vec![0i8; 2 * n * dim];
    for (x, c) in rows.chunks_exact(dim).zip(codes.chunks_exact_mut(dim)) { quant::quantize_i8(x, c); }
    let nqq = quant::NarrowQueries::new(&qs, dim);
    let k = Kernels::best();
    let threads: usize = std::env::args().nth(1).map_or(1, |v| v.parse().unwrap());
    let mut best = 1e9f64;
    for _ in 0..15 {
        let t = Instant::now();
        std::thread::scope(|sc| {
            for th in 0..threads {
                let c = &codes[th * n * dim..(th + 1) * n * dim];
                let nqq = &nqq;
                sc.spawn(move || { let mut o = vec![0i32; nq * n]; for _ in 0..50 { k.scan_multi_narrow(nqq, c, &mut o); } });
            }
        });
        best = best.min(t.elapsed().as_secs_f64() / 50.0);
    }
    println!("{threads} threads: {:.1} G MAC/s", (dim * n * nq * threads) as f64 / best / 1e9);
}
