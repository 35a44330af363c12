#![allow(clippy::float_cmp)] // exact values are stored and read back unchanged

use std::sync::Arc;

use imesde_ring::{
    Attributes, Filter, Metadata, MetadataUpdate, Predicate, Ring, RingConfig, RingError, Storage,
    Value,
};
use serde_json::json;

struct Rng(u64);
impl Rng {
    fn f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn vecs(&mut self, n: usize, dim: usize) -> Vec<f32> {
        (0..n * dim).map(|_| self.f32()).collect()
    }
}

fn ring(dim: usize, num_shards: usize, shard_size: usize, storage: Storage) -> Ring {
    Ring::new(RingConfig {
        dim,
        num_shards,
        shard_size,
        storage,
    })
    .unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    let na: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn keeps_exactly_the_newest_capacity_items() {
    let r = ring(4, 2, 4, Storage::F32);
    let mut rng = Rng(1);
    for i in 0..20u64 {
        let ids = r.ingest(&rng.vecs(1, 4), &Attributes::default()).unwrap();
        assert_eq!(ids, i..i + 1);
        assert_eq!(r.len(), (i as usize + 1).min(8));
    }
    for id in 0..20 {
        assert_eq!(r.get(id).is_some(), id >= 12, "id {id}");
    }
    // One batch larger than the ring keeps its newest `capacity` items.
    let ids = r.ingest(&rng.vecs(19, 4), &Attributes::default()).unwrap();
    assert_eq!(ids, 20..39);
    assert_eq!(r.len(), 8);
    assert!((31..39).all(|id| r.get(id).is_some()));
    assert!(r.get(30).is_none());
    let st = r.stats();
    assert_eq!((st.ingested, st.evicted, st.len), (39, 31, 8));
}

#[test]
fn hit_reads_an_item_without_its_vector() {
    let r = ring(4, 2, 2, Storage::F32);
    let attrs = Attributes {
        texts: (0..6)
            .map(|i| Some(Arc::from(format!("t{i}").as_str())))
            .collect(),
        timestamps: (0..6).map(f64::from).collect(),
        metadata: vec![Some(Metadata::new([("k", "v")])); 6],
    };
    r.ingest(&Rng(3).vecs(6, 4), &attrs).unwrap();
    for id in 0..6 {
        match (r.get(id), r.hit(id, 0.5)) {
            (Some(item), Some(hit)) => {
                assert_eq!((hit.id, hit.score, hit.ts), (id, 0.5, item.ts));
                assert_eq!((hit.text, hit.metadata), (item.text, item.metadata));
            }
            (None, None) => assert!(id < 2),
            other => panic!("get and hit disagree on {id}: {other:?}"),
        }
    }
    assert!(r.hit(u64::MAX, 1.0).is_none());
    // The checks ingest runs, available before it.
    assert!(matches!(
        attrs.check(5),
        Err(RingError::Length { what: "texts", .. })
    ));
    let bad = Attributes {
        timestamps: vec![0.0, f64::NAN],
        ..Attributes::default()
    };
    assert!(matches!(
        bad.check(2),
        Err(RingError::Timestamp { what }) if what == "timestamps[1]"
    ));
    // Epoch milliseconds are refused, not stored 55,000 years from now; the first and last
    // instants a datetime holds are kept.
    let after = imesde_ring::MAX_TIMESTAMP + 1e-3;
    for ts in [1.7e12, -1e11, after] {
        let bad = Attributes {
            timestamps: vec![imesde_ring::MIN_TIMESTAMP, ts],
            ..Attributes::default()
        };
        assert!(
            matches!(bad.check(2), Err(RingError::TimestampRange { what, value }) if what == "timestamps[1]" && value == ts),
            "{ts}"
        );
    }
    let edges = Attributes {
        timestamps: vec![imesde_ring::MIN_TIMESTAMP, imesde_ring::MAX_TIMESTAMP],
        ..Attributes::default()
    };
    assert!(edges.check(2).is_ok());
    assert!(attrs.check(6).is_ok());
}

#[test]
fn search_is_exact_with_filters() {
    // Small enough to scan on the calling thread, large enough for the parallel scan, and
    // with shards split into several parallel tasks.
    search_is_exact_with_filters_at(33, 500, 7, 100);
    search_is_exact_with_filters_at(256, 3000, 7, 500);
    search_is_exact_with_filters_at(64, 12_000, 2, 8000);
}

type Keeps = Box<dyn Fn(usize) -> bool>;

fn search_is_exact_with_filters_at(dim: usize, n: usize, shards: usize, shard_size: usize) {
    let r = ring(dim, shards, shard_size, Storage::F32);
    let mut rng = Rng(2);
    let data = rng.vecs(n, dim);
    let attrs = Attributes {
        texts: (0..n).map(|i| Some(Arc::from(format!("t{i}")))).collect(),
        timestamps: (0..n).map(|i| i as f64).collect(),
        metadata: (0..n)
            .map(|i| {
                Some(Metadata::new([
                    (
                        "parity",
                        Value::from(if i % 2 == 0 { "even" } else { "odd" }),
                    ),
                    ("n", Value::Int(i as i64)),
                    ("third", Value::Bool(i % 3 == 0)),
                ]))
            })
            .collect(),
    };
    r.ingest(&data, &attrs).unwrap();
    let q = rng.vecs(1, dim);
    let when = |since, until| Filter {
        since,
        until,
        ..Filter::default()
    };
    let with = |since, doc| Filter {
        since,
        predicate: Some(Predicate::parse(&doc).unwrap()),
        ..Filter::default()
    };
    // Each filter with an independent statement of what it keeps.
    let filters: Vec<(Filter, Keeps)> = vec![
        (Filter::default(), Box::new(|_| true)),
        (
            when(Some(100.0), Some(250.0)),
            Box::new(|i| (100..250).contains(&i)),
        ),
        (
            with(None, json!({"parity": "odd"})),
            Box::new(|i| i % 2 == 1),
        ),
        (
            with(Some(490.0), json!({"parity": "even"})),
            Box::new(|i| i >= 490 && i % 2 == 0),
        ),
        (with(None, json!({"missing": "x"})), Box::new(|_| false)),
        (
            with(None, json!({"n": {"$in": [3, 4, 5, 400]}, "third": true})),
            Box::new(|i| [3, 4, 5, 400].contains(&i) && i % 3 == 0),
        ),
        (
            with(
                None,
                json!({"$or": [{"n": {"$gt": 200, "$lte": 210.5}}, {"n": {"$lt": 2}}]}),
            ),
            Box::new(|i| (201..=210).contains(&i) || i < 2),
        ),
        (
            with(
                None,
                json!({"$not": {"third": true}, "parity": {"$nin": ["odd"]}}),
            ),
            Box::new(|i| i % 3 != 0 && i % 2 == 0),
        ),
    ];
    for (f, passes) in &filters {
        let recent = r.recent(5, f).unwrap();
        let want: Vec<u64> = (0..n)
            .rev()
            .filter(|&i| passes(i))
            .take(5)
            .map(|i| i as u64)
            .collect();
        assert_eq!(
            recent.iter().map(|i| i.id).collect::<Vec<_>>(),
            want,
            "{f:?}"
        );
        for k in [1, 10, 1000] {
            let hits = r.search(&q, k, f).unwrap();
            // The batch search keeps the same items.
            let batch = r
                .search_batch(&[q.clone(), q.clone()].concat(), k, f)
                .unwrap();
            let ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
            assert_eq!(&batch.ids[..batch.k], &ids[..], "{f:?} k={k}");
            assert_eq!(&batch.ids[batch.k..], &ids[..], "{f:?} k={k}");
            let mut want: Vec<(f64, usize)> = (0..n)
                .filter(|&i| passes(i))
                .map(|i| (cosine(&q, &data[i * dim..(i + 1) * dim]), i))
                .collect();
            want.sort_by(|a, b| b.0.total_cmp(&a.0));
            want.truncate(k);
            assert_eq!(hits.len(), want.len(), "{f:?} k={k}");
            for (h, (s, i)) in hits.iter().zip(&want) {
                // The i-th hit has the i-th best exact score; only items whose exact scores
                // differ by less than f32 can resolve may trade places.
                let j = h.id as usize;
                let exact = cosine(&q, &data[j * dim..(j + 1) * dim]);
                assert!(
                    j == *i || (exact - s).abs() < 1e-6,
                    "{j} ({exact}) vs {i} ({s})"
                );
                assert!(passes(j));
                assert!((f64::from(h.score) - s).abs() < 1e-5);
                assert_eq!(h.text.as_deref(), Some(format!("t{j}").as_str()));
                assert_eq!(h.ts, j as f64);
            }
        }
    }
}

#[test]
fn equal_scores_put_the_newer_item_first_across_shards() {
    // 64 copies of one vector among other vectors, spread over every shard; scans big
    // enough to run in parallel must still return the newest copies, newest first.
    let dim = 256;
    let r = ring(dim, 5, 400, Storage::F32);
    let mut rng = Rng(8);
    let target = rng.vecs(1, dim);
    let mut data = Vec::new();
    let mut copies = Vec::new();
    for i in 0..1800 {
        if i % 28 == 0 && copies.len() < 64 {
            copies.push(i as u64);
            data.extend_from_slice(&target);
        } else {
            data.extend(rng.vecs(1, dim));
        }
    }
    r.ingest(&data, &Attributes::default()).unwrap();
    for k in [1, 10, 64] {
        let want: Vec<u64> = copies.iter().rev().take(k).copied().collect();
        let hits = r.search(&target, k, &Filter::default()).unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), want, "k={k}");
        let b = r
            .search_batch(
                &[target.clone(), target.clone()].concat(),
                k,
                &Filter::default(),
            )
            .unwrap();
        assert_eq!(&b.ids[..k], want.as_slice());
        assert_eq!(&b.ids[k..], want.as_slice());
    }
}

