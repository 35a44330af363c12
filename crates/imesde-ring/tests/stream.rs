//! Standing queries and snapshots at the crate level.

use std::sync::Arc;

use imesde_ring::{
    Attributes, Filter, Metadata, Ring, RingConfig, RingError, StandingSpec, Storage,
};

fn vecs(n: usize, dim: usize, mut s: u64) -> Vec<f32> {
    (0..n * dim)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn ring(storage: Storage) -> Ring {
    Ring::new(RingConfig {
        dim: 16,
        num_shards: 3,
        shard_size: 10,
        storage,
    })
    .unwrap()
}

#[test]
fn standing_queries_fire_like_a_search_afterwards() {
    let r = ring(Storage::F32);
    let x = vecs(25, 16, 3);
    let q = x[..16].to_vec();
    let by_threshold = r
        .subscribe(
            &q,
            StandingSpec {
                threshold: Some(0.2),
                ..StandingSpec::default()
            },
        )
        .unwrap();
    let top2 = r
        .subscribe(
            &q,
            StandingSpec {
                top_k: Some(2),
                ..StandingSpec::default()
            },
        )
        .unwrap();
    assert_eq!(r.subscriptions(), vec![by_threshold, top2]);
    let (ids, events) = r.ingest_matching(&x, &Attributes::default()).unwrap();
    assert_eq!(ids, 0..25);
    let fired: Vec<u64> = events
        .iter()
        .filter(|e| e.subscription == by_threshold)
        .map(|e| e.hit.id)
        .collect();
    let found: Vec<u64> = {
        let mut v: Vec<u64> = r
            .search(&q, 25, &Filter::default())
            .unwrap()
            .into_iter()
            .filter(|h| h.score >= 0.2)
            .map(|h| h.id)
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(fired, found);
    assert!(fired.contains(&0));
    // Item 0 is the query itself: the running top-2 fills with items 0 and 1, then nothing beats 0.
    let top: Vec<u64> = events
        .iter()
        .filter(|e| e.subscription == top2)
        .map(|e| e.hit.id)
        .collect();
    assert_eq!(&top[..2], &[0, 1]);
    assert!(r.unsubscribe(top2));
    assert!(!r.unsubscribe(top2));
    let (_, again) = r.ingest_matching(&x[..16], &Attributes::default()).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].subscription, by_threshold);
}

#[test]
fn bad_standing_queries_are_refused() {
    let r = ring(Storage::F32);
    let q = vecs(1, 16, 5);
    assert!(matches!(
        r.subscribe(&q, StandingSpec::default()),
        Err(RingError::Standing(_))
    ));
    let zero_k = StandingSpec {
        top_k: Some(0),
        ..StandingSpec::default()
    };
    assert!(matches!(r.subscribe(&q, zero_k), Err(RingError::ZeroK)));
    let nan = StandingSpec {
        threshold: Some(f32::NAN),
        ..StandingSpec::default()
    };
    assert!(r.subscribe(&q, nan).is_err());
    assert!(r.subscribe(&q[..8], StandingSpec::default()).is_err());
    assert!(r.subscriptions().is_empty());
}

#[test]
fn snapshots_restore_every_slot_and_reject_damage() {
    for storage in [Storage::F32, Storage::Int8, Storage::Binary] {
        let r = ring(storage);
        let x = vecs(47, 16, 9);
        let attrs = Attributes {
            texts: (0..47)
                .map(|i| Some(Arc::from(format!("item {i}"))))
                .collect(),
            timestamps: (0..47).map(|i| 1000.0 + f64::from(i)).collect(),
            metadata: (0..47)
                .map(|i| (i % 2 == 0).then(|| Metadata::new([("even", "yes")])))
                .collect(),
        };
        r.ingest(&x, &attrs).unwrap();
        let bytes = r.snapshot("tag=1");
        let (back, tag) = Ring::from_snapshot(&bytes).unwrap();
        assert_eq!(tag, "tag=1");
        assert_eq!(back.len(), 30);
        assert_eq!(back.next_id(), 47);
        for id in 0..47 {
            assert_eq!(back.get(id), r.get(id), "{storage:?} item {id}");
        }
        let q = &x[16..32];
        assert_eq!(
            back.search(q, 30, &Filter::default()).unwrap(),
            r.search(q, 30, &Filter::default()).unwrap()
        );
        assert_eq!(back.snapshot("tag=1"), bytes);
        for cut in [0, 12, bytes.len() / 2, bytes.len() - 1] {
            assert!(matches!(
                Ring::from_snapshot(&bytes[..cut]),
                Err(RingError::Snapshot(_))
            ));
        }
        let mut bad = bytes.clone();
        bad[40] ^= 1;
        assert!(matches!(
            Ring::from_snapshot(&bad),
            Err(RingError::Snapshot(_))
        ));
    }
}
