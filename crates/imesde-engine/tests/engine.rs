//! The engine from Rust, without Python: ingest, filtered search, BM25 and hybrid search,
//! standing queries, snapshots and semantic ids, on the real all-MiniLM-L6-v2 model.

#[path = "../../imesde-embed/tests/common/mod.rs"]
mod common;

use std::sync::{Arc, OnceLock};

use imesde_embed::{Embedder, EmbedderConfig, load_runtime};
use imesde_engine::{
    Engine, EngineError, Fusion, IdFormat, IdStore, RqLabeler, SEMANTIC_ID, TextModel, Threshold,
};
use imesde_ring::{
    Attributes, Filter, Metadata, MetadataUpdate, Predicate, RingConfig, Storage, Value,
};
use imesde_rq::{FitConfig, RqKMeans};

fn model() -> Arc<TextModel> {
    static M: OnceLock<Arc<TextModel>> = OnceLock::new();
    Arc::clone(M.get_or_init(|| {
        load_runtime(&common::runtime_path()).expect("ONNX Runtime loads");
        let cfg = EmbedderConfig {
            threads: Some(2),
            ..EmbedderConfig::default()
        };
        let e = Embedder::new(&common::model_path(), &common::tokenizer_path(), cfg).unwrap();
        Arc::new(TextModel::new(e))
    }))
}

fn never() -> impl FnMut() -> bool {
    || false
}

fn ring(dim: usize, shards: usize, size: usize) -> RingConfig {
    RingConfig {
        dim,
        num_shards: shards,
        shard_size: size,
        storage: Storage::F32,
    }
}

fn texts(items: &[&str]) -> Vec<Arc<str>> {
    items.iter().map(|t| Arc::from(*t)).collect()
}

const LOG: [&str; 6] = [
    "kernel: out of memory: killed process 4242 (postgres)",
    "sshd: accepted publickey for deploy from 10.0.0.7",
    "nginx: upstream timed out while reading response header",
    "disk /dev/sda1 is 98% full",
    "Fix CVE-2024-1234 in the nfs client",
    "cron: job finished",
];

fn log_engine(lexical: bool) -> Engine {
    let m = model();
    let e = Engine::new(ring(m.embedder().dim(), 4, 8), Some(m), lexical).unwrap();
    let attrs = Attributes {
        timestamps: (0..LOG.len()).map(|i| 100.0 + i as f64).collect(),
        metadata: (0..LOG.len())
            .map(|i| {
                let host = if i % 2 == 0 { "db1" } else { "web1" };
                Some(Metadata::new([("host", host)]))
            })
            .collect(),
        ..Attributes::default()
    };
    let got = e.ingest_texts(&texts(&LOG), attrs, &mut never()).unwrap();
    assert_eq!(got.ids, 0..LOG.len() as u64);
    e
}

#[test]
fn text_search_finds_meaning_and_filters_apply() {
    let e = log_engine(false);
    let hits = e
        .search_text(
            "process killed by the OOM killer",
            1,
            &Filter::default(),
            &mut never(),
        )
        .unwrap();
    assert_eq!(hits[0].text.as_deref(), Some(LOG[0]));
    let storage = e
        .search_text("storage running out", 2, &Filter::default(), &mut never())
        .unwrap();
    assert_eq!(storage[0].text.as_deref(), Some(LOG[3]));
    // Only web1 (odd) items with 101 <= ts < 104: ids 1 and 3.
    let filter = Filter {
        since: Some(101.0),
        until: Some(104.0),
        predicate: Some(Predicate::eq("host", "web1")),
        ..Filter::default()
    };
    let hits = e
        .search_text("anything", 10, &filter, &mut never())
        .unwrap();
    let mut ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 3]);
    // A batch of queries answers as one query at a time.
    let batch = e
        .search_texts(
            &texts(&["disk full", "ssh login"]),
            1,
            &Filter::default(),
            &mut never(),
        )
        .unwrap();
    assert_eq!(batch[0][0].id, 3);
    assert_eq!(batch[1][0].id, 1);
    // Vectors only: no model.
    let v = Engine::new(ring(4, 1, 4), None, false).unwrap();
    assert!(matches!(
        v.search_text("x", 1, &Filter::default(), &mut never()),
        Err(EngineError::NoModel)
    ));
}

