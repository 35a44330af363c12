//! The one place where core errors become Python exceptions.

use imesde_bm25::Bm25Error;
use imesde_embed::EmbedError;
use imesde_engine::EngineError;
use imesde_ring::RingError;
use imesde_rq::RqError;
use imesde_simd::similarity::SimilarityError;
use std::path::Path;

use pyo3::prelude::*;

use crate::exceptions::{Exc, err};

/// The core crates' errors, wrapped so that `From<CoreError> for PyErr` can live here (orphan
/// rule).
#[derive(Debug)]
pub(crate) enum CoreError {
    Ring(RingError),
    Embed(EmbedError),
    Bm25(Bm25Error),
    Rq(RqError),
    Engine(EngineError),
    Similarity(SimilarityError),
}

impl From<SimilarityError> for CoreError {
    fn from(e: SimilarityError) -> Self {
        CoreError::Similarity(e)
    }
}

impl From<EngineError> for CoreError {
    fn from(e: EngineError) -> Self {
        // The parts' errors keep their own classes.
        match e {
            EngineError::Ring(e) => CoreError::Ring(e),
            EngineError::Embed(e) => CoreError::Embed(e),
            EngineError::Bm25(e) => CoreError::Bm25(e),
            EngineError::Rq(e) => CoreError::Rq(e),
            e => CoreError::Engine(e),
        }
    }
}

impl From<RqError> for CoreError {
    fn from(e: RqError) -> Self {
        CoreError::Rq(e)
    }
}

impl From<Bm25Error> for CoreError {
    fn from(e: Bm25Error) -> Self {
        CoreError::Bm25(e)
    }
}

impl From<RingError> for CoreError {
    fn from(e: RingError) -> Self {
        CoreError::Ring(e)
    }
}

impl From<EmbedError> for CoreError {
    fn from(e: EmbedError) -> Self {
        CoreError::Embed(e)
    }
}

impl From<CoreError> for PyErr {
    fn from(e: CoreError) -> PyErr {
        let io = e
            .io()
            .map(|(path, source)| (path.to_path_buf(), source.raw_os_error()));
        let (class, msg) = match e {
            CoreError::Ring(e) => (ring_class(&e), e.to_string()),
            CoreError::Embed(EmbedError::Interrupted)
            | CoreError::Bm25(Bm25Error::Interrupted)
            | CoreError::Rq(RqError::Interrupted) => {
                return pyo3::exceptions::PyKeyboardInterrupt::new_err("interrupted");
            }
            CoreError::Embed(e) => (embed_class(&e), e.to_string()),
            CoreError::Bm25(e) => (bm25_class(&e), e.to_string()),
            CoreError::Rq(e) => (rq_class(&e), e.to_string()),
            CoreError::Engine(e) => (engine_class(&e), engine_message(&e)),
            CoreError::Similarity(e) => (
                match e {
                    SimilarityError::Dimension { .. } => Exc::Dimension,
                    SimilarityError::Shape { .. } => Exc::Shape,
                    SimilarityError::TooLarge { .. } => Exc::Capacity,
                    _ => Exc::InvalidValue,
                },
                e.to_string(),
            ),
        };
        match io {
            // A `StorageError` is an `OSError`: made as `OSError(errno, strerror, filename)`
            // is, its `errno` (`e.errno == errno.ENOENT` for a snapshot not written yet),
            // `strerror` and `filename` are Python's own, and go with it when it is pickled.
            Some((path, Some(errno))) => Python::attach(|py| {
                let strerror = py
                    .import("os")
                    .and_then(|os| os.call_method1("strerror", (errno,)))
                    .and_then(|s| s.extract::<String>());
                match (crate::exceptions::class(py, class), strerror) {
                    (Ok(cls), Ok(strerror)) => {
                        PyErr::from_type(cls, (errno, strerror, path.into_os_string()))
                    }
                    (Err(e), _) | (_, Err(e)) => e,
                }
            }),
            _ => err(class, msg),
        }
    }
}

