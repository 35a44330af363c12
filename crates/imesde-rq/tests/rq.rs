//! RQ-KMeans on synthetic data: quality, reproducibility, balance, persistence, bad input.

use imesde_rq::metrics::{codebook_usage, collision_rate, reconstruction_error};
use imesde_rq::{Backend, FitConfig, Init, RqError, RqKMeans};

/// Deterministic data: `n` points around `centers` Gaussian-ish blobs in `dim` dimensions.
fn blobs(n: usize, dim: usize, centers: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let c: Vec<f32> = (0..centers * dim).map(|_| next() * 8.0).collect();
    let mut out = Vec::with_capacity(n * dim);
    for i in 0..n {
        let b = i % centers;
        for d in 0..dim {
            out.push(c[b * dim + d] + next() + next());
        }
    }
    out
}

fn cfg(ks: &[usize]) -> FitConfig {
    FitConfig {
        n_clusters: ks.to_vec(),
        seed: 7,
        ..FitConfig::default()
    }
}

#[test]
fn each_level_lowers_the_error_and_codes_decode_to_it() {
    let (n, dim) = (3000, 24);
    let x = blobs(n, dim, 40, 1);
    let (model, reports) = RqKMeans::fit(&x, dim, &cfg(&[16, 16, 16])).unwrap();
    assert_eq!(model.n_clusters(), vec![16, 16, 16]);
    for w in reports.windows(2) {
        assert!(w[1].mse < w[0].mse, "{reports:?}");
    }
    let codes = model.encode(&x, 1).unwrap();
    assert_eq!(codes.len(), n * 3);
    assert!(codes.iter().all(|&c| c < 16));
    let recon = model.decode(&codes).unwrap();
    let mse = reconstruction_error(&x, &recon, dim);
    // Refinement after training can only lower the error the levels reached.
    assert!(mse <= reports[2].mse * 1.001, "{mse} vs {reports:?}");
    let total: f64 = x
        .chunks(dim)
        .map(|r| r.iter().map(|&v| f64::from(v * v)).sum::<f64>())
        .sum();
    assert!(mse < 0.2 * total / n as f64);

    // Beam search finds codes at least as good on average.
    let beam = model.decode(&model.encode(&x, 8).unwrap()).unwrap();
    assert!(reconstruction_error(&x, &beam, dim) <= mse);
    // It scores blocks of vectors together, with the same codes as one vector at a time.
    for width in [2, 3, 40] {
        let batch = model.encode(&x[..100 * dim], width).unwrap();
        for i in 0..100 {
            let one = model.encode(&x[i * dim..(i + 1) * dim], width).unwrap();
            assert_eq!(one, batch[i * 3..(i + 1) * 3], "beam {width}, vector {i}");
        }
    }
    // A beam as wide as the number of codes is exhaustive search; a wider one changes nothing
    // and asks for no more memory.
    let all = model.encode(&x[..10 * dim], 16 * 16 * 16).unwrap();
    assert_eq!(model.encode(&x[..10 * dim], usize::MAX / 2).unwrap(), all);
}

#[test]
fn same_seed_same_codebooks_on_every_backend_and_thread_count() {
    // 67 dims: a ragged tail for the kernels, and room for the refinement's candidate lists.
    let (dim, n) = (67, 1500);
    let x = blobs(n, dim, 25, 2);
    // [64, 8]: the first level takes restricted steps (and plain training re-seeds starved
    // clusters).
    for (ks, balanced) in [
        (&[8, 8][..], false),
        (&[64, 8][..], false),
        (&[64, 8][..], true),
    ] {
        let fit_on = |backend: Option<Backend>, threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let c = FitConfig {
                    backend,
                    balanced,
                    ..cfg(ks)
                };
                RqKMeans::fit(&x, dim, &c).unwrap().0
            })
        };
        let reference = fit_on(Some(Backend::Scalar), 1);
        let ref_codes = reference.encode(&x, 1).unwrap();
        let mut backends: Vec<_> = Backend::supported();
        backends.retain(|b| *b != Backend::Scalar);
        for b in backends {
            for threads in [1, 3] {
                let m = fit_on(Some(b), threads);
                for (a, r) in m.levels().iter().zip(reference.levels()) {
                    let same = a
                        .centroids()
                        .iter()
                        .zip(r.centroids())
                        .all(|(p, q)| p.to_bits() == q.to_bits());
                    assert!(same, "{ks:?}, {b:?} x {threads} threads: codebooks differ");
                }
                assert_eq!(m.encode(&x, 1).unwrap(), ref_codes);
                assert_eq!(m.encode(&x, 4).unwrap(), reference.encode(&x, 4).unwrap());
            }
        }
    }
    let reference = RqKMeans::fit(&x, dim, &cfg(&[8, 8])).unwrap().0;
    // A different seed gives a different model.
    let other = RqKMeans::fit(
        &x,
        dim,
        &FitConfig {
            seed: 8,
            ..cfg(&[8, 8])
        },
    )
    .unwrap()
    .0;
    assert_ne!(other, reference);
}