#[test]
fn lexical_hybrid_and_recent_apply_the_filter() {
    let e = log_engine(true);
    let web = Filter::matching(Predicate::eq("host", "web1"));
    let db = Filter::matching(Predicate::eq("host", "db1"));
    // "Fix CVE-2024-1234 in the nfs client" is item 4, on db1.
    let lex = |f: &Filter| e.lexical_search("CVE-2024-1234 nfs client", 10, f).unwrap();
    assert_eq!(lex(&db).iter().map(|h| h.id).collect::<Vec<_>>(), [4]);
    assert!(lex(&web).is_empty());
    // The query as its analyzed terms: the same hits and scores.
    let config = e.lexical_config().unwrap().analyzer();
    let terms = imesde_bm25::Analyzer::new(config)
        .unwrap()
        .analyze("CVE-2024-1234 nfs client");
    let by_terms = e.lexical_search(&terms, 10, &db).unwrap();
    let by_text = lex(&db);
    assert_eq!(
        by_terms.iter().map(|h| (h.id, h.score)).collect::<Vec<_>>(),
        by_text.iter().map(|h| (h.id, h.score)).collect::<Vec<_>>()
    );
    for f in [&web, &db] {
        let hybrid = e
            .hybrid_search(
                "nfs client security fix",
                10,
                Fusion::Rrf { k: 60.0 },
                None,
                f,
                &mut never(),
            )
            .unwrap();
        assert_eq!(
            hybrid.len(),
            3,
            "both sides keep only the three items of one host"
        );
        assert!(
            hybrid
                .iter()
                .all(|h| f.matches(h.ts, h.metadata.as_ref(), h.text.as_deref()))
        );
        let recent = e.recent(10, f).unwrap();
        assert_eq!(recent.len(), 3);
        assert!(recent.windows(2).all(|w| w[0].id > w[1].id));
    }
    let window = Filter {
        since: Some(102.0),
        until: Some(104.0),
        ..Filter::default()
    };
    let ids: Vec<u64> = e
        .recent(10, &window)
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, [3, 2]);
}

#[test]
fn every_search_refuses_k_of_0_and_an_empty_batch_is_no_error() {
    let e = log_engine(true);
    let q = e
        .embed_queries(&texts(&["disk full"]), &mut never())
        .unwrap();
    let all = Filter::default();
    let zero_k = |r: imesde_engine::Result<Vec<imesde_ring::Hit>>| {
        assert!(
            matches!(r, Err(EngineError::Ring(imesde_ring::RingError::ZeroK))),
            "{r:?}"
        );
    };
    zero_k(e.search_vector(&q, 0, &all));
    zero_k(e.search_text("disk full", 0, &all, &mut never()));
    zero_k(e.lexical_search("disk", 0, &all));
    zero_k(e.hybrid_search("disk", 0, Fusion::Rrf { k: 60.0 }, None, &all, &mut never()));
    zero_k(e.hybrid_search_vector("disk", &q, 0, Fusion::Weighted, None, &all));
    assert!(e.search_texts(&[], 0, &all, &mut never()).is_err());
    // Empty batches: nothing stored, nothing found, no error.
    let held = e.ring().len();
    assert!(
        e.ingest_vectors(&[], Attributes::default())
            .unwrap()
            .ids
            .is_empty()
    );
    assert!(
        e.ingest_texts(&[], Attributes::default(), &mut never())
            .unwrap()
            .ids
            .is_empty()
    );
    assert_eq!(e.ring().len(), held);
    assert_eq!(e.search_vectors(&[], 3, &all).unwrap().nq, 0);
    assert!(
        e.search_texts(&[], 3, &all, &mut never())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_ring_keeps_the_newest_and_bm25_follows_it() {
    let e = log_engine(true);
    let hits = e
        .lexical_search("CVE-2024-1234", 10, &Filter::default())
        .unwrap();
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), [4]);
    // 32 slots: 40 more items push out the first six, and BM25 forgets them too.
    let more: Vec<String> = (0..40).map(|i| format!("routine heartbeat {i}")).collect();
    let more: Vec<Arc<str>> = more.iter().map(|t| Arc::from(t.as_str())).collect();
    e.ingest_texts(&more, Attributes::default(), &mut never())
        .unwrap();
    assert_eq!(e.ring().len(), 32);
    assert!(e.get(4).is_none());
    assert!(
        e.lexical_search("CVE-2024-1234", 10, &Filter::default())
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        e.lexical_search("heartbeat", 100, &Filter::default())
            .unwrap()
            .len(),
        32
    );
    // No BM25 index: a clear error.
    assert!(matches!(
        log_engine(false).lexical_search("x", 1, &Filter::default()),
        Err(EngineError::NoLexical)
    ));
}

