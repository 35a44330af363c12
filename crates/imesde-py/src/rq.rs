//! `RQCodebooks`: the native half of `imesde.RQKMeans` (training, encoding, decoding, files),
//! and what lets an `Engine` label items with semantic ids without calling Python per batch:
//! `IdStore` (the state of `InMemoryCollisionStore`) and `Labeler`.

// PyO3 hands arguments over by value (paths, array views); borrowing them is the norm here.
#![allow(clippy::needless_pass_by_value)]

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;

use imesde_engine::{IdFormat, IdStore, IdStoreState, RqLabeler};
use imesde_rq::metrics::{codebook_usage, collision_rate};
use imesde_rq::{FitConfig, Init, RqError, RqKMeans};
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::convert::{self, Count, Flag, FsPath, Real, Rows, Text, id_of, reduce_to_bytes};
use crate::error::{CoreError, Raise};
use crate::exceptions::py_err;
use crate::gil;

fn rq_err(e: RqError) -> PyErr {
    CoreError::from(e).into()
}

/// One level's usage: codewords used, normalised entropy, items per codeword.
type LevelUsage<'py> = (usize, f64, Bound<'py, PyArray1<u64>>);

/// Per level: iterations, whether it converged, mean squared residual.
type FitReport = Vec<(usize, bool, f64)>;

/// A borrowed 2-D float32 C-contiguous matrix.
fn matrix<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Rows<'py>> {
    let rows = convert::rows(obj, what)?;
    if rows.one_d {
        return Err(py_err!(
            Shape,
            "{what} must be 2-D (n, dim); for one vector use x[None, :]"
        ));
    }
    Ok(rows)
}

/// Codes as a `(n, levels)` int64 array, checked non-negative.
fn codes_of(codes: &PyReadonlyArray2<'_, i64>, levels: usize) -> PyResult<Vec<u32>> {
    let shape = codes.shape();
    if shape[1] != levels {
        return Err(py_err!(
            Shape,
            "codes must have {levels} columns (one per level), got shape {shape:?}"
        ));
    }
    let flat = codes.as_slice().map_err(|_| {
        py_err!(
            Shape,
            "codes are not C-contiguous; pass np.ascontiguousarray(codes)"
        )
    })?;
    flat.iter()
        .enumerate()
        .map(|(i, &c)| {
            u32::try_from(c).map_err(|_| {
                py_err!(
                    InvalidValue,
                    "code {c} at row {}, level {} is out of range",
                    i / levels,
                    i % levels
                )
            })
        })
        .collect()
}

/// Trained residual-quantisation codebooks (see ``imesde.RQKMeans`` for the friendly API).
#[pyclass(frozen, module = "imesde._imesde", name = "RQCodebooks")]
pub(crate) struct RqCodebooks(Arc<RqKMeans>);

