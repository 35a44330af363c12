//! Times one search per storage over 2^20 clustered 384-dim vectors, with and without the
//! thread pool: `cargo run --release -p imesde-ring --example scan_speed`.
use std::time::Instant;

use imesde_ring::{Attributes, Filter, Ring, RingConfig, Storage, set_parallel};

fn main() {
    let (n, dim) = (1usize << 20, 384);
    let mut seed = 9u64;
    let mut rnd = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let centres: Vec<f32> = (0..4096 * dim).map(|_| rnd()).collect();
    let data: Vec<f32> = (0..n * dim)
        .map(|i| centres[((i / dim) % 4096) * dim + i % dim] + 0.5 * rnd())
        .collect();
    let queries: Vec<f32> = (0..20 * dim)
        .map(|i| data[(i / dim) * 997 * dim + i % dim] + 0.3 * rnd())
        .collect();
    for storage in [Storage::Int8, Storage::Binary] {
        let ring = Ring::new(RingConfig {
            dim,
            num_shards: 16,
            shard_size: n / 16,
            storage,
        })
        .unwrap();
        ring.ingest(&data, &Attributes::default()).unwrap();
        for parallel in [true, false] {
            set_parallel(parallel);
            let mut best = f64::MAX;
            for q in queries.chunks_exact(dim) {
                let t = Instant::now();
                let hits = ring.search(q, 10, &Filter::default()).unwrap();
                best = best.min(t.elapsed().as_secs_f64());
                assert_eq!(hits.len(), 10);
            }
            println!("{storage:?} parallel={parallel}: {:.2} ms", best * 1e3);
        }
    }
}