impl CoreError {
    /// The file and the OS error of a read or write that failed.
    fn io(&self) -> Option<(&Path, &std::io::Error)> {
        match self {
            CoreError::Bm25(Bm25Error::Io { path, source })
            | CoreError::Rq(RqError::Io { path, source })
            | CoreError::Engine(EngineError::Io { path, source }) => Some((path, source)),
            _ => None,
        }
    }
}

/// The result of work that can fail with a core error (as [`crate::gil::run`] returns it), as
/// one `PyResult`: `gil::run(py, "Engine.save", || core.save(&path)).raise()?`.
pub(crate) trait Raise<T> {
    fn raise(self) -> PyResult<T>;
}

impl<T, E> Raise<T> for PyResult<Result<T, E>>
where
    CoreError: From<E>,
{
    fn raise(self) -> PyResult<T> {
        self?.map_err(|e| CoreError::from(e).into())
    }
}

fn ring_class(e: &RingError) -> Exc {
    match e {
        RingError::Dimension { .. } => Exc::Dimension,
        RingError::Length { .. } => Exc::Shape,
        RingError::Snapshot(_) => Exc::Corrupt,
        RingError::Capacity { .. }
        | RingError::Memory { .. }
        | RingError::LoadMemory { .. }
        | RingError::TooManyShards { .. }
        | RingError::IdsExhausted { .. } => Exc::Capacity,
        RingError::TimestampRange { .. } => Exc::OutOfRange,
        RingError::ZeroSize { .. }
        | RingError::DimTooLarge { .. }
        | RingError::NonFinite { .. }
        | RingError::ZeroVector { .. }
        | RingError::ZeroK
        | RingError::TimeWindow { .. }
        | RingError::Timestamp { .. }
        | RingError::Metadata { .. }
        | RingError::Index { .. }
        | RingError::NoIndex
        | RingError::UnknownStorage(_)
        | RingError::Standing(_) => Exc::InvalidValue,
        _ => Exc::Imesde,
    }
}

fn embed_class(e: &EmbedError) -> Exc {
    match e {
        EmbedError::NotFound { .. } => Exc::ModelNotFound,
        EmbedError::Runtime { .. }
        | EmbedError::Model { .. }
        | EmbedError::Tokenizer { .. }
        | EmbedError::Provider { .. } => Exc::ModelLoad,
        EmbedError::Config(_) => Exc::InvalidValue,
        _ => Exc::Embedding,
    }
}

fn bm25_class(e: &Bm25Error) -> Exc {
    match e {
        Bm25Error::Config(_) | Bm25Error::Duplicate(_) => Exc::InvalidValue,
        Bm25Error::NotFound(_) => Exc::NotFound,
        Bm25Error::Io { .. } => Exc::Storage,
        Bm25Error::Corrupt { .. } => Exc::Corrupt,
        _ => Exc::Imesde,
    }
}

fn rq_class(e: &RqError) -> Exc {
    match e {
        RqError::Invalid(_) | RqError::Code { .. } => Exc::InvalidValue,
        RqError::Dimension { .. } => Exc::Dimension,
        RqError::Io { .. } => Exc::Storage,
        RqError::Corrupt { .. } => Exc::Corrupt,
        _ => Exc::Imesde,
    }
}

fn engine_class(e: &EngineError) -> Exc {
    match e {
        // Text for an engine without a model, a BM25 search of one without BM25: a call this
        // engine cannot take.
        EngineError::Invalid(_)
        | EngineError::Filter(_)
        | EngineError::ModelMismatch { .. }
        | EngineError::NoModel
        | EngineError::NoLexical => Exc::InvalidValue,
        EngineError::DimensionMismatch { .. } => Exc::Dimension,
        EngineError::Io { .. } => Exc::Storage,
        _ => Exc::Imesde,
    }
}

/// The engine's message, in Python's terms where it names a method.
fn engine_message(e: &EngineError) -> String {
    match e {
        EngineError::NoModel => "this Engine was made with a dimension and has no model: use \
                                 ingest_vectors / search_vector (hybrid_search with vector=), \
                                 or create it with Engine() or Engine(TextEmbedder(...))"
            .to_owned(),
        EngineError::NoLexical => {
            "this Engine keeps no BM25 index: create it with Engine(..., lexical=True)".to_owned()
        }
        e => e.to_string(),
    }
}
