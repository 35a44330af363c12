//! Similarity helpers on numpy arrays: the small toolkit people reach for next to a search
//! engine. Inputs are float32 arrays of one vector (`[d]`) or a matrix of rows (`[n, d]`).

use imesde_simd::similarity::{self as sim, UnitError};
use numpy::{IntoPyArray, PyArray1, PyArrayMethods};
use pyo3::prelude::*;

use crate::convert::{Count, Rows, rows};
use crate::exceptions::{Exc, err};
use crate::gil;
use crate::par::install;

/// A zeroed output of `n * m` values, or `CapacityError` when that cannot be allocated (a
/// matrix of every pair of two large inputs), instead of aborting the process.
fn output(n: usize, m: usize) -> PyResult<Vec<f32>> {
    let len = n.checked_mul(m).filter(|l| l.checked_mul(4).is_some());
    let mut v = Vec::new();
    if let Some(len) = len
        && v.try_reserve_exact(len).is_ok()
    {
        v.resize(len, 0.0);
        return Ok(v);
    }
    Err(err(
        Exc::Capacity,
        format!("a result of {n} x {m} values cannot be allocated"),
    ))
}

fn check_finite(what: &str, x: &[f32]) -> PyResult<()> {
    if x.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(err(
            Exc::InvalidValue,
            format!("{what} contains NaN or infinite values"),
        ))
    }
}

fn same_dim(a: &Rows<'_>, b: &Rows<'_>) -> PyResult<()> {
    if a.dim == b.dim {
        Ok(())
    } else {
        Err(err(
            Exc::Dimension,
            format!("a has {} dims, b has {} dims", a.dim, b.dim),
        ))
    }
}

/// L2-normalised copy of the rows of `r`; a zero row is an error (its direction is undefined).
fn unit_rows(what: &str, r: &Rows<'_>) -> PyResult<Vec<f32>> {
    sim::unit_rows(r.as_slice(), r.dim).map_err(|e| match e {
        UnitError::NonFinite => err(
            Exc::InvalidValue,
            format!("{what} contains NaN or infinite values"),
        ),
        UnitError::ZeroRow(i) => err(
            Exc::InvalidValue,
            format!("{what} row {i} is all zeros; its direction (and cosine) is undefined"),
        ),
    })
}

/// Float for two vectors, `[n, m]` matrix otherwise (a 1-D input counts as one row).
fn shape_result<'py>(
    py: Python<'py>,
    a: &Rows<'_>,
    b: &Rows<'_>,
    values: Vec<f32>,
) -> PyResult<Bound<'py, PyAny>> {
    if a.one_d && b.one_d {
        return Ok(values[0].into_pyobject(py)?.into_any());
    }
    Ok(values
        .into_pyarray(py)
        .reshape([a.rows, b.rows])?
        .into_any())
}

fn metric<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    f: fn(&[f32], &[f32]) -> f32,
) -> PyResult<Bound<'py, PyAny>> {
    let (ra, rb) = (rows(a, "a")?, rows(b, "b")?);
    same_dim(&ra, &rb)?;
    let (xa, xb) = (ra.as_slice(), rb.as_slice());
    check_finite("a", xa)?;
    check_finite("b", xb)?;
    let dim = ra.dim;
    let mut out = output(ra.rows, rb.rows)?;
    let values = gil::compute(py, "distance", || {
        install(|| sim::pairwise(xa, xb, dim, f, &mut out));
        out
    })?;
    shape_result(py, &ra, &rb, values)
}