#[pymethods]
impl RqCodebooks {
    /// Trains ``len(n_clusters)`` levels on ``x`` (float32 ``[n, dim]``), without the GIL.
    #[staticmethod]
    #[pyo3(
        signature = (x, n_clusters, *, balanced = Flag(false), max_iter = Count::from(25), tol = Real(1e-4),
                     seed = None, sample_size = None, max_points_per_centroid = Some(Count::from(256)),
                     init = Text("random".into()), refine = None, show_progress_bar = None),
        text_signature = "(x, n_clusters, *, balanced=False, max_iter=25, tol=0.0001, seed=0, sample_size=None, max_points_per_centroid=256, init='random', refine=None, show_progress_bar=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn fit(
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        n_clusters: Vec<Count>,
        balanced: Flag,
        max_iter: Count,
        tol: Real,
        seed: Option<&Bound<'_, PyAny>>,
        sample_size: Option<Count>,
        max_points_per_centroid: Option<Count>,
        init: Text,
        refine: Option<Count>,
        show_progress_bar: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(Self, FitReport)> {
        let x = matrix(x, "X")?;
        let (data, dim) = (x.as_slice(), x.dim);
        let show: bool = convert::bulk(py, "wants_bar")?
            .call1((show_progress_bar, x.rows))?
            .extract()?;
        let n_clusters = codebook_sizes(n_clusters)?;
        let seed = seed.map_or(Ok(0), |s| id_of(s, "seed"))?;
        let init = match &*init {
            "random" => Init::Random,
            "k-means++" | "kmeans++" => Init::KMeansPlusPlus,
            other => {
                return Err(py_err!(
                    InvalidValue,
                    "init must be 'random' or 'k-means++', got {other:?}"
                ));
            }
        };
        let cfg = FitConfig {
            n_clusters,
            max_iter: max_iter.positive("max_iter")?,
            tol: tol.0,
            seed,
            balanced: balanced.0,
            sample_size: sample_size.map(|s| s.positive("sample_size")).transpose()?,
            max_points_per_centroid: max_points_per_centroid
                .map(|s| s.positive("max_points_per_centroid"))
                .transpose()?,
            init,
            refine: refine
                .map(|r| {
                    at_most(
                        r.non_negative("refine")?,
                        MAX_REFINE,
                        "refine must be from 0 to",
                    )
                })
                .transpose()?,
            backend: None,
        };
        // Progress: the fit asks whether to stop once per k-means iteration and once per level
        // and refinement round; the bar counts those asks.
        let steps = cfg.n_clusters.len() * (cfg.max_iter + 1) + cfg.refine.unwrap_or(0);
        let bar = if show {
            Some(
                convert::bulk(py, "Progress")?
                    .call1((steps, "imesde: RQKMeans.fit", true))?
                    .unbind(),
            )
        } else {
            None
        };
        let ticks = AtomicUsize::new(0);
        let mut shown = 0usize;
        let mut advance = |py: Python<'_>, to: usize| {
            if let Some(bar) = &bar
                && to > shown
            {
                let _ = bar.call_method1(py, pyo3::intern!(py, "update"), (to - shown,));
                shown = to;
            }
        };
        let fitted = gil::compute_interruptible(
            py,
            "RQKMeans.fit",
            &mut |py| advance(py, ticks.load(Relaxed).min(steps)),
            |stop| {
                {
                    RqKMeans::fit_until(data, dim, &cfg, &|| {
                        ticks.fetch_add(1, Relaxed);
                        stop.load(Relaxed)
                    })
                }
            },
        );
        if let Some(bar) = &bar {
            if fitted.as_ref().is_ok_and(Result::is_ok) {
                advance(py, steps);
            }
            bar.call_method0(py, pyo3::intern!(py, "close"))?;
        }
        let (model, reports) = fitted?.map_err(rq_err)?;
        let reports = reports
            .into_iter()
            .map(|r| (r.iterations, r.converged, r.mse))
            .collect();
        Ok((Self(Arc::new(model)), reports))
    }

    /// Codes of ``x`` as an int32 array ``[n, n_levels]``; ``beam_width > 1`` searches that
    /// many partial codes per vector and keeps the best reconstruction.
    #[pyo3(signature = (x, beam_width = Count::from(1)), text_signature = "($self, x, beam_width=1)")]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        beam_width: Count,
    ) -> PyResult<Bound<'py, PyArray2<i32>>> {
        let x = matrix(x, "X")?;
        let (data, n) = (x.as_slice(), x.rows);
        if x.dim != self.0.dim() {
            return Err(rq_err(RqError::Dimension {
                expected: self.0.dim(),
                got: x.dim,
            }));
        }
        let beam = beam_width.positive("beam_width")?;
        let codes = gil::compute(py, "RQKMeans.encode", || self.0.encode(data, beam)).raise()?;
        let codes: Vec<i32> = codes.into_iter().map(|c| c as i32).collect();
        codes.into_pyarray(py).reshape([n, self.0.levels().len()])
    }

    /// Reconstructions ``[n, dim]`` (float32) of int64 codes ``[n, n_levels]``.
    fn decode<'py>(
        &self,
        py: Python<'py>,
        codes: PyReadonlyArray2<'py, i64>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let n = codes.shape()[0];
        let codes = codes_of(&codes, self.0.levels().len())?;
        let out = gil::compute(py, "RQKMeans.decode", || self.0.decode(&codes)).raise()?;
        out.into_pyarray(py).reshape([n, self.0.dim()])
    }

    /// Vector dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.0.dim()
    }

    /// Codebook size of each level.
    #[getter]
    fn n_clusters(&self) -> Vec<usize> {
        self.0.n_clusters()
    }

    /// Copies of the codebooks, one float32 ``[k, dim]`` array per level.
    #[getter]
    fn codebooks<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyArray2<f32>>>> {
        let dim = self.0.dim();
        self.0
            .levels()
            .iter()
            .map(|l| l.centroids().into_pyarray(py).reshape([l.len(), dim]))
            .collect()
    }

    /// Per-level assignment biases of a balanced model (float32 ``[k]``); empty arrays for a
    /// plain one.
    #[getter]
    fn biases<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyArray1<f32>>> {
        self.0
            .levels()
            .iter()
            .map(|l| l.bias().into_pyarray(py))
            .collect()
    }

    /// Writes the codebooks to ``path`` atomically (see the file format in README).
    fn save(&self, py: Python<'_>, path: FsPath) -> PyResult<()> {
        gil::compute(py, "RQKMeans.save", || self.0.save(&path))?.map_err(rq_err)
    }

    /// Reads codebooks written by ``save``; a damaged file raises ``IndexCorruptError``.
    #[staticmethod]
    fn load(py: Python<'_>, path: FsPath) -> PyResult<Self> {
        gil::compute(py, "RQKMeans.load", || RqKMeans::load(&path))?
            .map(|m| Self(Arc::new(m)))
            .map_err(rq_err)
    }

    /// The codebooks as the bytes ``save`` writes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.0.to_bytes())
    }

    /// Codebooks from ``to_bytes`` (or a file's) bytes, checked as ``load`` checks a file.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Self> {
        let data = convert::byte_data(data)?;
        gil::compute(py, "RQKMeans.from_bytes", || {
            RqKMeans::from_bytes(&data, std::path::Path::new("<bytes>"))
        })?
        .map(|m| Self(Arc::new(m)))
        .map_err(rq_err)
    }

    /// Pickles through ``to_bytes`` (so ``RQKMeans`` pickles, deep-copies and crosses to
    /// ``spawn`` workers).
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let data = slf.get().0.to_bytes();
        reduce_to_bytes(slf.as_any(), &data, None)
    }

    /// A labeler for ``Engine.attach_semantic_ids``: each batch's greedy (``beam_width`` 1) or
    /// beam-searched codes joined by ``"-"``, made unique through ``store`` when given, all in
    /// Rust.
    #[pyo3(
        signature = (beam_width = Count::from(1), store = None),
        text_signature = "($self, beam_width=1, store=None)"
    )]
    fn labeler(&self, beam_width: Count, store: Option<&PyIdStore>) -> PyResult<Labeler> {
        let beam = (self.0)
            .check_beam(beam_width.positive("beam_width")?)
            .map_err(rq_err)?;
        Ok(Labeler(Arc::new(RqLabeler::new(
            Arc::clone(&self.0),
            IdFormat::Plain("-".to_owned()),
            beam,
            store.map(|s| (Arc::clone(&s.0), "-".to_owned())),
        ))))
    }

    fn __repr__(&self) -> String {
        format!(
            "RQCodebooks(dim={}, n_clusters={:?})",
            self.0.dim(),
            self.0.n_clusters()
        )
    }
}

