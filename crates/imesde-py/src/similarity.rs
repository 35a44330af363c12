//! Similarity helpers on numpy arrays: the small toolkit people reach for next to a search
//! engine. Inputs are float32 arrays of one vector (`[d]`) or a matrix of rows (`[n, d]`).

use imesde_simd::similarity::{self as sim, Distance};
use numpy::{IntoPyArray, PyArray1, PyArrayMethods};
use pyo3::prelude::*;

use crate::convert::{Count, Rows, rows};
use crate::error::{CoreError, Raise};
use crate::exceptions::py_err;
use crate::gil;

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

fn distances<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    distance: Distance,
) -> PyResult<Bound<'py, PyAny>> {
    let (ra, rb) = (rows(a, "a")?, rows(b, "b")?);
    let (xa, xb) = ((ra.as_slice(), ra.dim), (rb.as_slice(), rb.dim));
    let values = gil::compute(py, "distance", || sim::distances(distance, xa, xb)).raise()?;
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
    let (xa, xb) = ((ra.as_slice(), ra.dim), (rb.as_slice(), rb.dim));
    let values =
        gil::compute(py, "cosine_similarity", || sim::cosine(["a", "b"], xa, xb)).raise()?;
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
        return Err(py_err!(
            Shape,
            "query must be 1-D; use cosine_similarity for a matrix"
        ));
    }
    let (xq, xv) = ((rq.as_slice(), rq.dim), (rv.as_slice(), rv.dim));
    let values = gil::compute(py, "batch_cosine_similarity", || {
        sim::cosine(["query", "vectors"], xq, xv)
    })
    .raise()?;
    Ok(values.into_pyarray(py))
}

/// Euclidean (L2) distance; shapes as in ``cosine_similarity``.
#[pyfunction]
pub(crate) fn euclidean_distance<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    distances(py, a, b, Distance::L2)
}

/// Manhattan (L1) distance; shapes as in ``cosine_similarity``.
#[pyfunction]
pub(crate) fn manhattan_distance<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    distances(py, a, b, Distance::L1)
}

/// A unit-length copy of ``x`` (``[d]``) or of each row of ``x`` (``[n, d]``). Zero rows
/// raise ``InvalidValueError`` rather than being returned unchanged.
#[pyfunction]
pub(crate) fn normalize_l2<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let r = rows(x, "x")?;
    let out = sim::unit_rows("x", r.as_slice(), r.dim).map_err(CoreError::from)?;
    let out = out.into_pyarray(py);
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
    let (m, n) = if r.one_d { (1, r.dim) } else { (r.rows, r.dim) };
    let kk = k.min(n);
    let found = gil::compute(py, "top_k", || sim::top_k_rows("scores", x, n, kk)).raise()?;
    let (idx, val): (Vec<i64>, Vec<f32>) = found.into_iter().map(|(i, v)| (i as i64, v)).unzip();
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