#[test]
fn hybrid_search_fuses_both_sides() {
    let e = log_engine(true);
    let hits = e
        .hybrid_search(
            "nfs client security fix",
            3,
            Fusion::Rrf { k: 60.0 },
            None,
            &Filter::default(),
            &mut never(),
        )
        .unwrap();
    assert_eq!(hits[0].id, 4);
    assert!(hits.len() <= 3);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    let weighted = e
        .hybrid_search(
            "disk full",
            2,
            Fusion::Weighted,
            Some(0.7),
            &Filter::default(),
            &mut never(),
        )
        .unwrap();
    assert_eq!(weighted[0].id, 3);
    assert!(matches!(
        e.hybrid_search(
            "x",
            2,
            Fusion::Weighted,
            Some(1.5),
            &Filter::default(),
            &mut never()
        ),
        Err(EngineError::Invalid(_))
    ));
    // The query's embedding given: the same as the model's own.
    let q = e
        .model()
        .unwrap()
        .embed(&texts(&["disk full"]), None, &mut never())
        .unwrap();
    let given = e
        .hybrid_search_vector(
            "disk full",
            &q,
            2,
            Fusion::Weighted,
            Some(0.7),
            &Filter::default(),
        )
        .unwrap();
    let ids = |h: &[imesde_ring::Hit]| h.iter().map(|h| h.id).collect::<Vec<_>>();
    assert_eq!(ids(&given), ids(&weighted));
    assert!(
        e.hybrid_search_vector(
            "disk full",
            &q[..8],
            2,
            Fusion::Weighted,
            None,
            &Filter::default()
        )
        .is_err()
    );
}

#[test]
fn standing_queries_fire_for_new_items() {
    let e = log_engine(false);
    let m = e.model().unwrap();
    let q = m
        .embed(&texts(&["the disk is full"]), None, &mut never())
        .unwrap();
    let (id, t) = e
        .subscribe(&q, Some(Threshold::Score(0.5)), None, Filter::default())
        .unwrap();
    assert_eq!(t, Some(0.5));
    let got = e
        .ingest_texts(
            &texts(&["no space left on device /dev/sdb", "user logged in"]),
            Attributes::default(),
            &mut never(),
        )
        .unwrap();
    assert_eq!(got.events.len(), 1);
    assert_eq!(got.events[0].subscription, id);
    assert_eq!(got.events[0].hit.id, got.ids.start);
    assert!(got.events[0].hit.score >= 0.5);
    // A percentile calibrates on what is held now: p50 fires for about half of similar items.
    let (_, t) = e
        .subscribe(
            &q,
            Some(Threshold::Percentile(50.0)),
            None,
            Filter::default(),
        )
        .unwrap();
    let held = e.search_vector(&q, 100, &Filter::default()).unwrap();
    let above = held.iter().filter(|h| h.score >= t.unwrap()).count();
    assert_eq!(above, held.len().div_ceil(2));
    assert!(matches!(
        e.subscribe(
            &q,
            Some(Threshold::Percentile(100.0)),
            None,
            Filter::default()
        ),
        Err(EngineError::Invalid(_))
    ));
    assert!(e.unsubscribe(id));
    assert!(!e.unsubscribe(id));
}