/// Fraction of rows of ``codes`` (int64 ``[n, levels]``) that share their code with another.
#[pyfunction]
pub(crate) fn rq_collision_rate(py: Python<'_>, codes: PyReadonlyArray2<'_, i64>) -> PyResult<f64> {
    let levels = codes.shape()[1].max(1);
    let codes = codes_of(&codes, levels)?;
    gil::compute(py, "rq_collision_rate", || collision_rate(&codes, levels))
}

/// The most levels, and codewords a level, of codebooks (`imesde.semantic_ids.rqkmeans`'s
/// `MAX_LEVELS`, `MAX_CLUSTERS`: codes are u32), and refinement rounds (`MAX_REFINE`).
const MAX_LEVELS: usize = 256;
const MAX_CLUSTERS: usize = u32::MAX as usize;
const MAX_REFINE: usize = 100;

/// Codebook sizes as given: each positive and at most [`MAX_CLUSTERS`], at most
/// [`MAX_LEVELS`] of them.
fn codebook_sizes(n_clusters: Vec<Count>) -> PyResult<Vec<usize>> {
    if n_clusters.len() > MAX_LEVELS {
        return Err(py_err!(
            InvalidValue,
            "n_clusters lists at most {MAX_LEVELS} levels, got {}",
            n_clusters.len()
        ));
    }
    n_clusters
        .into_iter()
        .map(|k| {
            at_most(
                k.positive("n_clusters")?,
                MAX_CLUSTERS,
                "n_clusters must be at most",
            )
        })
        .collect()
}

