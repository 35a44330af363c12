//! Rank fusion: several ranked lists of `(id, score)` into one.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use crate::error::{Bm25Error, Result};

/// How ranked lists are combined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fusion {
    /// Reciprocal Rank Fusion: `sum_i w_i / (k + rank_i)`, ranks from 1 (Cormack et al. 2009).
    Rrf {
        /// The constant added to each rank (60 in the paper and by default).
        k: f32,
    },
    /// `sum_i w_i * minmax_i(score)`: each list's scores scaled to [0, 1] first.
    Weighted,
    /// `sum_i w_i * minmax_i(score)` with every weight 1 unless given (then it is `Weighted`).
    CombSum,
    /// CombSUM (weighted when weights are given) times the number of lists the document
    /// appears in.
    CombMnz,
    /// Borda count: `sum_i w_i * (n_i - rank_i + 1)` for a list of `n_i` results.
    Borda,
}

impl FromStr for Fusion {
    type Err = Bm25Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rrf" => Ok(Self::Rrf { k: 60.0 }),
            "weighted" => Ok(Self::Weighted),
            "combsum" => Ok(Self::CombSum),
            "combmnz" => Ok(Self::CombMnz),
            "borda" => Ok(Self::Borda),
            other => Err(Bm25Error::Config(format!(
                "fusion method must be \"rrf\", \"weighted\", \"combsum\", \"combmnz\" or \"borda\", got {other:?}"
            ))),
        }
    }
}

impl fmt::Display for Fusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rrf { .. } => "rrf",
            Self::Weighted => "weighted",
            Self::CombSum => "combsum",
            Self::CombMnz => "combmnz",
            Self::Borda => "borda",
        })
    }
}

