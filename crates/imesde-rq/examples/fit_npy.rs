//! Trains on a float32 `.npy` matrix and prints time, MSE, collisions and usage:
//! `cargo run --release -p imesde-rq --example fit_npy -- X.npy 256,256,256,256 [balanced|plain] [beam]`
//!
//! Environment knobs for experiments: `ITERS` (max iterations, 25), `REFINE` (refinement rounds;
//! default 3 plain, 1 balanced), `PP` (set: k-means++ initialisation).

use std::time::Instant;

use imesde_rq::metrics::{codebook_usage, collision_rate, reconstruction_error};
use imesde_rq::{FitConfig, RqKMeans};

fn read_npy(path: &str) -> (Vec<f32>, usize) {
    let bytes = std::fs::read(path).expect("read");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).expect("header");
    assert!(header.contains("'<f4'"), "float32 little-endian only");
    let shape = header.split("'shape': (").nth(1).expect("shape");
    let dims: Vec<usize> = shape
        .split(')')
        .next()
        .expect("shape")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let data = bytes[10 + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
        .collect();
    (data, dims[1])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (data, dim) = read_npy(&args[1]);
    let ks: Vec<usize> = args[2].split(',').map(|s| s.parse().expect("k")).collect();
    let balanced = args.get(3).is_some_and(|s| s == "balanced");
    let beam: usize = args.get(4).map_or(1, |s| s.parse().expect("beam"));
    let cfg = FitConfig {
        n_clusters: ks.clone(),
        balanced,
        seed: 42,
        init: if std::env::var("PP").is_ok() {
            imesde_rq::Init::KMeansPlusPlus
        } else {
            imesde_rq::Init::Random
        },
        refine: std::env::var("REFINE")
            .ok()
            .map(|v| v.parse().expect("refine")),
        max_iter: std::env::var("ITERS").map_or(25, |v| v.parse().expect("iters")),
        ..FitConfig::default()
    };
    let t = Instant::now();
    let (model, reports) = RqKMeans::fit(&data, dim, &cfg).expect("fit");
    let fit_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let codes = model.encode(&data, beam).expect("encode");
    let enc_s = t.elapsed().as_secs_f64();
    let recon = model.decode(&codes).expect("decode");
    let n = data.len() / dim;
    println!(
        "fit {fit_s:.2}s encode {:.0}/s mse {:.4} collisions {:.4}",
        n as f64 / enc_s,
        reconstruction_error(&data, &recon, dim),
        collision_rate(&codes, ks.len())
    );
    for (r, u) in reports.iter().zip(codebook_usage(&codes, &ks)) {
        println!(
            "  iters {} converged {} mse {:.4} used {}/{} entropy {:.4} min {} max {}",
            r.iterations,
            r.converged,
            r.mse,
            u.used,
            u.k,
            u.entropy,
            u.counts.iter().min().unwrap(),
            u.counts.iter().max().unwrap()
        );
    }
}