#[test]
fn snapshots_restore_the_same_results_and_check_the_model() {
    let e = log_engine(true);
    let dir = std::env::temp_dir().join(format!("imesde-engine-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("e.snap");
    e.save(&path).unwrap();
    let back = Engine::load(&path, Some(model())).unwrap();
    assert!(back.is_lexical());
    for q in ["disk full", "ssh key", "out of memory"] {
        let a = e
            .search_text(q, 6, &Filter::default(), &mut never())
            .unwrap();
        let b = back
            .search_text(q, 6, &Filter::default(), &mut never())
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            e.lexical_search(q, 6, &Filter::default()).unwrap(),
            back.lexical_search(q, 6, &Filter::default()).unwrap()
        );
    }
    assert!(Engine::snapshot_has_model(&std::fs::read(&path).unwrap()).unwrap());
    // A vectors-only snapshot loads without a model; a model of another dimension is refused.
    let v = Engine::new(ring(4, 1, 4), None, false).unwrap();
    v.ingest_vectors(&[1.0, 0.0, 0.0, 0.0], Attributes::default())
        .unwrap();
    let vpath = dir.join("v.snap");
    v.save(&vpath).unwrap();
    assert!(!Engine::snapshot_has_model(&std::fs::read(&vpath).unwrap()).unwrap());
    assert_eq!(Engine::load(&vpath, None).unwrap().ring().len(), 1);
    assert!(matches!(
        Engine::load(&vpath, Some(model())),
        Err(EngineError::DimensionMismatch { engine: 4, .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn semantic_ids_are_computed_natively_and_unique() {
    let m = model();
    let corpus: Vec<String> = (0..300)
        .map(|i| format!("item {i}: {}", LOG[i % LOG.len()]))
        .collect();
    let corpus: Vec<Arc<str>> = corpus.iter().map(|t| Arc::from(t.as_str())).collect();
    let x = m.embed(&corpus, None, &mut never()).unwrap();
    let cfg = FitConfig {
        n_clusters: vec![4, 4],
        ..FitConfig::default()
    };
    let (rq, _) = RqKMeans::fit(&x, 384, &cfg).unwrap();
    let rq = Arc::new(rq);
    // Codebooks of 384 dims cannot label an engine of 8: refused when attached.
    let small = Engine::new(ring(8, 1, 4), None, false).unwrap();
    let plain = RqLabeler::new(Arc::clone(&rq), IdFormat::Plain("-".into()), 1, None);
    assert!(small.set_labeler(Some(Arc::new(plain))).is_err());
    assert!(!small.has_labeler());
    let store = Arc::new(IdStore::new());
    let labeler = RqLabeler::new(
        rq,
        IdFormat::Plain("-".into()),
        1,
        Some((Arc::clone(&store), "-".into())),
    );
    let e = Engine::new(ring(384, 4, 128), Some(Arc::clone(&m)), false).unwrap();
    e.set_labeler(Some(Arc::new(labeler))).unwrap();
    let got = e.ingest_vectors(&x, Attributes::default()).unwrap();
    let ids: Vec<String> = got
        .ids
        .map(|id| {
            let item = e.get(id).unwrap();
            item.metadata
                .unwrap()
                .get(SEMANTIC_ID)
                .and_then(|v| v.as_str())
                .unwrap()
                .to_owned()
        })
        .collect();
    // 16 codes for 300 items: many collide, and every id is still unique.
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len());
    assert_eq!(store.len(), ids.len());
    assert!(ids.iter().any(|i| i.matches('-').count() == 2));
    // A batch the labeler refuses (another dimension) stores nothing.
    let before = e.ring().next_id();
    assert!(
        e.ingest_vectors(&[1.0; 100], Attributes::default())
            .is_err()
    );
    assert_eq!(e.ring().next_id(), before);
    e.set_labeler(None).unwrap();
    let plain = e.ingest_vectors(&x[..384], Attributes::default()).unwrap();
    assert!(e.get(plain.ids.start).unwrap().metadata.is_none());
}

#[test]
fn delete_passing_deletes_exactly_what_the_filter_keeps() {
    let e = log_engine(true);
    let db = Filter::matching(Predicate::eq("host", "db1"));
    let want: Vec<u64> = (0..LOG.len() as u64).filter(|i| i % 2 == 0).collect();
    // Of given ids: only those that pass (odd ids are web1's).
    assert_eq!(e.delete_passing(Some(&[1, 2, 3]), &db).unwrap(), [2]);
    let rest: Vec<u64> = want.iter().copied().filter(|&i| i != 2).collect();
    assert_eq!(e.delete_passing(None, &db).unwrap(), rest);
    assert_eq!(e.count(&db).unwrap(), 0);
    assert_eq!(e.ring().len(), LOG.len() - want.len());
    assert!(
        e.lexical_search("killed process postgres", 10, &Filter::default())
            .unwrap()
            .iter()
            .all(|h| h.id % 2 == 1)
    );
    assert!(e.delete_passing(None, &db).unwrap().is_empty());
}

#[test]
fn metadata_updated_in_place_is_what_every_search_filters_on() {
    let e = log_engine(true);
    let db = Filter::matching(Predicate::eq("host", "db1"));
    let query = "killed process postgres";
    let before = e.search_text(query, 3, &db, &mut never()).unwrap();
    assert!(!before.is_empty());
    // The best db1 item moves to another host: filtered dense, lexical and hybrid searches
    // stop finding it, and find it under its new host, with its id, text and score.
    let moved = before[0].id;
    let to_web = MetadataUpdate::Merge(vec![(Arc::from("host"), Some(Value::from("web9")))]);
    let none = Filter::default();
    assert_eq!(
        e.update_metadata(&[moved, 10_000], &none, |_| &to_web)
            .unwrap(),
        [moved]
    );
    let web9 = Filter::matching(Predicate::eq("host", "web9"));
    for (f, on_web9) in [(&db, false), (&web9, true)] {
        let dense = e.search_text(query, 3, f, &mut never()).unwrap();
        let lexical = e.lexical_search(query, 3, f).unwrap();
        let hybrid = e
            .hybrid_search(query, 3, Fusion::Rrf { k: 60.0 }, None, f, &mut never())
            .unwrap();
        let found = |hits: &[imesde_ring::Hit]| hits.iter().any(|h| h.id == moved);
        assert_eq!(found(&dense), on_web9);
        assert_eq!(found(&lexical), on_web9);
        assert_eq!(found(&hybrid), on_web9);
    }
    let now = e.search_text(query, 1, &web9, &mut never()).unwrap();
    assert_eq!((now[0].id, now[0].score), (moved, before[0].score));
    assert_eq!(e.get(moved).unwrap().text, before[0].text);
    // Every item that passes a filter: the db1 items (every other one) but the one moved.
    let acked = MetadataUpdate::Merge(vec![(Arc::from("acked"), Some(Value::Bool(true)))]);
    let updated = e.update_metadata_passing(&db, &acked).unwrap();
    let want: Vec<u64> = (0..LOG.len() as u64)
        .filter(|&i| i % 2 == 0 && i != moved)
        .collect();
    assert_eq!(updated, want);
    let acked_filter = Filter::matching(Predicate::eq("acked", true));
    assert_eq!(e.count(&acked_filter).unwrap(), want.len());
}

#[test]
fn deleted_items_leave_dense_lexical_hybrid_and_snapshots() {
    let e = log_engine(true);
    let oom = "process killed by the OOM killer";
    assert_eq!(
        e.lexical_search("killed process", 1, &Filter::default())
            .unwrap()[0]
            .id,
        0
    );
    assert_eq!(e.delete(&[0, 0, 42]), [0]);
    assert!(e.get(0).is_none());
    let everything = |hits: Vec<imesde_ring::Hit>| hits.iter().all(|h| h.id != 0);
    assert!(everything(
        e.search_text(oom, 10, &Filter::default(), &mut never())
            .unwrap()
    ));
    assert!(everything(
        e.lexical_search("killed process postgres", 10, &Filter::default())
            .unwrap()
    ));
    assert!(everything(
        e.hybrid_search(
            oom,
            10,
            Fusion::Rrf { k: 60.0 },
            None,
            &Filter::default(),
            &mut never()
        )
        .unwrap()
    ));
    let loaded = Engine::from_snapshot(&e.snapshot().unwrap(), Some(model())).unwrap();
    assert_eq!(loaded.ring().len(), LOG.len() - 1);
    assert!(
        loaded
            .lexical_search("killed process postgres", 10, &Filter::default())
            .unwrap()
            .is_empty()
    );
    // A new version of item 3: stored as a new item, the old one gone; a bad row changes
    // nothing.
    let dim = e.ring().config().dim;
    let v = e
        .embed_documents(&texts(&["disk /dev/sdb2 is 99% full"]), &mut never())
        .unwrap();
    let attrs = Attributes {
        texts: vec![Some(Arc::from("disk /dev/sdb2 is 99% full"))],
        ..Attributes::default()
    };
    assert!(e.replace(3, &v[..dim - 1], attrs.clone(), None).is_err());
    assert!(e.get(3).is_some());
    let new = e.replace(3, &v, attrs, None).unwrap().ids.start;
    assert!(e.get(3).is_none());
    assert_eq!(
        e.lexical_search("sdb2", 5, &Filter::default()).unwrap()[0].id,
        new
    );
    assert_eq!(e.ring().len(), LOG.len() - 1);
    // A version given only a vector keeps the old one's text and metadata; given metadata, it
    // has that instead.
    let tagged = Attributes {
        texts: vec![Some(Arc::from("disk full"))],
        metadata: vec![Some(Metadata::new([("host", Value::from("db1"))]))],
        ..Attributes::default()
    };
    let a = e.replace(new, &v, tagged, None).unwrap().ids.start;
    let b = e
        .replace(a, &v, Attributes::default(), None)
        .unwrap()
        .ids
        .start;
    let kept = e.get(b).unwrap();
    assert_eq!(kept.text.as_deref(), Some("disk full"));
    assert_eq!(
        kept.metadata.as_ref().unwrap().get("host"),
        Some(&Value::from("db1"))
    );
    let other = Attributes {
        metadata: vec![Some(Metadata::new([("host", Value::from("db2"))]))],
        ..Attributes::default()
    };
    let c = e.replace(b, &v, other, None).unwrap().ids.start;
    let got = e.get(c).unwrap();
    assert_eq!(got.text.as_deref(), Some("disk full"));
    assert_eq!(
        got.metadata.as_ref().unwrap().get("host"),
        Some(&Value::from("db2"))
    );
    assert!(e.get(a).is_none() && e.get(b).is_none());
    // An id not handed out yet is not the new item's to lose, even when it becomes its id.
    let empty = Engine::new(ring(dim, 1, 4), None, false).unwrap();
    let first = empty.replace(0, &v, Attributes::default(), None).unwrap();
    assert_eq!(first.ids, 0..1);
    assert!(empty.get(0).is_some());
}

#[test]
fn percentile_thresholds_parse() {
    for (spec, pct) in [("p99", 99.0), ("p99.9", 99.9), ("p0", 0.0), ("p.5", 0.5)] {
        assert_eq!(
            spec.parse::<Threshold>().unwrap(),
            Threshold::Percentile(pct)
        );
    }
    for bad in [
        "p100", "p-1", "99", "pnan", "p", "", "p1e1", "p+50", "p 50", "p5_0", "p.",
    ] {
        let e = bad.parse::<Threshold>().unwrap_err();
        assert!(matches!(e, EngineError::Invalid(_)), "{bad}: {e}");
    }
}

#[test]
fn an_id_store_copied_from_its_state_hands_out_what_it_would() {
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<String>>();
    let store = IdStore::new();
    assert_eq!(
        store.claim(&s(&["a", "a", "b"]), "-", None),
        s(&["a", "a-1", "b"])
    );
    assert_eq!(store.claim(&s(&["c"]), "-", Some(&s(&["d1"]))), s(&["c"]));
    let copy = IdStore::from_state(store.state()).unwrap();
    assert_eq!(copy.len(), store.len());
    assert_eq!(copy.state().names.len(), store.state().names.len());
    for st in [&store, &copy] {
        assert_eq!(st.claim(&s(&["a", "c"]), "-", None), s(&["a-2", "c-1"]));
        assert_eq!(st.claim(&s(&["c"]), "-", Some(&s(&["d1"]))), s(&["c"]));
    }
}

/// What a Rust caller can give that the Python binding never passes on: values a snapshot
/// could not hold, NaN time bounds, a time window on a standing query, a filter document
/// parsed with `?`. Each is refused when given, and what was saved loads.
#[test]
fn what_a_snapshot_cannot_hold_is_refused_when_given() -> imesde_engine::Result<()> {
    // Reached through this crate alone (its signatures take these crates' types).
    use imesde_engine::imesde_ring::{Filter as F, RingError};
    let e = Engine::new(ring(4, 1, 8), None, false)?;
    let x = [1.0, 0.0, 0.0, 0.0];
    let bad = [
        Metadata::new([("x", Value::Float(f64::NAN))]),
        Metadata::new([("x", Value::Float(f64::INFINITY))]),
        Metadata::new([(
            "x",
            Value::List(vec![Value::List(vec![Value::Int(1)].into())].into()),
        )]),
    ];
    for m in bad {
        let attrs = Attributes {
            metadata: vec![Some(m.clone())],
            ..Attributes::default()
        };
        let got = e.ingest_vectors(&x, attrs);
        assert!(
            matches!(got, Err(EngineError::Ring(RingError::Metadata { .. }))),
            "{got:?}"
        );
        let update = MetadataUpdate::Replace(Some(m));
        assert!(e.update_metadata(&[0], &F::default(), |_| &update).is_err());
    }
    e.ingest_vectors(&x, Attributes::default())?;
    assert_eq!(e.ring().len(), 1);
    let back = Engine::from_snapshot(&e.snapshot()?, None)?;
    assert_eq!(back.ring().len(), 1);
    // A NaN bound kept everything, silently.
    let nan = F {
        since: Some(f64::NAN),
        ..F::default()
    };
    assert!(matches!(
        e.search_vector(&x, 10, &nan),
        Err(EngineError::Ring(RingError::Timestamp { .. }))
    ));
    // A standing query's time window was ignored.
    let window = F {
        since: Some(4e9),
        ..F::default()
    };
    let got = e.subscribe(&x, Some(Threshold::Score(0.5)), None, window);
    assert!(matches!(got, Err(EngineError::Invalid(_))), "{got:?}");
    // A filter document from a request, with `?`.
    let doc = serde_json::json!({"x": {"$gt": 1}});
    let filter = F::matching(Predicate::parse(&doc)?);
    assert_eq!(e.count(&filter)?, 0);
    Ok(())
}