#[test]
fn scores_rising_with_the_id_over_many_tasks() {
    // Scores rise with the id, so every task's top-k improves on the last one's and each
    // thread gathers many hits: the top-k must still be the newest items, best first.
    let (dim, n) = (16, 80_000);
    let r = ring(dim, 2, 40_000, Storage::F32);
    let mut data = vec![0.0f32; n * dim];
    for i in 0..n {
        let angle = 1.5 * (1.0 - i as f32 / n as f32);
        data[i * dim] = angle.cos();
        data[i * dim + 1] = angle.sin();
    }
    r.ingest(&data, &Attributes::default()).unwrap();
    let mut q = vec![0.0f32; dim];
    q[0] = 1.0;
    for k in [1, 3, 50] {
        let hits = r.search(&q, k, &Filter::default()).unwrap();
        let want: Vec<u64> = (0..k as u64).map(|i| n as u64 - 1 - i).collect();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), want, "k={k}");
        let b = r
            .search_batch(&[q.clone(), q.clone()].concat(), k, &Filter::default())
            .unwrap();
        assert_eq!(&b.ids[..k], want.as_slice());
        assert_eq!(&b.ids[k..], want.as_slice());
    }
}

#[test]
fn batch_search_matches_single_search_for_both_storages() {
    for storage in [Storage::F32, Storage::Int8, Storage::Binary] {
        let dim = 64;
        let r = ring(dim, 4, 64, storage);
        let mut rng = Rng(3);
        r.ingest(&rng.vecs(300, dim), &Attributes::default())
            .unwrap();
        let qs = rng.vecs(9, dim);
        let b = r.search_batch(&qs, 5, &Filter::default()).unwrap();
        assert_eq!((b.nq, b.k), (9, 5));
        for j in 0..9 {
            let single = r
                .search(&qs[j * dim..(j + 1) * dim], 5, &Filter::default())
                .unwrap();
            let ids: Vec<u64> = single.iter().map(|h| h.id).collect();
            assert_eq!(
                &b.ids[j * 5..(j + 1) * 5],
                ids.as_slice(),
                "{storage:?} q{j}"
            );
        }
        // More than held: what there is.
        let b = r.search_batch(&qs, 10_000, &Filter::default()).unwrap();
        assert_eq!(b.k, 256);
    }
}