/// Fuses `lists` (each best first) into the `k` best `(id, fused score)`, best first; equal
/// fused scores keep the order of first appearance (in a list of weight > 0). `weights` (one
/// per list, default 1) apply to every method; each list's scores are min-max scaled in f64.
/// An id that only lists of weight 0 name is no result: weights `[0, 1]` give the second
/// list's ranking, not its weakest hit tied at 0 with the first list's ids (min-max scales
/// the weakest hit to 0).
///
/// # Errors
/// A weights list of the wrong length, a negative or non-finite weight, weights that are all
/// 0, or a NaN or infinite score (it has no place in a ranking, and min-max scaling would
/// turn it into any value).
pub fn fuse(
    lists: &[Vec<(u64, f32)>],
    method: Fusion,
    k: usize,
    weights: Option<&[f32]>,
) -> Result<Vec<(u64, f32)>> {
    if let Some(w) = weights {
        if w.len() != lists.len() {
            return Err(Bm25Error::Config(format!(
                "{} weights for {} lists",
                w.len(),
                lists.len()
            )));
        }
        if w.iter().any(|x| !x.is_finite() || *x < 0.0) {
            return Err(Bm25Error::Config("weights must be finite and >= 0".into()));
        }
        if !lists.is_empty() && w.iter().all(|&x| x == 0.0) {
            return Err(Bm25Error::Config(
                "weights must not all be 0 (no list would count)".into(),
            ));
        }
    }
    if let Fusion::Rrf { k } = method
        && !(k.is_finite() && k >= 0.0)
    {
        return Err(Bm25Error::Config(format!(
            "the RRF constant must be >= 0, got {k}"
        )));
    }
    for (i, list) in lists.iter().enumerate() {
        if let Some(&(id, s)) = list.iter().find(|(_, s)| !s.is_finite()) {
            return Err(Bm25Error::Config(format!(
                "lists[{i}]: the score of id {id} is {s}; scores must be finite numbers"
            )));
        }
    }
    let weight = |i: usize| weights.map_or(1.0, |w| w[i]);
    // Score, lists naming it (of weight > 0), first seen (in a list of weight > 0).
    let mut fused: HashMap<u64, (f64, u32, usize)> = HashMap::new();
    let mut order = 0usize;
    for (i, list) in lists.iter().enumerate() {
        // A list names each document once: a later repeat is dropped before anything is
        // counted (it takes no rank, no part in the score range, no place in Borda's count).
        let mut seen_here: HashSet<u64> = HashSet::with_capacity(list.len());
        let list: Vec<(u64, f32)> = list
            .iter()
            .copied()
            .filter(|&(id, _)| seen_here.insert(id))
            .collect();
        let (lo, hi) = list
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &(_, s)| {
                (lo.min(s), hi.max(s))
            });
        let n = list.len();
        for (rank0, &(id, s)) in list.iter().enumerate() {
            // In f64: `hi - lo` of f32 scores near f32's limits overflows in f32.
            let norm = if hi > lo {
                (f64::from(s) - f64::from(lo)) / (f64::from(hi) - f64::from(lo))
            } else {
                1.0
            };
            let w = f64::from(weight(i));
            let contribution = match method {
                Fusion::Rrf { k } => w / (f64::from(k) + rank0 as f64 + 1.0),
                Fusion::Weighted | Fusion::CombSum | Fusion::CombMnz => w * norm,
                Fusion::Borda => w * (n - rank0) as f64,
            };
            let e = fused.entry(id).or_insert((0.0, 0, usize::MAX));
            if w > 0.0 && e.1 == 0 {
                order += 1;
                e.2 = order;
            }
            e.0 += contribution;
            e.1 += u32::from(w > 0.0);
        }
    }
    let mut out: Vec<(u64, f64, usize)> = fused
        .into_iter()
        .filter(|&(_, (_, count, _))| count > 0)
        .map(|(id, (s, count, first))| {
            let s = if matches!(method, Fusion::CombMnz) {
                s * f64::from(count)
            } else {
                s
            };
            (id, s, first)
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
    out.truncate(k);
    Ok(out.into_iter().map(|(id, s, _)| (id, s as f32)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_near_f32_limits_scale_without_overflow() {
        let list = vec![(1, 3e38), (2, 0.0), (3, -3e38)];
        for method in [Fusion::Weighted, Fusion::CombSum, Fusion::CombMnz] {
            let f = fuse(std::slice::from_ref(&list), method, 3, None).unwrap();
            assert_eq!(f, vec![(1, 1.0), (2, 0.5), (3, 0.0)], "{method:?}");
        }
    }

    fn ids(v: &[(u64, f32)]) -> Vec<u64> {
        v.iter().map(|x| x.0).collect()
    }

    #[test]
    fn a_list_of_weight_zero_adds_no_results() {
        let dense = vec![(1, 0.9), (2, 0.8), (3, 0.7), (9, 0.1)];
        let lexical = vec![(3, 12.0), (1, 8.0), (4, 1.0)];
        for method in [
            Fusion::Weighted,
            Fusion::CombSum,
            Fusion::CombMnz,
            Fusion::Borda,
            Fusion::Rrf { k: 60.0 },
        ] {
            let lists = [dense.clone(), lexical.clone()];
            // The weakest lexical hit (4) scales to 0: it still outranks ids only the dense
            // list names (they were tied with it and came first).
            let f = fuse(&lists, method, 10, Some(&[0.0, 1.0])).unwrap();
            assert_eq!(ids(&f), [3, 1, 4], "{method:?}");
            let f = fuse(&lists, method, 10, Some(&[1.0, 0.0])).unwrap();
            assert_eq!(ids(&f), [1, 2, 3, 9], "{method:?}");
            // Ties keep the order of the list that counts, not of one that does not.
            let tied = vec![(5, 2.0), (6, 1.0), (7, 1.0)];
            let reversed = vec![(7, 0.9), (6, 0.8), (5, 0.7)];
            let f = fuse(&[reversed, tied], method, 10, Some(&[0.0, 1.0])).unwrap();
            assert_eq!(ids(&f), [5, 6, 7], "{method:?}");
            assert!(fuse(&lists, method, 10, Some(&[0.0, 0.0])).is_err());
        }
    }

    #[test]
    fn rrf_by_hand() {
        let a = vec![(1, 9.0), (2, 8.0), (3, 7.0)];
        let b = vec![(3, 0.9), (1, 0.8), (4, 0.1)];
        let f = fuse(&[a, b], Fusion::Rrf { k: 60.0 }, 10, None).unwrap();
        // 1: 1/61 + 1/62; 3: 1/63 + 1/61; 2: 1/62; 4: 1/63
        assert_eq!(ids(&f), [1, 3, 2, 4]);
        assert!((f64::from(f[0].1) - (1.0 / 61.0 + 1.0 / 62.0)).abs() < 1e-6);
    }

    #[test]
    fn weighted_minmax_and_mnz() {
        let a = vec![(1, 10.0), (2, 5.0), (3, 0.0)];
        let b = vec![(3, 1.0), (2, 0.5)];
        let w = fuse(
            &[a.clone(), b.clone()],
            Fusion::Weighted,
            10,
            Some(&[0.2, 0.8]),
        )
        .unwrap();
        // 1: .2*1; 2: .2*.5 + .8*0; 3: .2*0 + .8*1
        assert_eq!(ids(&w), [3, 1, 2]);
        assert!((w[0].1 - 0.8).abs() < 1e-6);
        let mnz = fuse(&[a.clone(), b.clone()], Fusion::CombMnz, 10, None).unwrap();
        // 1: 1*1; 2: (.5 + 0)*2; 3: (0 + 1)*2
        assert_eq!(ids(&mnz), [3, 1, 2]);
        assert!((mnz[0].1 - 2.0).abs() < 1e-6);
        let borda = fuse(&[a, b], Fusion::Borda, 2, None).unwrap();
        // 1: 3; 2: 2 + 1; 3: 1 + 2 -> ties keep first appearance
        assert_eq!(ids(&borda), [1, 2]);
    }

    #[test]
    fn weights_count_for_every_score_fusion_and_repeats_count_for_nothing() {
        let a = vec![(1, 1.0), (2, 0.0)];
        let b = vec![(2, 1.0), (1, 0.0)];
        for m in [Fusion::CombSum, Fusion::CombMnz] {
            let dense = fuse(&[a.clone(), b.clone()], m, 2, Some(&[0.9, 0.1])).unwrap();
            let lexical = fuse(&[a.clone(), b.clone()], m, 2, Some(&[0.1, 0.9])).unwrap();
            assert_eq!(
                (ids(&dense), ids(&lexical)),
                (vec![1, 2], vec![2, 1]),
                "{m}"
            );
        }
        // A repeated id is dropped before ranks, the score range and Borda's count are taken.
        for m in [Fusion::Weighted, Fusion::Rrf { k: 0.0 }, Fusion::Borda] {
            let with = fuse(&[vec![(1, 1.0), (1, 0.0), (2, 0.5)]], m, 3, None).unwrap();
            let without = fuse(&[vec![(1, 1.0), (2, 0.5)]], m, 3, None).unwrap();
            assert_eq!(with, without, "{m}");
        }
    }

    #[test]
    fn bad_weights() {
        assert!(fuse(&[vec![], vec![]], Fusion::Weighted, 3, Some(&[1.0])).is_err());
        assert!(fuse(&[vec![]], Fusion::Weighted, 3, Some(&[f32::NAN])).is_err());
        assert!("max".parse::<Fusion>().is_err());
    }

    #[test]
    fn non_finite_scores_are_refused() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let a = vec![(1, bad), (2, 0.5)];
            for m in [Fusion::Weighted, Fusion::CombSum, Fusion::Rrf { k: 60.0 }] {
                let e = fuse(&[a.clone(), vec![(1, 0.3)]], m, 2, None).unwrap_err();
                assert!(e.to_string().contains("id 1"), "{e}");
            }
        }
    }
}