/// Cosine similarity. Two vectors (``[d]``, ``[d]``) give a float; otherwise the ``[n, m]``
/// matrix between the rows of ``a`` and ``b`` (a ``[d]`` input counts as one row). Zero
/// vectors raise ``InvalidValueError``.
#[pyfunction]
pub(crate) fn cosine_similarity<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let (ra, rb) = (rows(a, "a")?, rows(b, "b")?);
    same_dim(&ra, &rb)?;
    let (ua, ub) = (unit_rows("a", &ra)?, unit_rows("b", &rb)?);
    let (n, m) = (ra.rows, rb.rows);
    let mut out = output(n, m)?;
    let values = gil::compute(py, "cosine_similarity", || {
        sim::cosine_matrix(&ua, n, &ub, &mut out);
        out
    })?;
    shape_result(py, &ra, &rb, values)
}

/// Cosine similarity of one ``query`` (``[d]``) against every row of ``vectors``
/// (``[n, d]``): a float32 array of ``n`` scores.
#[pyfunction]
pub(crate) fn batch_cosine_similarity<'py>(
    py: Python<'py>,
    query: &Bound<'py, PyAny>,
    vectors: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let (rq, rv) = (rows(query, "query")?, rows(vectors, "vectors")?);
    if !rq.one_d {
        return Err(err(
            Exc::Shape,
            "query must be 1-D; use cosine_similarity for a matrix",
        ));
    }
    same_dim(&rq, &rv)?;
    let (uq, uv) = (unit_rows("query", &rq)?, unit_rows("vectors", &rv)?);
    let mut out = output(rv.rows, 1)?;
    let values = gil::compute(py, "batch_cosine_similarity", || {
        sim::cosine_matrix(&uq, 1, &uv, &mut out);
        out
    })?;
    Ok(values.into_pyarray(py))
}

/// Euclidean (L2) distance; shapes as in ``cosine_similarity``.
#[pyfunction]
pub(crate) fn euclidean_distance<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    metric(py, a, b, sim::l2)
}

/// Manhattan (L1) distance; shapes as in ``cosine_similarity``.
#[pyfunction]
pub(crate) fn manhattan_distance<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    metric(py, a, b, sim::l1)
}

/// A unit-length copy of ``x`` (``[d]``) or of each row of ``x`` (``[n, d]``). Zero rows
/// raise ``InvalidValueError`` rather than being returned unchanged.
#[pyfunction]
pub(crate) fn normalize_l2<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let r = rows(x, "x")?;
    let out = unit_rows("x", &r)?.into_pyarray(py);
    if r.one_d {
        Ok(out.into_any())
    } else {
        Ok(out.reshape([r.rows, r.dim])?.into_any())
    }
}

/// The ``k`` largest values of ``scores`` (``[n]``, or ``[m, n]`` row by row), best first:
/// ``(values, indices)`` as float32 and int64 arrays of shape ``[min(k, n)]`` or
/// ``[m, min(k, n)]`` (scores first, as ``torch.topk`` and ``Engine.search_vectors``). Equal
/// values keep the lower index first.
#[pyfunction]
#[pyo3(signature = (scores, k = Count::from(10)), text_signature = "(scores, k=10)")]
pub(crate) fn top_k<'py>(
    py: Python<'py>,
    scores: &Bound<'py, PyAny>,
    k: Count,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let k = k.positive("k")?;
    let r = rows(scores, "scores")?;
    let x = r.as_slice();
    if x.iter().any(|v| v.is_nan()) {
        return Err(err(
            Exc::InvalidValue,
            "scores contain NaN, which has no rank",
        ));
    }
    let (m, n) = if r.one_d { (1, r.dim) } else { (r.rows, r.dim) };
    let kk = k.min(n);
    let (idx, val): (Vec<i64>, Vec<f32>) = gil::compute(py, "top_k", || {
        install(|| sim::top_k_rows(x, n, kk))
            .into_iter()
            .map(|(i, v)| (i as i64, v))
            .unzip()
    })?;
    let (idx, val) = (idx.into_pyarray(py), val.into_pyarray(py));
    if r.one_d {
        Ok((val.into_any(), idx.into_any()))
    } else {
        Ok((
            val.reshape([m, kk])?.into_any(),
            idx.reshape([m, kk])?.into_any(),
        ))
    }
}
