//! One ONNX Runtime session of a BERT-family sentence model, its inputs and its output.

use std::borrow::Cow;
use std::fmt::Debug;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};

use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{PrimitiveTensorElementType, TensorElementType, TensorRef, ValueType};
use parking_lot::Mutex;

use crate::Optimization;
use crate::error::{EmbedError, Result};
use crate::pool::{Pooling, pool};
use crate::runtime::environment;

impl From<Optimization> for GraphOptimizationLevel {
    fn from(o: Optimization) -> Self {
        match o {
            Optimization::None => GraphOptimizationLevel::Disable,
            Optimization::Basic => GraphOptimizationLevel::Level1,
            Optimization::Extended => GraphOptimizationLevel::Level2,
            Optimization::All => GraphOptimizationLevel::All,
        }
    }
}

/// Integer type of the model's token inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdType {
    I64,
    I32,
}

/// What the chosen output holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Output {
    name: String,
    /// `[batch, dim]`, already pooled by the graph; otherwise `[batch, seq, dim]` token states.
    pooled: bool,
}

/// Padded token arrays for one sub-batch, `[batch, seq]` row-major.
#[derive(Debug, Default)]
#[allow(clippy::struct_field_names)]
pub struct Batch {
    pub ids: Vec<i64>,
    pub mask: Vec<i64>,
    pub type_ids: Vec<i64>,
    pub batch: usize,
    pub seq: usize,
}

/// An ONNX sentence-embedding model behind a lock (`Session::run` needs `&mut`).
#[derive(Debug)]
pub struct OnnxModel {
    /// Released on drop in the process that made it; in a child of `fork()`, never (see
    /// [`Drop`]).
    session: ManuallyDrop<Mutex<Session>>,
    /// The fork generation ([`crate::generation`]) the session was made in.
    generation: u64,
    path: PathBuf,
    id_type: IdType,
    input_ids: String,
    attention_mask: String,
    token_type_ids: Option<String>,
    output: Output,
}

impl Drop for OnnxModel {
    /// Releases the session, except in a child of `fork()`: there its thread pools have lost
    /// their threads, and ONNX Runtime's release waits for ever on their condition variables
    /// (a child whose interpreter dropped an embedder of its parent never exited). The child
    /// leaves it to the end of the process.
    fn drop(&mut self) {
        if self.generation == crate::generation() {
            // SAFETY: dropped once, here; the field is not used after.
            unsafe { ManuallyDrop::drop(&mut self.session) };
        }
    }
}

