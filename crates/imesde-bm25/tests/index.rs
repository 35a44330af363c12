//! The index against its own exhaustive scorer and against a rebuild from scratch; the file
//! format against truncation and tampering.

use imesde_bm25::{AnalyzerConfig, Bm25, Bm25Error, Bm25Hit, Method, Params};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const WORDS: &[&str] = &[
    "kernel",
    "memory",
    "leak",
    "fix",
    "crash",
    "update",
    "translation",
    "german",
    "security",
    "CVE-2024-1234",
    "net/mlx5e",
    "eth0",
    "driver",
    "the",
    "of",
    "boot",
    "panic",
    "nfs",
    "client",
    "server",
    "disk",
    "full",
    "timeout",
    "login",
    "user",
];

fn text(rng: &mut StdRng) -> String {
    let n = rng.random_range(0..14);
    (0..n)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

fn index(method: Method) -> Bm25 {
    Bm25::new(
        Params {
            method,
            ..Params::default()
        },
        AnalyzerConfig::english(),
    )
    .unwrap()
}

fn assert_same(a: &[Bm25Hit], b: &[Bm25Hit], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: {a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!(
            (x.score - y.score).abs() <= 1e-5 * x.score.abs().max(1.0),
            "{what}: {x:?} vs {y:?}"
        );
    }
    // Ids may differ only among equal scores.
    let mut ia: Vec<u64> = a.iter().map(|h| h.id).collect();
    let mut ib: Vec<u64> = b.iter().map(|h| h.id).collect();
    if ia != ib {
        let last = a.last().map_or(0.0, |h| h.score);
        ia.retain(|id| {
            a.iter()
                .any(|h| h.id == *id && (h.score - last).abs() > 1e-5)
        });
        ib.retain(|id| {
            b.iter()
                .any(|h| h.id == *id && (h.score - last).abs() > 1e-5)
        });
        ia.sort_unstable();
        ib.sort_unstable();
        assert_eq!(ia, ib, "{what}");
    }
}

#[test]
fn maxscore_equals_exhaustive() {
    let mut rng = StdRng::seed_from_u64(7);
    for method in [
        Method::Lucene,
        Method::Robertson,
        Method::Atire,
        Method::Bm25Plus { delta: 0.5 },
        Method::Bm25L { delta: 0.5 },
    ] {
        let mut idx = index(method);
        for id in 0..600 {
            idx.add(id, &text(&mut rng)).unwrap();
        }
        for id in (0..600).step_by(7) {
            idx.remove(id).unwrap();
        }
        for _ in 0..200 {
            let q = text(&mut rng);
            let k = rng.random_range(1..30);
            let slow = idx.search_exhaustive(&q, k, 0.0);
            // The default (dense for queries with many postings, as most are here) and the
            // pruned path alone.
            for fast in [idx.search(&q, k, 0.0), idx.search_pruned(&q, k, 0.0)] {
                assert_same(&fast, &slow, &format!("{method} {q:?} k={k}"));
                for h in &fast {
                    assert!(!h.terms.is_empty());
                }
            }
        }
    }
}

#[test]
fn filtered_search_equals_exhaustive_among_the_kept() {
    let mut rng = StdRng::seed_from_u64(9);
    let mut idx = index(Method::Lucene);
    for id in 0..600 {
        idx.add(id, &text(&mut rng)).unwrap();
    }
    for id in (0..600).step_by(11) {
        idx.remove(id).unwrap();
    }
    for modulus in [2u64, 20, 200] {
        for _ in 0..60 {
            let q = text(&mut rng);
            // Single-word queries take the one-list path.
            let q1 = q.split(' ').next().unwrap().to_owned();
            for q in [q, q1] {
                let k = rng.random_range(1..30);
                let kept = |id: u64| id % modulus == 3;
                let slow: Vec<Bm25Hit> = idx
                    .search_exhaustive(&q, usize::MAX, 0.0)
                    .into_iter()
                    .filter(|h| kept(h.id))
                    .take(k)
                    .collect();
                let mut asked = 0;
                let fast = idx.search_filtered(&q, k, 0.0, &mut |id| {
                    asked += 1;
                    kept(id)
                });
                assert_same(&fast, &slow, &format!("{q:?} k={k} mod {modulus}"));
                assert!(fast.iter().all(|h| kept(h.id)));
                assert!(
                    asked <= idx.document_count(),
                    "asked once per candidate at most"
                );
            }
        }
    }
}

#[test]
fn edits_equal_a_rebuild() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut idx = index(Method::Lucene);
    let mut truth = std::collections::BTreeMap::<u64, String>::new();
    for step in 0..3000 {
        let id = rng.random_range(0..400u64);
        let t = text(&mut rng);
        match rng.random_range(0..3) {
            0 if !truth.contains_key(&id) => {
                idx.add(id, &t).unwrap();
                truth.insert(id, t);
            }
            1 if truth.contains_key(&id) => {
                idx.remove(id).unwrap();
                truth.remove(&id);
            }
            _ => {
                idx.update(id, &t).unwrap();
                truth.insert(id, t);
            }
        }
        if step % 500 == 499 {
            let mut fresh = index(Method::Lucene);
            for (id, t) in &truth {
                fresh.add(*id, t).unwrap();
            }
            assert_eq!(idx.document_count(), fresh.document_count());
            assert_eq!(idx.term_count(), fresh.term_count());
            assert!((idx.average_document_length() - fresh.average_document_length()).abs() < 1e-9);
            for q in [
                "memory leak",
                "kernel panic boot",
                "cve-2024-1234",
                "net/mlx5e driver",
            ] {
                let (a, b) = (idx.scores(q), fresh.scores(q));
                assert_eq!(a.len(), b.len());
                for (id, s) in &a {
                    assert!((s - b[id]).abs() <= 1e-5 * s.abs().max(1.0), "{q} {id}");
                }
            }
        }
    }
}