#[test]
fn kmeans_plus_plus_and_sampling_train_too() {
    let dim = 16;
    let x = blobs(4000, dim, 30, 3);
    let c = FitConfig {
        init: Init::KMeansPlusPlus,
        sample_size: Some(1000),
        ..cfg(&[32, 32])
    };
    let (m, _) = RqKMeans::fit(&x, dim, &c).unwrap();
    let codes = m.encode(&x, 1).unwrap();
    let usage = codebook_usage(&codes, &[32, 32]);
    assert!(usage[0].used >= 30, "{:?}", usage[0].used);
    let err = reconstruction_error(&x, &m.decode(&codes).unwrap(), dim);
    let (plain, _) = RqKMeans::fit(&x, dim, &cfg(&[32, 32])).unwrap();
    let err_all = reconstruction_error(
        &x,
        &plain.decode(&plain.encode(&x, 1).unwrap()).unwrap(),
        dim,
    );
    assert!(err < err_all * 1.5, "{err} vs {err_all}");
}

#[test]
fn balanced_training_uses_codes_evenly() {
    // Very uneven blobs: 70 % of the points in one of them.
    let dim = 12;
    let mut x = blobs(2800, dim, 1, 4);
    x.extend(blobs(1200, dim, 12, 5));
    let n_levels = 2;
    let ks = [32, 32];
    let (plain, _) = RqKMeans::fit(&x, dim, &cfg(&ks)).unwrap();
    let (bal, _) = RqKMeans::fit(
        &x,
        dim,
        &FitConfig {
            balanced: true,
            ..cfg(&ks)
        },
    )
    .unwrap();
    assert!(
        bal.levels()
            .iter()
            .zip(ks)
            .all(|(l, k)| l.bias().len() == k)
    );
    let pu = codebook_usage(&plain.encode(&x, 1).unwrap(), &ks);
    // Plain training re-seeds starved clusters, so it is fairly even too; balanced must reach
    // the goal on this skewed data on its own.
    assert!(pu.iter().zip(ks).all(|(u, k)| u.used == k));
    let codes = bal.encode(&x, 1).unwrap();
    let bu = codebook_usage(&codes, &ks);
    for l in 0..n_levels {
        assert!(bu[l].entropy >= 0.98, "level {l}: {}", bu[l].entropy);
    }
    assert!(collision_rate(&codes, n_levels) <= 1.0);

    // Refinement (one round by default) lowers the error; the biases learnt again for the
    // moved codewords keep the split even, after any number of rounds.
    let mse_of =
        |m: &RqKMeans| reconstruction_error(&x, &m.decode(&m.encode(&x, 1).unwrap()).unwrap(), dim);
    let (unrefined, _) = RqKMeans::fit(
        &x,
        dim,
        &FitConfig {
            balanced: true,
            refine: Some(0),
            ..cfg(&ks)
        },
    )
    .unwrap();
    assert!(mse_of(&bal) < mse_of(&unrefined));
    let (more, _) = RqKMeans::fit(
        &x,
        dim,
        &FitConfig {
            balanced: true,
            refine: Some(4),
            ..cfg(&ks)
        },
    )
    .unwrap();
    for (l, u) in codebook_usage(&more.encode(&x, 1).unwrap(), &ks)
        .iter()
        .enumerate()
    {
        assert!(u.entropy >= 0.98, "4 rounds, level {l}: {}", u.entropy);
    }

    // 128 codewords, trained with restricted (candidate-list) steps between full passes.
    let x = blobs(6000, dim, 40, 9);
    let ks = [128];
    let c = FitConfig {
        balanced: true,
        ..cfg(&ks)
    };
    let (bal, _) = RqKMeans::fit(&x, dim, &c).unwrap();
    let bu = codebook_usage(&bal.encode(&x, 1).unwrap(), &ks);
    assert!(bu[0].entropy >= 0.98, "{}", bu[0].entropy);
}

