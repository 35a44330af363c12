//! Times the binary lookup kernel per level (rows as an argument, 2^20 by default):
//! `cargo run --release -p imesde-simd --example binary_speed`.
use imesde_simd::binary::{self, BinaryQuery, Lookup};
use std::time::Instant;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(1 << 20, |a| a.parse().unwrap());
    let dim = 384;
    let w = binary::words(dim);
    let mut seed = 1u64;
    let blocks: Vec<u64> = (0..binary::blocked_len(n, w))
        .map(|_| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            seed
        })
        .collect();
    let q: Vec<f32> = (0..dim).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
    let bq = BinaryQuery::new(&q);
    let mut out = vec![0i32; n];
    for level in Lookup::ALL.into_iter().filter(|p| p.is_supported()) {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            level.sums(&bq, &blocks, &mut out);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{level:?}: {:.2} ms for {n} rows of {dim} bits ({:.1} GB/s)",
            best * 1e3,
            (n * w * 8) as f64 / best / 1e9
        );
    }
}