fn model_error(path: &Path, reason: impl Into<String>) -> EmbedError {
    EmbedError::Model {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl OnnxModel {
    /// Opens `path` with `threads` intra-op threads (`None`: ONNX Runtime's choice), the graph
    /// optimisation `level` and the execution `providers` (ONNX Runtime's names, in order of
    /// preference; empty: the CPU).
    pub fn load(
        path: &Path,
        threads: Option<usize>,
        level: Optimization,
        providers: &[String],
        graph_pooling: bool,
    ) -> Result<Self> {
        if !path.is_file() {
            return Err(EmbedError::NotFound {
                what: "model file",
                path: path.to_path_buf(),
            });
        }
        let env = environment()?;
        let fail = |e: ort::Error<_>| model_error(path, e.to_string());
        let mut builder = Session::builder(env)
            .map_err(|e| model_error(path, e.to_string()))?
            .with_optimization_level(level.into())
            .map_err(fail)?
            .with_inter_threads(1)
            .map_err(fail)?;
        if let Some(n) = threads {
            builder = builder.with_intra_threads(n).map_err(fail)?;
        }
        if !providers.is_empty() {
            builder = builder
                .with_execution_providers(dispatch(providers)?)
                .map_err(|e| EmbedError::Provider {
                    asked: providers.to_vec(),
                    available: crate::available_providers().unwrap_or_default(),
                    reason: e.to_string(),
                })?;
        }
        let session = builder
            .commit_from_file(path)
            .map_err(|e| model_error(path, e.to_string()))?;
        Self::describe(session, path, graph_pooling)
    }

    /// Reads the declared inputs and outputs and checks they are those of a sentence model.
    fn describe(session: Session, path: &Path, graph_pooling: bool) -> Result<Self> {
        let mut id_type = None;
        let (mut ids, mut mask, mut types) = (None, None, None);
        for input in session.inputs() {
            let ty = match input.dtype() {
                ValueType::Tensor {
                    ty: TensorElementType::Int64,
                    ..
                } => IdType::I64,
                ValueType::Tensor {
                    ty: TensorElementType::Int32,
                    ..
                } => IdType::I32,
                other => {
                    return Err(model_error(
                        path,
                        format!(
                            "input {:?} is {other}, expected an int64 or int32 tensor",
                            input.name()
                        ),
                    ));
                }
            };
            if id_type.is_some_and(|t| t != ty) {
                return Err(model_error(path, "the token inputs mix int32 and int64"));
            }
            id_type = Some(ty);
            let slot = match input.name() {
                "input_ids" => &mut ids,
                "attention_mask" => &mut mask,
                "token_type_ids" => &mut types,
                other => {
                    return Err(model_error(
                        path,
                        format!(
                            "unexpected input {other:?}: a BERT-family sentence model takes \
                             input_ids, attention_mask and optionally token_type_ids"
                        ),
                    ));
                }
            };
            *slot = Some(input.name().to_owned());
        }
        let (Some(input_ids), Some(attention_mask), Some(id_type)) = (ids, mask, id_type) else {
            return Err(model_error(
                path,
                "the model must take input_ids and attention_mask",
            ));
        };
        let output = choose_output(&session, graph_pooling).ok_or_else(|| {
            model_error(
                path,
                "no float32 output of rank 2 (sentence vectors) or 3 (token states) but logits: \
                 not a sentence-embedding model",
            )
        })?;
        Ok(Self {
            session: ManuallyDrop::new(Mutex::new(session)),
            generation: crate::generation(),
            path: path.to_path_buf(),
            id_type,
            input_ids,
            attention_mask,
            token_type_ids: types,
            output,
        })
    }

    /// The model file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the graph returns sentence vectors itself (pooling is then the graph's).
    #[must_use]
    pub fn is_pooled(&self) -> bool {
        self.output.pooled
    }

    /// The named input tensors, borrowing `[ids, mask, type_ids]` (`[batch, seq]` each);
    /// `token_type_ids` only when the graph declares it.
    fn feed<'a, T: PrimitiveTensorElementType + Debug + Clone + 'static>(
        &'a self,
        batch: &Batch,
        [ids, mask, types]: [&'a [T]; 3],
    ) -> Result<Vec<(Cow<'a, str>, SessionInputValue<'a>)>> {
        let shape = [batch.batch, batch.seq];
        let named = [
            Some((&self.input_ids, ids)),
            Some((&self.attention_mask, mask)),
            self.token_type_ids.as_ref().map(|name| (name, types)),
        ];
        named
            .into_iter()
            .flatten()
            .map(|(name, data)| {
                let tensor = TensorRef::from_array_view((shape, data))
                    .map_err(|e| EmbedError::Inference(e.to_string()))?;
                Ok((Cow::from(name.as_str()), tensor.into()))
            })
            .collect()
    }

    /// Runs one padded batch and writes `batch` pooled (not yet normalised) vectors of `dim`
    /// values into `out`, resized to fit. Returns `dim`.
    pub fn run(&self, batch: &Batch, pooling: Pooling, out: &mut Vec<f32>) -> Result<usize> {
        if batch.seq == 0
            || batch
                .mask
                .chunks(batch.seq)
                .any(|m| m.iter().all(|&x| x == 0))
        {
            // Nothing to pool: a mean of no states, or a first state that is padding.
            return Err(EmbedError::Tokenize(
                "a text has no tokens (this tokenizer adds no special tokens, and the text has \
                 none of its own)"
                    .to_owned(),
            ));
        }
        let narrow = |v: &[i64]| v.iter().map(|&x| x as i32).collect::<Vec<i32>>();
        let narrowed;
        let inputs = match self.id_type {
            IdType::I64 => self.feed(batch, [&batch.ids, &batch.mask, &batch.type_ids])?,
            IdType::I32 => {
                narrowed = [
                    narrow(&batch.ids),
                    narrow(&batch.mask),
                    narrow(&batch.type_ids),
                ];
                self.feed(batch, [&narrowed[0], &narrowed[1], &narrowed[2]])?
            }
        };
        let infer = |e: ort::Error| EmbedError::Inference(e.to_string());
        // Until the outputs are read (dropped after them): see `close_sessions`.
        let _running = crate::Running::enter()?;
        let mut session = self.session.lock();
        let outputs = session.run(inputs).map_err(infer)?;
        let (out_shape, data) = outputs[self.output.name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(infer)?;
        let dims: Vec<usize> = out_shape.iter().map(|&d| d as usize).collect();
        let dim = *dims.last().unwrap_or(&0);
        let expected_rank = if self.output.pooled { 2 } else { 3 };
        let consistent = dims.len() == expected_rank
            && dims[0] == batch.batch
            && dim > 0
            && (self.output.pooled || dims[1] == batch.seq);
        if !consistent {
            return Err(EmbedError::Inference(format!(
                "output {:?} has shape {dims:?} for a batch of {} x {} tokens",
                self.output.name, batch.batch, batch.seq
            )));
        }
        out.clear();
        out.resize(batch.batch * dim, 0.0);
        if self.output.pooled {
            out.copy_from_slice(data);
        } else {
            pool(data, &batch.mask, dim, pooling, out);
        }
        if !out.iter().all(|v| v.is_finite()) {
            return Err(EmbedError::Inference(format!(
                "output {:?} holds NaN or infinite values for this batch",
                self.output.name
            )));
        }
        Ok(dim)
    }
}

/// The output to read: the sentence vector a sentence-transformers export computes itself
/// (`sentence_embedding`: its own pooling and any layers after it; without `graph_pooling`
/// only when the graph has no token states), then token states named like
/// sentence-transformers' or Hugging Face's, then any rank-3 or rank-2 float32 output but a
/// classifier's logits.
fn choose_output(session: &Session, graph_pooling: bool) -> Option<Output> {
    let floats: Vec<(&str, usize)> = session
        .outputs()
        .iter()
        .filter_map(|o| match o.dtype() {
            ValueType::Tensor {
                ty: TensorElementType::Float32,
                shape,
                ..
            } => Some((o.name(), shape.len())),
            _ => None,
        })
        .collect();
    let named = |names: &[&str], rank: usize| {
        floats
            .iter()
            .find(|(n, r)| *r == rank && names.contains(n))
            .map(|(n, _)| *n)
    };
    // A classifier's or cross-encoder's scores are not sentence vectors.
    let any = |rank: usize| {
        floats
            .iter()
            .find(|(n, r)| *r == rank && !n.to_ascii_lowercase().contains("logit"))
            .map(|(n, _)| *n)
    };
    let sentence = || named(&["sentence_embedding", "sentence_embeddings"], 2).map(|n| (n, true));
    let tokens = || named(&["last_hidden_state", "token_embeddings"], 3).map(|n| (n, false));
    let first = if graph_pooling {
        sentence().or_else(tokens)
    } else {
        tokens().or_else(sentence)
    };
    let (name, pooled) = first
        .or_else(|| named(&["embeddings"], 2).map(|n| (n, true)))
        .or_else(|| any(3).map(|n| (n, false)))
        .or_else(|| any(2).map(|n| (n, true)))?;
    Some(Output {
        name: name.to_owned(),
        pooled,
    })
}

/// The execution providers imesde can hand to ONNX Runtime, by ONNX Runtime's name.
pub const PROVIDERS: [&str; 7] = [
    "CPUExecutionProvider",
    "CUDAExecutionProvider",
    "TensorrtExecutionProvider",
    "ROCMExecutionProvider",
    "OpenVINOExecutionProvider",
    "CoreMLExecutionProvider",
    "DmlExecutionProvider",
];

/// ONNX Runtime's provider names from `providers` (full names, or short ones such as
/// `"cuda"`; an unknown name is kept, to be refused with the list the library has when the
/// model loads) or from `device` (`"cuda"` or `"gpu"`: CUDA then the CPU; `"cpu"`). Empty
/// when neither is given: the CPU.
///
/// # Errors
/// [`EmbedError::Config`] for both given, or another device.
pub fn providers_for<S: AsRef<str>>(
    providers: Option<&[S]>,
    device: Option<&str>,
) -> Result<Vec<String>> {
    let full = |name: &str| -> String {
        let lower = name.to_ascii_lowercase();
        PROVIDERS
            .iter()
            .find(|p| {
                let p = p.to_ascii_lowercase();
                p == lower || p.strip_suffix("executionprovider") == Some(lower.as_str())
            })
            .map_or_else(|| name.to_owned(), |p| (*p).to_owned())
    };
    match (providers, device) {
        (Some(_), Some(_)) => Err(EmbedError::Config(
            "give providers or device, not both".to_owned(),
        )),
        (Some(p), None) => Ok(p.iter().map(|n| full(n.as_ref())).collect()),
        (None, Some(d)) => match d.to_ascii_lowercase().as_str() {
            "cpu" => Ok(vec![full("cpu")]),
            "cuda" | "gpu" => Ok(vec![full("cuda"), full("cpu")]),
            other => Err(EmbedError::Config(format!(
                "device must be \"cpu\" or \"cuda\", got {other:?}"
            ))),
        },
        (None, None) => Ok(Vec::new()),
    }
}

/// The providers as `ort` registers them, each failing loudly (no silent fallback to the
/// CPU); a name the loaded library lacks is refused with the list of those it has.
fn dispatch(providers: &[String]) -> Result<Vec<ort::ep::ExecutionProviderDispatch>> {
    use ort::ep;

    let available = crate::available_providers()?;
    providers
        .iter()
        .map(|name| {
            if !available.iter().any(|a| a == name) {
                return Err(EmbedError::Provider {
                    asked: providers.to_vec(),
                    available: available.clone(),
                    reason: format!("{name} is not available"),
                });
            }
            let d: ep::ExecutionProviderDispatch = match name.as_str() {
                "CPUExecutionProvider" => ep::CPU::default().build(),
                "CUDAExecutionProvider" => ep::CUDA::default().build(),
                "TensorrtExecutionProvider" => ep::TensorRT::default().build(),
                "ROCMExecutionProvider" => ep::ROCm::default().build(),
                "OpenVINOExecutionProvider" => ep::OpenVINO::default().build(),
                "CoreMLExecutionProvider" => ep::CoreML::default().build(),
                "DmlExecutionProvider" => ep::DirectML::default().build(),
                other => {
                    return Err(EmbedError::Provider {
                        asked: providers.to_vec(),
                        available: available.clone(),
                        reason: format!(
                            "imesde does not know {other:?} (it knows {})",
                            PROVIDERS.join(", ")
                        ),
                    });
                }
            };
            Ok(d.error_on_failure())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_from_names_or_a_device() {
        let none: Option<&[&str]> = None;
        assert!(providers_for(none, None).unwrap().is_empty());
        assert_eq!(
            providers_for(Some(&["cuda", "CPUExecutionProvider", "Vendor"]), None).unwrap(),
            ["CUDAExecutionProvider", "CPUExecutionProvider", "Vendor"]
        );
        assert_eq!(
            providers_for(none, Some("GPU")).unwrap(),
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
        );
        assert_eq!(
            providers_for(none, Some("cpu")).unwrap(),
            ["CPUExecutionProvider"]
        );
        for (p, d) in [(Some(&["cpu"][..]), Some("cpu")), (None, Some("tpu"))] {
            assert!(matches!(providers_for(p, d), Err(EmbedError::Config(_))));
        }
    }
}