#[test]
fn errors_and_counts() {
    let mut idx = index(Method::Lucene);
    idx.add(1, "kernel panic").unwrap();
    assert!(matches!(idx.add(1, "again"), Err(Bm25Error::Duplicate(1))));
    assert!(matches!(idx.remove(2), Err(Bm25Error::NotFound(2))));
    idx.add(2, "memory leak in the kernel").unwrap();
    assert_eq!(idx.document_count(), 2);
    assert_eq!(idx.term_count(), 6); // kernel panic memori leak in the
    assert!((idx.average_document_length() - 3.5).abs() < 1e-12);
    idx.remove(1).unwrap();
    assert_eq!((idx.document_count(), idx.term_count()), (1, 5));
    assert!(idx.search("panic", 10, 0.0).is_empty());
    assert_eq!(idx.search("kernel", 10, 0.0)[0].terms, ["kernel"]);
    assert!(idx.search("kernel", 10, 100.0).is_empty(), "min_score");
    assert!(
        Bm25::new(
            Params {
                k1: -1.0,
                ..Params::default()
            },
            AnalyzerConfig::default()
        )
        .is_err()
    );
    assert!(
        Bm25::new(
            Params {
                b: 1.5,
                ..Params::default()
            },
            AnalyzerConfig::default()
        )
        .is_err()
    );
}