#[test]
fn duplicates_and_empty_clusters_do_not_break_training() {
    // 600 points but only 5 distinct ones: most clusters start or end empty.
    let dim = 8;
    let base = blobs(5, dim, 5, 6);
    let x: Vec<f32> = (0..600)
        .flat_map(|i| base[(i % 5) * dim..(i % 5 + 1) * dim].to_vec())
        .collect();
    for balanced in [false, true] {
        let (m, _) = RqKMeans::fit(
            &x,
            dim,
            &FitConfig {
                balanced,
                ..cfg(&[16, 4])
            },
        )
        .unwrap();
        assert!(
            m.levels()
                .iter()
                .all(|l| l.centroids().iter().all(|v| v.is_finite()))
        );
        let codes = m.encode(&x, 1).unwrap();
        let err = reconstruction_error(&x, &m.decode(&codes).unwrap(), dim);
        assert!(err < 1e-3, "{balanced}: {err}");
        assert!((collision_rate(&codes, 2) - 1.0).abs() < 1e-12);
    }
}

#[test]
fn save_load_gives_the_same_codes_and_rejects_damage() {
    let dim = 20;
    let x = blobs(1000, dim, 10, 7);
    let (m, _) = RqKMeans::fit(
        &x,
        dim,
        &FitConfig {
            balanced: true,
            ..cfg(&[8, 16])
        },
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("imesde-rq-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("codebooks.rq");
    m.save(&p).unwrap();
    let back = RqKMeans::load(&p).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.encode(&x, 1).unwrap(), m.encode(&x, 1).unwrap());
    assert_eq!(back.encode(&x, 3).unwrap(), m.encode(&x, 3).unwrap());

    let bytes = std::fs::read(&p).unwrap();
    for cut in [0, 5, 20, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        assert!(
            matches!(RqKMeans::load(&p), Err(RqError::Corrupt { .. })),
            "cut {cut}"
        );
    }
    let mut bad = bytes.clone();
    bad[bytes.len() / 3] ^= 1;
    std::fs::write(&p, &bad).unwrap();
    assert!(matches!(RqKMeans::load(&p), Err(RqError::Corrupt { .. })));
    assert!(matches!(
        RqKMeans::load(&dir.join("missing")),
        Err(RqError::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_an_error() {
    let dim = 4;
    let x = blobs(50, dim, 3, 8);
    assert!(matches!(
        RqKMeans::fit(&x, dim, &cfg(&[51])),
        Err(RqError::Invalid(_))
    ));
    assert!(matches!(
        RqKMeans::fit(&x, dim, &cfg(&[0])),
        Err(RqError::Invalid(_))
    ));
    assert!(matches!(
        RqKMeans::fit(&x, dim, &cfg(&[])),
        Err(RqError::Invalid(_))
    ));
    assert!(matches!(
        RqKMeans::fit(&x[..7], dim, &cfg(&[2])),
        Err(RqError::Invalid(_))
    ));
    let mut nan = x.clone();
    nan[9] = f32::NAN;
    assert!(matches!(
        RqKMeans::fit(&nan, dim, &cfg(&[2])),
        Err(RqError::Invalid(_))
    ));
    let (m, _) = RqKMeans::fit(&x, dim, &cfg(&[4, 4])).unwrap();
    assert!(matches!(
        m.encode(&x[..6], 1),
        Err(RqError::Dimension { .. })
    ));
    assert!(matches!(m.encode(&nan, 1), Err(RqError::Invalid(_))));
    assert!(matches!(m.encode(&x, 0), Err(RqError::Invalid(_))));
    assert!(matches!(
        m.decode(&[1, 4]),
        Err(RqError::Code {
            level: 1,
            code: 4,
            k: 4
        })
    ));
    assert!(matches!(m.decode(&[1, 2, 3]), Err(RqError::Invalid(_))));
}

#[test]
#[allow(clippy::float_cmp)] // scaling by a power of two is exact
fn any_finite_magnitude_gives_the_model_of_the_data_scaled() {
    // A power of two only moves exponents, so training and encoding on the data divided by
    // one are exact: the codes at 2^70 (about 1e21, where squared distances overflow f32) and
    // at 2^-70 (1e-21, where they underflow) are those of the data at magnitude 1.
    let (n, dim) = (2000, 384);
    let x = blobs(n, dim, 30, 5);
    for balanced in [false, true] {
        let c = FitConfig {
            balanced,
            ..cfg(&[16, 16])
        };
        let (base, base_reports) = RqKMeans::fit(&x, dim, &c).unwrap();
        let codes = base.encode(&x, 1).unwrap();
        for e in [-70, -20, 20, 70, 120] {
            let s = 2f32.powi(e);
            let xs: Vec<f32> = x.iter().map(|v| v * s).collect();
            let (m, reports) = RqKMeans::fit(&xs, dim, &c).unwrap();
            assert_eq!(
                m.encode(&xs, 1).unwrap(),
                codes,
                "2^{e}, balanced {balanced}"
            );
            assert_eq!(m.encode(&xs, 4).unwrap(), base.encode(&x, 4).unwrap());
            let back = m.decode(&codes).unwrap();
            let expect = base.decode(&codes).unwrap();
            assert!(back.iter().zip(&expect).all(|(a, b)| *a == b * s));
            let ratio = reports[1].mse / base_reports[1].mse / f64::from(s) / f64::from(s);
            assert!((ratio - 1.0).abs() < 1e-9, "2^{e}: mse ratio {ratio}");
            for (a, b) in m.levels().iter().zip(base.levels()) {
                assert!(
                    a.centroids()
                        .iter()
                        .zip(b.centroids())
                        .all(|(p, q)| *p == q * s)
                );
            }
            // A file holds the data's units and loads as the same model.
            let again = RqKMeans::from_bytes(&m.to_bytes(), std::path::Path::new("m")).unwrap();
            assert_eq!(again.encode(&xs, 1).unwrap(), codes);
        }
        // Decimal magnitudes (not powers of two) still train and encode sensibly.
        let big: Vec<f32> = x.iter().map(|v| v * 1e20).collect();
        let (m, _) = RqKMeans::fit(&big, dim, &c).unwrap();
        let agree = m
            .encode(&big, 1)
            .unwrap()
            .chunks(2)
            .zip(codes.chunks(2))
            .filter(|(a, b)| a == b)
            .count();
        assert!(agree > n * 9 / 10, "{agree} of {n}");
    }
}

#[test]
fn rows_far_beyond_the_training_magnitude_are_refused() {
    let (n, dim) = (500, 8);
    let x = blobs(n, dim, 10, 2);
    let (m, _) = RqKMeans::fit(&x, dim, &cfg(&[8])).unwrap();
    let mut huge = x[..dim].to_vec();
    huge[3] = 1e30;
    for beam in [1, 3] {
        let e = m.encode(&huge, beam).unwrap_err();
        assert!(
            matches!(e, RqError::Invalid(ref msg) if msg.contains("vector 0")),
            "{e}"
        );
    }
    // Large but within 2^60 of the training data: encoded.
    huge[3] = 1e15;
    assert_eq!(m.encode(&huge, 1).unwrap().len(), 1);
}

#[test]
fn a_fit_told_to_stop_ends_with_interrupted() {
    let data = blobs(4000, 16, 20, 3);
    let asked = std::sync::atomic::AtomicUsize::new(0);
    let stop = || asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= 3;
    let res = RqKMeans::fit_until(&data, 16, &cfg(&[32, 32]), &stop);
    assert!(matches!(res, Err(RqError::Interrupted)), "{res:?}");
    let never = RqKMeans::fit_until(&data, 16, &cfg(&[32, 32]), &|| false).unwrap();
    let plain = RqKMeans::fit(&data, 16, &cfg(&[32, 32])).unwrap();
    assert_eq!(
        never.0.encode(&data, 1).unwrap(),
        plain.0.encode(&data, 1).unwrap()
    );
}