#[test]
fn int8_scores_track_f32_scores() {
    let dim = 384;
    let (a, b) = (
        ring(dim, 4, 256, Storage::F32),
        ring(dim, 4, 256, Storage::Int8),
    );
    let mut rng = Rng(4);
    let data = rng.vecs(1024, dim);
    a.ingest(&data, &Attributes::default()).unwrap();
    b.ingest(&data, &Attributes::default()).unwrap();
    let q = rng.vecs(1, dim);
    let ha = a.search(&q, 1024, &Filter::default()).unwrap();
    let hb = b.search(&q, 1024, &Filter::default()).unwrap();
    let mut sa = vec![0.0; 1024];
    for h in &ha {
        sa[h.id as usize] = h.score;
    }
    for h in &hb {
        // Rescored with the residual: a fourteenth of the int8 error.
        assert!((h.score - sa[h.id as usize]).abs() < 5e-4, "id {}", h.id);
    }
    let v = b.get(7).unwrap().vector;
    assert!(cosine(&v, &data[7 * dim..8 * dim]) > 0.99999);
}

#[test]
fn binary_storage_finds_the_neighbours_and_exact_scans_its_int8_copy() {
    let dim = 384;
    let (f, i, b) = (
        ring(dim, 8, 512, Storage::F32),
        ring(dim, 8, 512, Storage::Int8),
        ring(dim, 8, 512, Storage::Binary),
    );
    // Clusters of near neighbours (as text embeddings come), a partial last block per shard.
    let mut rng = Rng(11);
    let centres = rng.vecs(40, dim);
    let noise = rng.vecs(4001, dim);
    let data: Vec<f32> = (0..4001)
        .flat_map(|j| {
            let c = &centres[(j % 40) * dim..(j % 40 + 1) * dim];
            let n = &noise[j * dim..(j + 1) * dim];
            c.iter()
                .zip(n)
                .map(|(c, n)| c + 0.35 * n)
                .collect::<Vec<f32>>()
        })
        .collect();
    let attrs = Attributes {
        timestamps: (0..4001).map(f64::from).collect(),
        ..Attributes::default()
    };
    for r in [&f, &i, &b] {
        r.ingest(&data, &attrs).unwrap();
    }
    let exact = Filter {
        exact: true,
        ..Filter::default()
    };
    // Queries near the data, as text queries are (a Gaussian query far from everything
    // ties with everything, and sign bits cannot order near-ties).
    let jitter = rng.vecs(20, dim);
    let queries: Vec<f32> = jitter
        .iter()
        .enumerate()
        .map(|(t, n)| data[(t / dim) * 197 * dim + t % dim] + 0.3 * n)
        .collect();
    let (mut found, mut total) = (0, 0);
    for q in queries
        .chunks_exact(dim)
        .chain(data.chunks_exact(dim).step_by(397))
    {
        let want: Vec<u64> = f
            .search(q, 10, &Filter::default())
            .unwrap()
            .iter()
            .map(|h| h.id)
            .collect();
        let got = b.search(q, 10, &Filter::default()).unwrap();
        total += want.len();
        found += got.iter().filter(|h| want.contains(&h.id)).count();
        // Rescored scores: those of the int8 copy.
        for h in &got {
            let s = i.search(q, 4001, &Filter::default()).unwrap();
            let same = s.iter().find(|x| x.id == h.id).unwrap();
            assert!((same.score - h.score).abs() < 1e-6);
        }
        // exact=true: the int8 ring's scan, hit for hit; and the same for a batch.
        assert_eq!(
            b.search(q, 10, &exact).unwrap(),
            i.search(q, 10, &exact).unwrap()
        );
    }
    assert!(
        found as f64 / total as f64 >= 0.95,
        "recall {found}/{total}"
    );
    let qs = &queries[..5 * dim];
    assert_eq!(
        b.search_batch(qs, 10, &exact).unwrap(),
        i.search_batch(qs, 10, &Filter::default()).unwrap()
    );
    let batch = b.search_batch(qs, 10, &Filter::default()).unwrap();
    for (j, q) in qs.chunks_exact(dim).enumerate() {
        let single: Vec<u64> = b
            .search(q, 10, &Filter::default())
            .unwrap()
            .iter()
            .map(|h| h.id)
            .collect();
        assert_eq!(&batch.ids[j * 10..(j + 1) * 10], single.as_slice());
    }
    assert!(b.stats().fixed_bytes > i.stats().fixed_bytes);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    assert_eq!(
        Ring::new(RingConfig {
            dim: 8,
            num_shards: 0,
            shard_size: 4,
            storage: Storage::F32
        })
        .unwrap_err(),
        RingError::ZeroSize { what: "num_shards" }
    );
    assert!(matches!(
        Ring::new(RingConfig {
            dim: 384,
            num_shards: 1 << 16,
            shard_size: 1 << 30,
            storage: Storage::F32
        }),
        Err(RingError::Capacity { .. })
    ));
    assert!(matches!(
        Ring::new(RingConfig {
            dim: 8,
            num_shards: imesde_ring::MAX_SHARDS + 1,
            shard_size: 1,
            storage: Storage::F32
        }),
        Err(RingError::TooManyShards { .. })
    ));
    assert!(matches!(
        Ring::new(RingConfig {
            dim: usize::MAX,
            num_shards: 2,
            shard_size: 2,
            storage: Storage::F32
        }),
        Err(RingError::Capacity { .. })
    ));
    let r = ring(4, 2, 4, Storage::F32);
    r.ingest(&[1.0, 0.0, 0.0, 0.0], &Attributes::default())
        .unwrap();
    let bad: Vec<(Vec<f32>, Attributes)> = vec![
        (vec![1.0; 5], Attributes::default()),
        (
            vec![1.0, 2.0, f32::NAN, 0.0, 1.0, 1.0, 1.0, 1.0],
            Attributes::default(),
        ),
        (
            vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            Attributes::default(),
        ),
        (
            vec![1.0; 8],
            Attributes {
                texts: vec![None],
                ..Attributes::default()
            },
        ),
        (
            vec![1.0; 8],
            Attributes {
                timestamps: vec![1.0, f64::NAN],
                ..Attributes::default()
            },
        ),
    ];
    for (v, a) in bad {
        assert!(r.ingest(&v, &a).is_err());
        assert_eq!(r.len(), 1);
        assert_eq!(r.stats().ingested, 1);
    }
    assert_eq!(
        r.search(&[1.0; 4], 0, &Filter::default()).unwrap_err(),
        RingError::ZeroK
    );
    // An empty batch stores nothing and gets no ids; its columns must be empty too. No
    // queries give no rows, as wide as the items held.
    assert_eq!(r.ingest(&[], &Attributes::default()).unwrap(), 1..1);
    let (ids, events) = r.ingest_matching(&[], &Attributes::default()).unwrap();
    assert!(ids.is_empty() && events.is_empty());
    let one_text = Attributes {
        texts: vec![Some("x".into())],
        ..Attributes::default()
    };
    assert!(r.ingest(&[], &one_text).is_err());
    let none = r.search_batch(&[], 10, &Filter::default()).unwrap();
    assert_eq!((none.nq, none.k, none.ids.len()), (0, 1, 0));
    assert_eq!(
        r.search_batch(&[], 0, &Filter::default()).unwrap_err(),
        RingError::ZeroK
    );
    assert_eq!(
        r.search(&[1.0; 3], 1, &Filter::default()).unwrap_err(),
        RingError::Dimension {
            what: "query",
            got: 3,
            expected: 4
        }
    );
    let w = Filter {
        since: Some(5.0),
        until: Some(5.0),
        ..Filter::default()
    };
    assert!(matches!(
        r.search(&[1.0; 4], 1, &w),
        Err(RingError::TimeWindow { .. })
    ));
    assert_eq!(
        r.search(&[1.0; 4], 10, &Filter::default()).unwrap().len(),
        1
    );
}

