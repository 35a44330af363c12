//! The one place where core errors become Python exceptions.

use imesde_ring::RingError;
use pyo3::PyErr;

use crate::exceptions::{Exc, err};

/// Newtype so that `From<RingError> for PyErr` can live here (orphan rule).
#[derive(Debug)]
pub(crate) struct CoreError(pub(crate) RingError);

impl From<RingError> for CoreError {
    fn from(e: RingError) -> Self {
        CoreError(e)
    }
}

impl From<CoreError> for PyErr {
    fn from(CoreError(e): CoreError) -> PyErr {
        let class = match &e {
            RingError::Dimension { .. } => Exc::Dimension,
            RingError::Length { .. } => Exc::Shape,
            RingError::Capacity { .. } => Exc::Capacity,
            RingError::ZeroSize { .. }
            | RingError::DimTooLarge { .. }
            | RingError::NonFinite { .. }
            | RingError::ZeroVector { .. }
            | RingError::ZeroK
            | RingError::TimeWindow { .. }
            | RingError::Timestamp { .. } => Exc::InvalidValue,
            _ => Exc::Imesde,
        };
        err(class, e.to_string())
    }
}