#[test]
fn save_load_and_damage() {
    let dir = std::env::temp_dir().join(format!("imesde-bm25-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("index.bm25");
    let mut rng = StdRng::seed_from_u64(3);
    let mut idx = Bm25::new(
        Params {
            k1: 0.9,
            b: 0.4,
            method: Method::Bm25Plus { delta: 0.25 },
        },
        AnalyzerConfig {
            stemmer: Some("english".into()),
            stopwords: AnalyzerConfig::english_stopwords(),
            ..AnalyzerConfig::default()
        },
    )
    .unwrap();
    for id in 0..300 {
        idx.add(id * 3, &text(&mut rng)).unwrap();
    }
    for id in 0..50 {
        idx.remove(id * 3).unwrap();
    }
    idx.save(&path).unwrap();
    let back = Bm25::load(&path).unwrap();
    assert_eq!(back.params(), idx.params());
    assert_eq!(back.analyzer().config(), idx.analyzer().config());
    assert_eq!(back.document_count(), 250);
    for q in ["memory leak", "the kernel", "eth0 timeout"] {
        assert_eq!(back.search(q, 20, 0.0), idx.search(q, 20, 0.0));
    }
    // BM25L keeps its delta through a file too.
    let mut l = index(Method::Bm25L { delta: 0.75 });
    l.add(1, "memory leak in the kernel").unwrap();
    let l_back = Bm25::from_bytes(&l.to_bytes(), &path).unwrap();
    assert_eq!(l_back.params(), l.params());
    assert_eq!(l_back.search("leak", 5, 0.0), l.search("leak", 5, 0.0));
    // Its file is of version 4 (the magic is 12 bytes), so a build that reads only version 3
    // calls it newer, not damaged; the other methods' files stay at version 3.
    let version = |b: &[u8]| u32::from_le_bytes(b[12..16].try_into().unwrap());
    assert_eq!(version(&l.to_bytes()), 4);
    assert_eq!(version(&idx.to_bytes()), 3);
    let bytes = std::fs::read(&path).unwrap();
    let bad = dir.join("bad.bm25");
    for cut in [0, 5, 16, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&bad, &bytes[..cut]).unwrap();
        assert!(
            matches!(Bm25::load(&bad), Err(Bm25Error::Corrupt { .. })),
            "cut at {cut}"
        );
    }
    for at in [20, bytes.len() / 3, bytes.len() - 2] {
        let mut b = bytes.clone();
        b[at] ^= 0x40;
        std::fs::write(&bad, &b).unwrap();
        assert!(
            matches!(Bm25::load(&bad), Err(Bm25Error::Corrupt { .. })),
            "flip at {at}"
        );
    }
    assert!(matches!(
        Bm25::load(&dir.join("missing")),
        Err(Bm25Error::Io { .. })
    ));
    assert!(matches!(
        idx.save(&dir.join("no/such/dir/x")),
        Err(Bm25Error::Io { .. })
    ));
    assert!(
        std::fs::read_dir(&dir).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp-"))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn compaction_keeps_results() {
    let mut idx = index(Method::Lucene);
    let mut rng = StdRng::seed_from_u64(5);
    // A stream: add new ids, evict the oldest, far past the compaction threshold.
    for id in 0..6000u64 {
        idx.add(id, &text(&mut rng)).unwrap();
        if id >= 500 {
            idx.remove(id - 500).unwrap();
        }
    }
    let mut fresh = index(Method::Lucene);
    let mut rng = StdRng::seed_from_u64(5);
    for id in 0..6000u64 {
        let t = text(&mut rng);
        if id >= 5500 {
            fresh.add(id, &t).unwrap();
        }
    }
    assert_eq!(idx.document_count(), 500);
    for q in ["memory leak", "security update german"] {
        assert_same(&idx.search(q, 50, 0.0), &fresh.search(q, 50, 0.0), q);
    }
}

#[test]
fn add_batch_equals_one_add_at_a_time() {
    let mut rng = StdRng::seed_from_u64(11);
    // Over two chunks of the batch pipeline, with ids in no particular order.
    let n = 9_000u64;
    let texts: Vec<String> = (0..n).map(|_| text(&mut rng)).collect();
    let ids: Vec<u64> = (0..n).map(|i| (i * 7_919) % 100_003).collect();
    let mut one = index(Method::Lucene);
    for (&id, t) in ids.iter().zip(&texts) {
        one.add(id, t).unwrap();
    }
    let mut batch = index(Method::Lucene);
    batch.add(5, "kernel panic").unwrap();
    // A duplicate anywhere refuses the whole batch, and changes nothing.
    let mut dup = ids.clone();
    dup[8_500] = ids[3];
    assert!(matches!(
        batch.add_batch(&dup, &texts),
        Err(Bm25Error::Config(m)) if m.contains(&format!("id {} is given twice", ids[3]))
    ));
    assert!(matches!(
        batch.add_batch(&[1, 5], &["a", "b"]),
        Err(Bm25Error::Duplicate(5))
    ));
    assert!(matches!(
        batch.add_batch(&[1, 2], &["a"]),
        Err(Bm25Error::Config(_))
    ));
    assert_eq!(batch.document_count(), 1);
    batch.remove(5).unwrap();
    batch.add_batch(&ids, &texts).unwrap();
    assert_eq!(batch.document_count(), one.document_count());
    assert_eq!(batch.token_count(), one.token_count());
    assert_eq!(batch.term_count(), one.term_count());
    for q in [
        "kernel memory leak",
        "net/mlx5e eth0 driver",
        "the of",
        "CVE-2024-1234 fix",
    ] {
        let (a, b) = (one.search(q, 20, 0.0), batch.search(q, 20, 0.0));
        assert!(!a.is_empty());
        assert_same(&a, &b, q);
    }
}

#[test]
fn parallel_batch_builds_the_same_index() {
    // Many distinct words (so each part of the parallel batch numbers its own terms), stop
    // words, compounds and non-ASCII text: the batch, analysed on all cores, must give the
    // very index that adding one document at a time gives, down to the saved bytes.
    let mut rng = StdRng::seed_from_u64(5);
    let word = |rng: &mut StdRng| -> String {
        match rng.random_range(0..10) {
            0 => WORDS[rng.random_range(0..WORDS.len())].to_owned(),
            1 => format!("v{}.{}", rng.random_range(0..20), rng.random_range(0..9)),
            2 => "Übersetzungen".to_owned(),
            _ => (0..rng.random_range(2..7))
                .map(|_| char::from(b'a' + rng.random_range(0..12u8)))
                .collect(),
        }
    };
    let n = 11_000u64;
    let texts: Vec<String> = (0..n)
        .map(|_| {
            (0..rng.random_range(0..20))
                .map(|_| word(&mut rng))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let ids: Vec<u64> = (0..n).map(|i| n - i).collect();
    let config = AnalyzerConfig {
        stemmer: Some("english".into()),
        stopwords: AnalyzerConfig::english_stopwords(),
        ..AnalyzerConfig::default()
    };
    let mut one = Bm25::new(Params::default(), config.clone()).unwrap();
    for (&id, t) in ids.iter().zip(&texts) {
        one.add(id, t).unwrap();
    }
    let mut batch = Bm25::new(Params::default(), config).unwrap();
    batch.add_batch(&ids, &texts).unwrap();
    assert!(one.term_count() > 5_000);
    assert_same_file(&one, &batch, "par");
    // The posting lists (not saved) are the same too: every hit, in order, with equal scores.
    for q in ["kernel memory leak", "v3.1 abc", "übersetzung"]
        .into_iter()
        .chain(texts.iter().step_by(97).map(String::as_str))
    {
        let (a, b) = (one.search(q, 50, 0.0), batch.search(q, 50, 0.0));
        let key = |h: &Bm25Hit| (h.id, h.score.to_bits());
        assert_eq!(
            a.iter().map(key).collect::<Vec<_>>(),
            b.iter().map(key).collect::<Vec<_>>(),
            "{q}"
        );
    }
}

#[test]
fn a_full_word_cache_changes_no_term() {
    // More distinct words than the word cache holds (it is emptied when full), between
    // frequent ones that stem and stop words: one-at-a-time adds, which go through the cache,
    // build the index that the analyzer's own terms build.
    let texts: Vec<String> = (0..20_000)
        .map(|i| {
            let unique: Vec<String> = (0..8).map(|j| format!("tok{}x{j}", i * 8 + j)).collect();
            format!(
                "The kernels were Running {} and the leaks fixed",
                unique.join(" ")
            )
        })
        .collect();
    let config = AnalyzerConfig {
        stemmer: Some("english".into()),
        stopwords: AnalyzerConfig::english_stopwords(),
        ..AnalyzerConfig::default()
    };
    let mut cached = Bm25::new(Params::default(), config.clone()).unwrap();
    for (i, t) in texts.iter().enumerate() {
        cached.add(i as u64, t).unwrap();
    }
    let mut plain = Bm25::new(Params::default(), config).unwrap();
    let terms: Vec<Vec<String>> = texts.iter().map(|t| plain.analyzer().analyze(t)).collect();
    let ids: Vec<u64> = (0..texts.len() as u64).collect();
    plain.add_batch_terms(&ids, &terms).unwrap();
    assert!(plain.term_count() > 1 << 17);
    assert_same_file(&cached, &plain, "cache");
    assert_eq!(cached.search("kernel running leak", 3, 0.0).len(), 3);
}

/// Both indexes saved: the files must be equal byte for byte (terms in the same order, the
/// same documents with the same term counts).
fn assert_same_file(a: &Bm25, b: &Bm25, tag: &str) {
    let dir = std::env::temp_dir().join(format!("imesde-bm25-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (pa, pb) = (dir.join("a.bm25"), dir.join("b.bm25"));
    a.save(&pa).unwrap();
    b.save(&pb).unwrap();
    let same = std::fs::read(&pa).unwrap() == std::fs::read(&pb).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(same, "{tag}: the saved indexes differ");
}

#[test]
fn a_batch_told_to_stop_adds_nothing() {
    let mut rng = StdRng::seed_from_u64(5);
    let texts: Vec<String> = (0..20_000).map(|_| text(&mut rng)).collect();
    let ids: Vec<u64> = (1..=20_000).collect();
    let mut idx = index(Method::Lucene);
    idx.add(0, "kernel panic before").unwrap();
    let res = idx.add_batch_until(&ids, &texts, &|| true);
    assert!(matches!(res, Err(Bm25Error::Interrupted)), "{res:?}");
    assert_eq!(idx.document_count(), 1);
    idx.add_batch_until(&ids, &texts, &|| false).unwrap();
    let mut whole = index(Method::Lucene);
    whole.add(0, "kernel panic before").unwrap();
    whole.add_batch(&ids, &texts).unwrap();
    for q in ["kernel panic", "memory leak fix", "network driver"] {
        assert_same(&idx.search(q, 10, 0.0), &whole.search(q, 10, 0.0), q);
    }
}

/// The best `k` of several indexes searched as one corpus, merged as a sharded engine merges
/// them (higher score, then the most recently added).
fn corpus_search(
    shards: &[Bm25],
    query: &str,
    k: usize,
    keep: Option<&dyn Fn(u64) -> bool>,
) -> Vec<(u64, f32)> {
    let mut corpus = imesde_bm25::Corpus::default();
    let mut order: Vec<String> = Vec::new();
    for s in shards {
        let (docs, len, terms) = s.corpus_terms(query);
        corpus.documents += docs;
        corpus.total_len += len;
        for (t, df) in terms {
            if !order.contains(&t) {
                order.push(t.clone());
            }
            corpus.terms.entry(t).or_insert((0, 0.0)).0 += df;
        }
    }
    for s in shards {
        for (t, m) in
            order
                .iter()
                .zip(s.corpus_max_impacts(&order, corpus.documents, corpus.total_len))
        {
            let e = corpus.terms.get_mut(t).unwrap();
            e.1 = e.1.max(m);
        }
    }
    let mut all: Vec<(u64, f32)> = Vec::new();
    for s in shards {
        let hits = match keep {
            Some(f) => s.search_corpus(query, k, 0.0, &corpus, Some(&mut |id| f(id))),
            None => s.search_corpus(query, k, 0.0, &corpus, None),
        };
        all.extend(hits.into_iter().map(|h| (h.id, h.score)));
    }
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
    all.truncate(k);
    all
}

#[test]
fn indexes_searched_as_one_corpus_equal_one_index() {
    let mut rng = StdRng::seed_from_u64(11);
    // Few words, so equal scores (and equal documents) are common: ties must break alike.
    let docs: Vec<String> = (0..3000).map(|_| text(&mut rng)).collect();
    for method in [
        Method::Lucene,
        Method::Robertson,
        Method::Atire,
        Method::Bm25Plus { delta: 0.5 },
        Method::Bm25L { delta: 0.5 },
    ] {
        let mut one = index(method);
        let mut shards = [index(method), index(method), index(method)];
        for (i, d) in docs.iter().enumerate() {
            one.add(i as u64, d).unwrap();
            // Runs of documents to one shard, as a sharded engine routes batches.
            shards[i / 64 % 3].add(i as u64, d).unwrap();
        }
        // Removals shift every statistic.
        for id in (0..3000).step_by(7) {
            one.remove(id).unwrap();
            shards[(id / 64 % 3) as usize].remove(id).unwrap();
        }
        let odd = |id: u64| id % 2 == 1;
        for _ in 0..150 {
            let q = text(&mut rng);
            let want: Vec<(u64, f32)> = one
                .search(&q, 10, 0.0)
                .into_iter()
                .map(|h| (h.id, h.score))
                .collect();
            assert_eq!(
                corpus_search(&shards, &q, 10, None),
                want,
                "{method:?} {q:?}"
            );
            let want: Vec<(u64, f32)> = one
                .search_filtered(&q, 10, 0.0, &mut |id| odd(id))
                .into_iter()
                .map(|h| (h.id, h.score))
                .collect();
            assert_eq!(
                corpus_search(&shards, &q, 10, Some(&odd)),
                want,
                "{method:?} {q:?} filtered"
            );
        }
    }
}