#[test]
fn concurrent_writers_and_readers_stay_consistent() {
    let dim = 16;
    let r = Arc::new(ring(dim, 8, 32, Storage::Int8));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let r = Arc::clone(&r);
            std::thread::spawn(move || {
                let mut rng = Rng(100 + t);
                for _ in 0..200 {
                    if t % 2 == 0 {
                        let n = 1 + (rng.f32().abs() * 20.0) as usize;
                        r.ingest(&rng.vecs(n, dim), &Attributes::default()).unwrap();
                    } else {
                        let hits = r.search(&rng.vecs(1, dim), 10, &Filter::default()).unwrap();
                        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
                    }
                    assert!(r.len() <= r.capacity());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(r.len(), r.capacity());
}

#[test]
fn deleted_items_are_gone_from_every_read_and_their_slots_are_reused() {
    for storage in [Storage::F32, Storage::Int8, Storage::Binary] {
        let r = ring(8, 3, 4, storage);
        let mut rng = Rng(7);
        let v = rng.vecs(10, 8);
        let attrs = Attributes {
            texts: (0..10)
                .map(|i| Some(Arc::from(format!("item {i}"))))
                .collect(),
            ..Attributes::default()
        };
        r.ingest(&v, &attrs).unwrap();
        let payload = r.stats().payload_bytes;
        assert_eq!(r.delete(&[3, 7, 3, 99, u64::MAX]), [3, 7]);
        assert_eq!(r.len(), 8);
        assert!(r.get(3).is_none() && r.hit(7, 0.0).is_none() && !r.contains(3));
        assert!(r.contains(4));
        assert!(r.stats().payload_bytes < payload);
        // The deleted item's own vector no longer finds it, in every kind of search.
        let q = &v[3 * 8..4 * 8];
        let hits = r.search(q, 10, &Filter::default()).unwrap();
        assert_eq!(hits.len(), 8);
        assert!(hits.iter().all(|h| h.id != 3 && h.id != 7));
        let batch = r.search_batch(q, 10, &Filter::default()).unwrap();
        assert_eq!(batch.k, 8);
        assert!(!batch.ids.contains(&3) && !batch.ids.contains(&7));
        assert!(
            r.recent(10, &Filter::default())
                .unwrap()
                .iter()
                .all(|i| i.id != 3 && i.id != 7)
        );
        // Snapshots hold what is left.
        let (loaded, _) = Ring::from_snapshot(&r.snapshot("")).unwrap();
        assert_eq!(loaded.len(), 8);
        assert!(loaded.get(3).is_none() && loaded.get(4).is_some());
        // New items take the slots back (ids 12 and 16 share slots with 0..12).
        r.ingest(&rng.vecs(12, 8), &Attributes::default()).unwrap();
        assert_eq!(r.len(), 12);
        assert!(r.get(15).is_some() && r.get(19).is_some());
        let st = r.stats();
        assert_eq!((st.ingested, st.deleted, st.evicted), (22, 2, 8));
        assert!(r.delete(&[3]).is_empty(), "deleted once");
    }
}

#[test]
fn metadata_changes_in_place_and_only_for_items_held() {
    let r = ring(4, 2, 4, Storage::F32);
    let meta = Metadata::new([("host", Value::from("db1")), ("status", Value::Int(500))]);
    let attrs = Attributes {
        metadata: vec![Some(meta.clone()); 6],
        ..Attributes::default()
    };
    let v = Rng(3).vecs(6, 4);
    r.ingest(&v, &attrs).unwrap();
    r.delete(&[1]);
    let before = r.get(2).unwrap();
    let payload = r.stats().payload_bytes;
    let none = Filter::default();
    let merge = MetadataUpdate::Merge(vec![
        (Arc::from("status"), None),
        (Arc::from("acked"), Some(Value::Bool(true))),
    ]);
    // Deleted (1), never held (99), an id out of range: skipped.
    assert_eq!(
        r.update_metadata(&[2, 1, 99, u64::MAX, 3], &none, |_| &merge),
        [2, 3]
    );
    let after = r.get(2).unwrap();
    let want = Metadata::new([("acked", Value::Bool(true)), ("host", Value::from("db1"))]);
    assert_eq!(after.metadata, Some(want));
    assert_eq!(
        (after.id, after.ts, &after.vector),
        (2, before.ts, &before.vector)
    );
    assert_eq!(r.get(4).unwrap().metadata, Some(meta.clone()));
    assert_ne!(r.stats().payload_bytes, payload);
    // Replacing by nothing, or removing every key, leaves no metadata (as an empty map).
    let clear = MetadataUpdate::Replace(None);
    assert_eq!(r.update_metadata(&[4], &none, |_| &clear), [4]);
    assert_eq!(r.get(4).unwrap().metadata, None);
    let drop_all =
        MetadataUpdate::Merge(vec![(Arc::from("host"), None), (Arc::from("acked"), None)]);
    r.update_metadata(&[2], &none, |_| &drop_all);
    assert_eq!(r.get(2).unwrap().metadata, None);
    // The last change of a key wins; an item without metadata gets some.
    let twice = MetadataUpdate::Merge(vec![
        (Arc::from("k"), Some(Value::Int(1))),
        (Arc::from("k"), None),
        (Arc::from("k"), Some(Value::Int(2))),
    ]);
    r.update_metadata(&[2], &none, |_| &twice);
    assert_eq!(
        r.get(2).unwrap().metadata,
        Some(Metadata::new([("k", Value::Int(2))]))
    );
    // With a filter, only the items that pass (checked as each is changed).
    let acked = MetadataUpdate::Merge(vec![(Arc::from("acked"), Some(Value::Bool(true)))]);
    let db1 = Filter::matching(Predicate::parse(&json!({"host": "db1"})).unwrap());
    assert_eq!(
        r.update_metadata(&[0, 2, 3, 5], &db1, |_| &acked),
        [0, 3, 5]
    );
    assert_eq!(r.get(2).unwrap().metadata.unwrap().get("acked"), None);
    // Snapshots keep the new metadata.
    let (loaded, _) = Ring::from_snapshot(&r.snapshot("")).unwrap();
    assert_eq!(loaded.get(2).unwrap().metadata, r.get(2).unwrap().metadata);
    assert_eq!(loaded.get(4).unwrap().metadata, None);
}

/// Filters searched again and again (their answers remembered per slot) keep exactly the items
/// a fresh evaluation keeps while the ring overwrites, deletes and refills slots, with more
/// filters in turn than are remembered.
#[test]
fn remembered_filter_answers_follow_every_write() {
    let dim = 8;
    let r = ring(dim, 3, 16, Storage::F32);
    let mut rng = Rng(11);
    let filters: Vec<Filter> = (0..6)
        .map(|j| {
            Filter::matching(
                Predicate::parse(&json!({"n": {"$gte": j * 3}, "odd": (j % 2 == 1)})).unwrap(),
            )
        })
        .chain([Filter {
            since: Some(30.0),
            ..Filter::matching(Predicate::parse(&json!({"odd": true})).unwrap())
        }])
        .collect();
    let mut next = 0u64;
    for round in 0..12 {
        let n = 7 + round * 3;
        let attrs = Attributes {
            timestamps: (0..n).map(|i| (next + i as u64) as f64).collect(),
            metadata: (0..n)
                .map(|i| {
                    let v = (next as usize + i) * 7 % 20;
                    Some(Metadata::new([
                        ("n", Value::Int(v as i64)),
                        ("odd", Value::Bool(v % 2 == 1)),
                    ]))
                })
                .collect(),
            ..Attributes::default()
        };
        r.ingest(&rng.vecs(n, dim), &attrs).unwrap();
        next += n as u64;
        if round % 3 == 2 {
            let held: Vec<u64> = (next.saturating_sub(48)..next).collect();
            r.delete(&held[..held.len() / 3]);
        }
        if round % 3 == 1 {
            // Metadata changed in place: what was remembered for those slots is forgotten.
            let held: Vec<u64> = (next.saturating_sub(30)..next).step_by(2).collect();
            let updates: Vec<MetadataUpdate> = held
                .iter()
                .map(|&id| {
                    if id % 4 == 0 {
                        MetadataUpdate::Merge(vec![
                            (Arc::from("odd"), Some(Value::Bool(id % 3 == 0))),
                            (Arc::from("n"), None),
                        ])
                    } else {
                        let n = Value::Int((id * 3 % 20) as i64);
                        MetadataUpdate::Replace(Some(Metadata::new([("n", n)])))
                    }
                })
                .collect();
            assert_eq!(
                r.update_metadata(&held, &Filter::default(), |i| &updates[i])
                    .len(),
                held.len()
            );
        }
        let q = rng.vecs(1, dim);
        // Three filters every round (remembered from round to round), and in turn two more of
        // the others (which push the least recent out: at most four are remembered).
        let extra = [3 + round % 4, 3 + (round + 1) % 4];
        for f in [0, 1, 2, extra[0], extra[1]].map(|j| &filters[j]) {
            let mut got: Vec<u64> = r.search(&q, 48, f).unwrap().iter().map(|h| h.id).collect();
            got.sort_unstable();
            let want: Vec<u64> = (0..next)
                .filter(|&id| {
                    r.get(id).is_some_and(|item| {
                        f.matches(item.ts, item.metadata.as_ref(), item.text.as_deref())
                    })
                })
                .collect();
            assert_eq!(got, want, "round {round}, {f:?}");
            let batch = r.search_batch(&q, 48, f).unwrap();
            let mut ids = batch.ids.clone();
            ids.sort_unstable();
            assert_eq!(ids, want, "batch, round {round}");
        }
    }
}

#[test]
fn the_index_follows_the_window_and_serves_filtered_searches() {
    use imesde_ring::IvfConfig;
    // Sign bits pick the candidates: 64 of them would be too few to tell clustered items apart.
    let dim = 256;
    for storage in [Storage::F32, Storage::Int8, Storage::Binary] {
        let r = ring(dim, 4, 1024, storage);
        let exact_ring = ring(dim, 4, 1024, storage);
        let cfg = IvfConfig {
            nlist: 32,
            nprobe: 12,
        };
        r.set_index(Some(cfg)).unwrap();
        assert!(!r.index_trained() && !r.index_wants_training());
        let mut rng = Rng(21);
        let centres = rng.vecs(64, dim);
        let batch = |rng: &mut Rng, n: usize, t0: usize| {
            let noise = rng.vecs(n, dim);
            let data: Vec<f32> = (0..n * dim)
                .map(|i| centres[((i / dim + t0) % 64) * dim + i % dim] + 0.4 * noise[i])
                .collect();
            let attrs = Attributes {
                timestamps: (t0..t0 + n).map(|t| t as f64).collect(),
                metadata: (t0..t0 + n)
                    .map(|t| Some(Metadata::new([("odd", Value::Bool(t % 2 == 1))])))
                    .collect(),
                ..Attributes::default()
            };
            (data, attrs)
        };
        // Fill the window, train, then turn it over three times.
        let mut t = 0;
        for round in 0..16 {
            let (data, attrs) = batch(&mut rng, 1024, t);
            r.ingest(&data, &attrs).unwrap();
            exact_ring.ingest(&data, &attrs).unwrap();
            t += 1024;
            if round == 3 {
                assert!(r.index_wants_training());
                assert!(r.train_index());
                assert!(r.index_trained() && !r.index_wants_training());
                let sizes = r.index_list_sizes();
                assert_eq!(sizes.iter().sum::<usize>(), r.len());
            }
        }
        // Every held item is in exactly one list, also after the window turned over.
        assert_eq!(r.index_list_sizes().iter().sum::<usize>(), r.len());
        // And the lists hold little more than their items (an eighth): per item its slot and
        // sign bits, per slot its place, the centroids, per list up to a block of padding rows.
        let words = dim / 64;
        let ideal = r.len() * (4 + 8 * words) + r.capacity() * 8 + 32 * dim * 4;
        let padding = 32 * 32 * 8 * words;
        let held = r.stats().index_bytes;
        assert!(
            held >= ideal && held <= ideal * 9 / 8 + padding + 32 * 64,
            "{held} bytes for {ideal}"
        );
        assert_eq!(exact_ring.stats().index_bytes, 0);
        let odd = Filter::matching(Predicate::eq("odd", Value::Bool(true)));
        let exact = Filter {
            exact: true,
            ..Filter::default()
        };
        let (mut found, mut total) = (0, 0);
        let (data, _) = batch(&mut rng, 50, 7);
        for q in data.chunks_exact(dim) {
            for f in [&Filter::default(), &odd] {
                let want: Vec<u64> = exact_ring
                    .search(q, 10, f)
                    .unwrap()
                    .iter()
                    .map(|h| h.id)
                    .collect();
                let got = r.search(q, 10, f).unwrap();
                assert!(got.iter().all(|h| r.passes(h.id, f)));
                total += want.len();
                found += got.iter().filter(|h| want.contains(&h.id)).count();
            }
            // exact=true scans every item: the exact ring's answer.
            assert_eq!(
                r.search(q, 10, &exact).unwrap(),
                exact_ring.search(q, 10, &exact).unwrap()
            );
        }
        assert!(
            found as f64 / total as f64 >= 0.9,
            "{storage:?} recall {found}/{total}"
        );
        // Batches agree with single searches; deleted items are gone.
        let qs = &data[..5 * dim];
        let b = r.search_batch(qs, 10, &Filter::default()).unwrap();
        for (j, q) in qs.chunks_exact(dim).enumerate() {
            let single: Vec<u64> = r
                .search(q, 10, &Filter::default())
                .unwrap()
                .iter()
                .map(|h| h.id)
                .collect();
            assert_eq!(&b.ids[j * 10..(j + 1) * 10], single.as_slice());
        }
        let best: Vec<u64> = r
            .search(&data[..dim], 5, &Filter::default())
            .unwrap()
            .iter()
            .map(|h| h.id)
            .collect();
        assert_eq!(r.delete(&best).len(), 5);
        assert!(
            r.search(&data[..dim], 20, &Filter::default())
                .unwrap()
                .iter()
                .all(|h| !best.contains(&h.id))
        );
        // Bad shapes are refused; removing the index brings the exact scan back.
        assert!(
            r.set_index(Some(IvfConfig {
                nlist: 4,
                nprobe: 5
            }))
            .is_err()
        );
        r.set_index(None).unwrap();
        assert!(!r.index_trained());
    }
}

#[test]
fn storage_names_and_index_shapes_parse_and_check() {
    use imesde_ring::{IvfConfig, RingError};
    for s in [Storage::F32, Storage::Int8, Storage::Binary] {
        assert_eq!(s.name().parse::<Storage>().unwrap(), s);
    }
    assert_eq!("float32".parse::<Storage>().unwrap(), Storage::F32);
    let e = "fp16".parse::<Storage>().unwrap_err();
    assert!(
        matches!(&e, RingError::UnknownStorage(n) if n == "fp16"),
        "{e}"
    );
    // The defaults for 2^20 slots; a given nlist has an eighth of it probed (at least 8), a
    // given nprobe wins.
    let d = IvfConfig::with(1 << 20, None, None);
    assert_eq!(d, IvfConfig::for_capacity(1 << 20));
    assert_eq!((d.nlist, d.nprobe), (1024, 128));
    // Rings of fewer than 16 slots: a list per slot, and a shape that passes its own check.
    let tiny = IvfConfig::for_capacity(8);
    assert_eq!((tiny.nlist, tiny.nprobe), (8, 8));
    assert!(tiny.check(8).is_ok());
    let c = IvfConfig::with(1 << 20, Some(64), None);
    assert_eq!((c.nlist, c.nprobe), (64, 8));
    let c = IvfConfig::with(1 << 20, Some(4096), None);
    assert_eq!((c.nlist, c.nprobe), (4096, 512));
    let c = IvfConfig::with(1 << 20, Some(4), None);
    assert_eq!((c.nlist, c.nprobe), (4, 4));
    let c = IvfConfig::with(1 << 20, Some(64), Some(4));
    assert_eq!((c.nlist, c.nprobe), (64, 4));
    assert!(c.check(1 << 20).is_ok());
    // Lists beyond the ring's slots (or 65,536) are refused before anything is allocated.
    let r = ring(8, 2, 64, Storage::F32);
    for (nlist, nprobe) in [(64, 65), (0, 1), (8, 0), (129, 1), (4_000_000_000, 2)] {
        let bad = IvfConfig::with(1 << 20, Some(nlist), Some(nprobe));
        assert!(
            matches!(bad.check(128), Err(RingError::Index { .. })),
            "{bad:?}"
        );
        assert!(r.set_index(Some(bad)).is_err());
        assert!(r.index().is_none());
    }
    assert!(
        IvfConfig::with(1 << 30, Some(1 << 17), Some(8))
            .check(1 << 30)
            .is_err()
    );
    assert!(
        r.set_index(Some(IvfConfig::with(128, Some(128), Some(8))))
            .is_ok()
    );
    // nprobe changes on a set index, within 1..=nlist; without one it is refused.
    assert!(matches!(r.set_nprobe(129), Err(RingError::Index { .. })));
    assert!(matches!(r.set_nprobe(0), Err(RingError::Index { .. })));
    r.set_nprobe(128).unwrap();
    assert_eq!(r.index().map(|c| (c.nlist, c.nprobe)), Some((128, 128)));
    r.set_index(None).unwrap();
    assert_eq!(r.set_nprobe(8), Err(RingError::NoIndex));
    // k_factor: at least 1, the default until set.
    assert_eq!(r.k_factor(), imesde_ring::DEFAULT_K_FACTOR);
    assert!(matches!(r.set_k_factor(0), Err(RingError::ZeroSize { .. })));
    r.set_k_factor(64).unwrap();
    assert_eq!(r.k_factor(), 64);
}

#[test]
fn nprobe_set_on_a_trained_index_keeps_its_lists() {
    use imesde_ring::IvfConfig;
    let dim = 32;
    let data = Rng(11).vecs(4096, dim);
    let qs = &Rng(12).vecs(20, dim);
    let trained = |nprobe| {
        let r = ring(dim, 2, 2048, Storage::F32);
        r.set_index(Some(IvfConfig { nlist: 8, nprobe })).unwrap();
        r.ingest(&data, &Attributes::default()).unwrap();
        assert!(r.train_index());
        r
    };
    let (r, wide) = (trained(1), trained(8));
    let sizes = r.index_list_sizes();
    r.set_nprobe(8).unwrap();
    assert_eq!(r.index_list_sizes(), sizes);
    assert!(r.index_trained());
    let f = Filter::default();
    assert_eq!(
        r.search_batch(qs, 10, &f).unwrap().ids,
        wide.search_batch(qs, 10, &f).unwrap().ids
    );
}

#[test]
fn batched_index_searches_keep_each_querys_hits() {
    use imesde_ring::{BatchResult, IvfConfig};
    let dim = 32;
    let r = ring(dim, 2, 4096, Storage::F32);
    // Lists of about 256 items: a query's one list holds more than the 200 candidates it
    // rescores (answered from the list) or fewer (answered by a scan of every item), and a
    // batch's rows are answered each its own way.
    r.set_index(Some(IvfConfig {
        nlist: 32,
        nprobe: 1,
    }))
    .unwrap();
    let data = Rng(5).vecs(8192, dim);
    r.ingest(&data, &Attributes::default()).unwrap();
    assert!(r.train_index());
    let qs = &data[..50 * dim];
    let b = r.search_batch(qs, 10, &Filter::default()).unwrap();
    assert_eq!((b.nq, b.k), (50, 10));
    let exact = Filter {
        exact: true,
        ..Filter::default()
    };
    let e = r.search_batch(qs, 10, &exact).unwrap();
    // Rows the index answered: not all as the exact scan does.
    assert_ne!(b.ids, e.ids);
    let mut padded = 0;
    for (j, q) in qs.chunks(dim).enumerate() {
        let one: Vec<u64> = r
            .search(q, 10, &Filter::default())
            .unwrap()
            .iter()
            .map(|h| h.id)
            .collect();
        let row = j * b.k..(j + 1) * b.k;
        let got: Vec<u64> = b.ids[row.clone()]
            .iter()
            .copied()
            .filter(|&i| i != BatchResult::NO_ID)
            .collect();
        assert_eq!(got, one, "query {j}");
        for (&id, &s) in b.ids[row.clone()].iter().zip(&b.scores[row]) {
            assert_eq!(id == BatchResult::NO_ID, s == f32::NEG_INFINITY);
        }
        padded += b.k - got.len();
    }
    assert_eq!(padded, 0);
}

#[test]
fn a_training_that_is_no_longer_due_is_not_run() {
    // The engine starts a training on a thread of its own when one is due. When an explicit
    // `train_index` ran first and items were deleted after it, that thread trained again on
    // what was held by then: the lists changed under searches, differently run to run.
    use imesde_ring::IvfConfig;
    let dim = 32;
    let r = ring(dim, 2, 512, Storage::F32);
    r.set_index(Some(IvfConfig {
        nlist: 8,
        nprobe: 2,
    }))
    .unwrap();
    let mut rng = Rng(5);
    let fill = |rng: &mut Rng| {
        let attrs = Attributes {
            timestamps: vec![0.0; 1024],
            ..Attributes::default()
        };
        r.ingest(&rng.vecs(1024, dim), &attrs).unwrap()
    };
    let ids = fill(&mut rng);
    assert!(r.index_wants_training());
    assert!(r.train_index());
    let odd: Vec<u64> = ids.into_iter().filter(|id| id % 2 == 1).collect();
    assert_eq!(r.delete(&odd).len(), 512);
    let lists = r.index_list_sizes();
    assert!(!r.train_index_if_due());
    assert_eq!(r.index_list_sizes(), lists);
    // Due again once the window turned over: trained then.
    fill(&mut rng);
    assert!(r.train_index_if_due());
    assert!(r.index_trained() && !r.index_wants_training());
}

#[test]
fn writes_paused_twice_on_one_thread_run_without_waiting_on_themselves() {
    // A hybrid search's last try holds writes off and runs a search that may hold them off
    // again: the lock is not re-entrant, so that waited on itself for ever.
    let r = ring(4, 2, 8, Storage::Int8);
    let other = ring(4, 2, 8, Storage::Int8);
    r.ingest(&Rng(3).vecs(8, 4), &Attributes::default())
        .unwrap();
    let inner = r.with_writes_paused(|| {
        other.with_writes_paused(|| {
            r.with_writes_paused(|| r.search(&[1.0, 0.0, 0.0, 0.0], 3, &Filter::default()))
        })
    });
    assert_eq!(inner.unwrap().len(), 3);
    // And writes go on once it returned.
    r.ingest(&Rng(4).vecs(2, 4), &Attributes::default())
        .unwrap();
}
