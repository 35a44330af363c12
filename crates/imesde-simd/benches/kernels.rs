//! Criterion groups with the scalar baseline beside every SIMD backend this CPU supports.
//! Run: `cargo bench -p imesde-simd`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use imesde_simd::{Backend, Kernels, quant};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::hint::black_box;

const DIM: usize = 384;
const ROWS: usize = 4096;
const NQ: usize = 16;

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn kernels(c: &mut Criterion) {
    let rows = data(ROWS * DIM, 1);
    let qs = data(NQ * DIM, 2);
    let mut codes = vec![0i8; ROWS * DIM];
    for (x, c8) in rows.chunks_exact(DIM).zip(codes.chunks_exact_mut(DIM)) {
        quant::quantize_i8(x, c8);
    }
    let mut q16 = vec![0i16; NQ * DIM];
    for (q, c16) in qs.chunks_exact(DIM).zip(q16.chunks_exact_mut(DIM)) {
        quant::quantize_query(q, c16);
    }
    let backends: Vec<(Backend, &Kernels)> = Backend::supported()
        .into_iter()
        .filter_map(|b| Kernels::get(b).map(|k| (b, k)))
        .collect();

    let mut g = c.benchmark_group("dot_f32_384");
    g.throughput(Throughput::Elements(DIM as u64));
    for &(b, k) in &backends {
        g.bench_function(BenchmarkId::from_parameter(b.name()), |bench| {
            bench.iter(|| k.dot_f32(black_box(&rows[..DIM]), black_box(&qs[..DIM])));
        });
    }
    g.finish();

    let mut g = c.benchmark_group("scan_f32_4096x384");
    g.throughput(Throughput::Bytes((ROWS * DIM * 4) as u64));
    for &(b, k) in &backends {
        let mut out = vec![0.0f32; ROWS];
        g.bench_function(BenchmarkId::from_parameter(b.name()), |bench| {
            bench.iter(|| k.scan_f32(black_box(&qs[..DIM]), black_box(&rows), &mut out));
        });
    }
    g.finish();

    let mut g = c.benchmark_group("scan_i8_4096x384");
    g.throughput(Throughput::Bytes((ROWS * DIM) as u64));
    for &(b, k) in &backends {
        let mut out = vec![0i32; ROWS];
        g.bench_function(BenchmarkId::from_parameter(b.name()), |bench| {
            bench.iter(|| k.scan_i8(black_box(&q16[..DIM]), black_box(&codes), &mut out));
        });
    }
    g.finish();

    let mut g = c.benchmark_group("scan_multi_f32_16q_4096x384");
    g.throughput(Throughput::Elements((ROWS * NQ) as u64));
    for &(b, k) in &backends {
        let mut out = vec![0.0f32; ROWS * NQ];
        g.bench_function(BenchmarkId::from_parameter(b.name()), |bench| {
            bench.iter(|| k.scan_multi_f32(black_box(&qs), NQ, black_box(&rows), &mut out));
        });
    }
    g.finish();

    // 15-bit queries and 7-bit (narrow) ones over the same int8 rows, per backend.
    let narrow = quant::NarrowQueries::new(&qs, DIM);
    let mut g = c.benchmark_group("scan_multi_i8_16q_4096x384");
    g.throughput(Throughput::Elements((ROWS * NQ) as u64));
    for &(b, k) in &backends {
        let mut out = vec![0i32; ROWS * NQ];
        g.bench_function(BenchmarkId::new("i16", b.name()), |bench| {
            bench.iter(|| k.scan_multi_i8(black_box(&q16), NQ, black_box(&codes), &mut out));
        });
        g.bench_function(BenchmarkId::new("narrow", b.name()), |bench| {
            bench.iter(|| k.scan_multi_narrow(black_box(&narrow), black_box(&codes), &mut out));
        });
    }
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
