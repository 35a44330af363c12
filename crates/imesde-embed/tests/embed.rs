//! The embedder against the real all-MiniLM-L6-v2 int8 model and sentence-transformers' vectors.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::{cosine, golden_texts, model_path, read_npy_f32, runtime_path, tokenizer_path};
use imesde_embed::{EmbedError, Embedder, EmbedderConfig, Pooling, load_runtime};

fn embedder_with(config: EmbedderConfig) -> Embedder {
    load_runtime(&runtime_path()).expect("ONNX Runtime loads");
    Embedder::new(&model_path(), &tokenizer_path(), config).expect("model loads")
}

fn shared() -> &'static Embedder {
    static E: OnceLock<Embedder> = OnceLock::new();
    E.get_or_init(|| {
        embedder_with(EmbedderConfig {
            threads: Some(2),
            ..EmbedderConfig::default()
        })
    })
}

fn never() -> impl FnMut() -> bool {
    || false
}

#[test]
fn data_golden_texts_match_sentence_transformers() {
    let texts = golden_texts();
    let (golden, n, dim) = read_npy_f32(&common::data_dir().join("golden_minilm_l6_st.npy"));
    assert_eq!(n, texts.len());
    let e = shared();
    assert_eq!(e.dim(), dim);
    let got = e.embed(&texts, &mut never()).unwrap();
    let cos: Vec<f64> = (0..n)
        .map(|i| {
            cosine(
                &got[i * dim..(i + 1) * dim],
                &golden[i * dim..(i + 1) * dim],
            )
        })
        .collect();
    let mean = cos.iter().sum::<f64>() / n as f64;
    let min = cos.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(mean >= 0.9995 && min >= 0.995, "mean {mean}, min {min}");
    // Unit vectors.
    for row in got.chunks(dim) {
        let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
}

#[test]
fn batch_order_is_restored() {
    let e = embedder_with(EmbedderConfig {
        batch_size: 3,
        cache_size: 0,
        threads: Some(1),
        ..EmbedderConfig::default()
    });
    let texts = [
        "a very long text about the kernel scheduler, memory management and the page cache",
        "short",
        "translation update for the german debconf templates",
        "x",
        "fix a memory leak in the parser",
    ];
    let all = e.embed(&texts, &mut never()).unwrap();
    let d = e.dim();
    for (i, t) in texts.iter().enumerate() {
        let one = e.embed(&[t], &mut never()).unwrap();
        // Dynamic int8 quantisation depends a little on what shares the batch.
        let c = cosine(&all[i * d..(i + 1) * d], &one);
        assert!(c > 0.995, "text {i}: cosine {c}");
    }
    let s = e.stats();
    assert_eq!(s.embedded, 10);
    assert_eq!(s.batches, 2 + 5);
    assert!(s.padded_tokens >= s.tokens && s.tokens > 0);
}

#[test]
fn cache_serves_repeats_and_duplicates() {
    let e = embedder_with(EmbedderConfig {
        threads: Some(1),
        cache_size: 8,
        ..EmbedderConfig::default()
    });
    let first = e
        .embed(&["disk full", "disk full", "network down"], &mut never())
        .unwrap();
    let d = e.dim();
    assert_eq!(
        &first[..d],
        &first[d..2 * d],
        "a duplicate in one batch is embedded once"
    );
    let s = e.stats();
    assert_eq!(
        (s.requested, s.embedded, s.cache_hits, s.cache_misses),
        (3, 2, 0, 3)
    );
    let again = e
        .embed(&["network down", "disk full"], &mut never())
        .unwrap();
    assert_eq!(&again[..d], &first[2 * d..]);
    assert_eq!(&again[d..], &first[..d]);
    let s = e.stats();
    assert_eq!((s.requested, s.embedded, s.cache_hits), (5, 2, 2));
    assert_eq!(e.cache_len(), 2);
}

#[test]
fn cache_ttl_expires() {
    let e = embedder_with(EmbedderConfig {
        threads: Some(1),
        cache_ttl: Some(Duration::from_millis(50)),
        ..EmbedderConfig::default()
    });
    e.embed(&["one"], &mut never()).unwrap();
    e.embed(&["one"], &mut never()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    e.embed(&["one"], &mut never()).unwrap();
    let s = e.stats();
    assert_eq!((s.embedded, s.cache_hits), (2, 1));
}

#[test]
fn truncation_and_cls_pooling() {
    let long = "word ".repeat(1000);
    let short = embedder_with(EmbedderConfig {
        max_length: 16,
        threads: Some(1),
        cache_size: 0,
        ..EmbedderConfig::default()
    });
    let full = shared();
    let a = short.embed(&[&long], &mut never()).unwrap();
    let b = full.embed(&[&long], &mut never()).unwrap();
    assert!(
        cosine(&a, &b) < 0.9999,
        "max_length changes what the model sees"
    );
    assert_eq!(short.stats().tokens, 16);
    let cls = embedder_with(EmbedderConfig {
        pooling: Pooling::Cls,
        threads: Some(1),
        ..EmbedderConfig::default()
    });
    let c = cls.embed(&["memory leak fixed"], &mut never()).unwrap();
    let m = full.embed(&["memory leak fixed"], &mut never()).unwrap();
    assert!(cosine(&c, &m) < 0.99, "CLS and mean pooling differ");
}

#[test]
fn interruption_stops_between_batches() {
    let e = embedder_with(EmbedderConfig {
        batch_size: 2,
        threads: Some(1),
        ..EmbedderConfig::default()
    });
    let mut calls = 0;
    let texts = ["a", "b", "c", "d", "e"];
    let err = e
        .embed(&texts, &mut || {
            calls += 1;
            calls > 1
        })
        .unwrap_err();
    assert!(matches!(err, EmbedError::Interrupted));
    assert_eq!(e.cache_len(), 0, "nothing half-written to the cache");
    assert_eq!(e.embed(&texts, &mut never()).unwrap().len(), 5 * e.dim());
}

#[test]
fn bad_files_and_options_are_errors() {
    load_runtime(&runtime_path()).unwrap();
    let cfg = EmbedderConfig::default;
    let missing = std::path::Path::new("/nonexistent/model.onnx");
    assert!(matches!(
        Embedder::new(missing, &tokenizer_path(), cfg()),
        Err(EmbedError::NotFound {
            what: "model file",
            ..
        })
    ));
    // A tokenizer is not a model and a model is not a tokenizer.
    assert!(matches!(
        Embedder::new(&tokenizer_path(), &tokenizer_path(), cfg()),
        Err(EmbedError::Model { .. })
    ));
    assert!(matches!(
        Embedder::new(&model_path(), &model_path(), cfg()),
        Err(EmbedError::Tokenizer { .. })
    ));
    for bad in [
        EmbedderConfig {
            batch_size: 0,
            ..cfg()
        },
        EmbedderConfig {
            max_length: 1,
            ..cfg()
        },
        EmbedderConfig {
            threads: Some(0),
            ..cfg()
        },
        EmbedderConfig {
            threads: Some(100_000),
            ..cfg()
        },
    ] {
        assert!(matches!(
            Embedder::new(&model_path(), &tokenizer_path(), bad),
            Err(EmbedError::Config(_))
        ));
    }
}

#[test]
fn max_length_is_bounded_by_the_models_positions() {
    load_runtime(&runtime_path()).unwrap();
    assert_eq!(
        imesde_embed::position_limit(&model_path()).unwrap(),
        Some(512)
    );
    // Not a protobuf at all: no limit is claimed.
    assert!(imesde_embed::position_limit(&tokenizer_path()).is_err());
    let too_long = EmbedderConfig {
        max_length: 513,
        ..EmbedderConfig::default()
    };
    match Embedder::new(&model_path(), &tokenizer_path(), too_long) {
        Err(EmbedError::Config(msg)) => assert!(msg.contains("512 token positions"), "{msg}"),
        other => panic!("expected a config error, got {other:?}"),
    }
    // The whole table is usable: a text of more than 512 tokens is cut to 512 and embedded.
    let e = embedder_with(EmbedderConfig {
        max_length: 512,
        threads: Some(2),
        ..EmbedderConfig::default()
    });
    let long = "kernel memory leak fixed in the nfs client ".repeat(200);
    let v = e.embed(&[long.as_str()], &mut never()).unwrap();
    assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);
}