/// `value`, or `InvalidValueError("{rule} {max}, got {value}")` above `max`.
fn at_most(value: usize, max: usize, rule: &str) -> PyResult<usize> {
    if value > max {
        return Err(py_err!(InvalidValue, "{rule} {max}, got {value}"));
    }
    Ok(value)
}

/// Per-level ``(used, entropy, counts)`` of ``codes`` for codebooks of sizes ``n_clusters``;
/// entropy is normalised by ``ln k``.
#[pyfunction]
pub(crate) fn rq_codebook_usage<'py>(
    py: Python<'py>,
    codes: PyReadonlyArray2<'py, i64>,
    n_clusters: Vec<Count>,
) -> PyResult<Vec<LevelUsage<'py>>> {
    let ks = codebook_sizes(n_clusters)?;
    // A count per codeword of every level: refused as too large for memory rather than
    // aborting the process when the allocation fails.
    let total: usize = ks.iter().sum();
    Vec::<u64>::new().try_reserve_exact(total).map_err(|_| {
        py_err!(
            Capacity,
            "counts for {total} codewords do not fit in memory"
        )
    })?;
    let codes = codes_of(&codes, ks.len())?;
    for (i, &c) in codes.iter().enumerate() {
        let l = i % ks.len();
        if c as usize >= ks[l] {
            return Err(rq_err(RqError::Code {
                level: l,
                code: i64::from(c),
                k: ks[l],
            }));
        }
    }
    let usage = gil::compute(py, "rq_codebook_usage", || codebook_usage(&codes, &ks))?;
    Ok(usage
        .into_iter()
        .map(|u| (u.used, u.entropy, u.counts.into_pyarray(py)))
        .collect())
}

/// Labels items as an ``Engine`` ingests them, in Rust (made by ``RQCodebooks.labeler``).
#[pyclass(frozen, module = "imesde._imesde")]
pub(crate) struct Labeler(pub(crate) Arc<dyn imesde_engine::Labeler>);

/// The state of an ``InMemoryCollisionStore``: every id handed out and the counters, shared
/// with the labelers made with it.
#[pyclass(frozen, module = "imesde._imesde", name = "IdStore")]
pub(crate) struct PyIdStore(Arc<IdStore>);

#[pymethods]
impl PyIdStore {
    #[new]
    fn new() -> Self {
        PyIdStore(Arc::new(IdStore::new()))
    }

    /// The suffix ``claim([key], "-")`` gives (0 for ``key``, ``n`` for ``key-n``), handed
    /// out as that id.
    fn next_suffix(&self, key: &str) -> u64 {
        self.0.next_suffix(key)
    }

    /// Unique ids for ``keys`` (see ``imesde.UniqueIdResolver`` for the rule).
    #[pyo3(signature = (keys, sep, owners = None))]
    fn claim(
        &self,
        keys: Vec<String>,
        sep: &str,
        owners: Option<Vec<String>>,
    ) -> PyResult<Vec<String>> {
        if let Some(o) = &owners
            && o.len() != keys.len()
        {
            return Err(py_err!(Shape, "{} owners for {} keys", o.len(), keys.len()));
        }
        Ok(self.0.claim(&keys, sep, owners.as_deref()))
    }

    fn __len__(&self) -> usize {
        self.0.len()
    }

    /// Pickles as what it knows (every name's count and whether it was handed out, each
    /// owner's id, and each key's run of suffixed ids): a copy hands out the ids the original
    /// would.
    #[allow(clippy::type_complexity)]
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(
        Bound<'py, PyAny>,
        (
            Vec<(String, u64, bool)>,
            Vec<(String, String, String)>,
            Vec<(String, String, u64)>,
        ),
    )> {
        let state = slf.get().0.state();
        let restore = slf
            .get_type()
            .getattr(pyo3::intern!(slf.py(), "_from_state"))?;
        Ok((restore, (state.names, state.owned, state.runs)))
    }

    /// A store that knows what ``__reduce__`` recorded.
    #[staticmethod]
    #[pyo3(signature = (names, owned, runs = Vec::new()))]
    fn _from_state(
        names: Vec<(String, u64, bool)>,
        owned: Vec<(String, String, String)>,
        runs: Vec<(String, String, u64)>,
    ) -> PyResult<Self> {
        let store =
            IdStore::from_state(IdStoreState { names, owned, runs }).map_err(CoreError::from)?;
        Ok(PyIdStore(Arc::new(store)))
    }
}
