//! A sentence model as the engine uses it: an [`Embedder`] and the model's named prompts.

use std::sync::Arc;

use imesde_embed::Embedder;

use crate::error::Result;

/// Prompt names for the texts an engine stores, in order of preference (sentence-transformers
/// models name it differently).
const DOCUMENT_PROMPTS: [&str; 4] = ["document", "passage", "corpus", "doc"];

/// An embedder and its model's named prompts (`"query"` -> `"query: "`), as a
/// sentence-transformers config gives them, with the one applied by default.
#[derive(Debug)]
pub struct TextModel {
    embedder: Embedder,
    prompts: Vec<(String, String)>,
    default_prompt: Option<String>,
}

impl TextModel {
    /// A model without prompts.
    #[must_use]
    pub fn new(embedder: Embedder) -> Self {
        Self::with_prompts(embedder, Vec::new(), None)
    }

    /// A model with named prompts; `default_prompt` (a name among them) is applied when a call
    /// names none.
    #[must_use]
    pub fn with_prompts(
        embedder: Embedder,
        prompts: Vec<(String, String)>,
        default_prompt: Option<String>,
    ) -> Self {
        let default_prompt = default_prompt.filter(|name| prompts.iter().any(|(k, _)| k == name));
        TextModel {
            embedder,
            prompts,
            default_prompt,
        }
    }

    /// The embedder that runs the model.
    #[must_use]
    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// The named prompts, in the order given.
    #[must_use]
    pub fn prompts(&self) -> &[(String, String)] {
        &self.prompts
    }

    /// The name of the prompt applied when a call names none.
    #[must_use]
    pub fn default_prompt(&self) -> Option<&str> {
        self.default_prompt.as_deref()
    }

    /// The text of the prompt named `name`, or `name` itself when the model has no prompt of
    /// that name (a literal prefix, as sentence-transformers' `prompt=` takes one).
    fn prompt_text<'a>(&'a self, name: &'a str) -> &'a str {
        self.prompts
            .iter()
            .find(|(k, _)| k == name)
            .map_or(name, |(_, v)| v.as_str())
    }

    /// `texts` with `prompt` prepended (none: the model's default prompt, if any).
    #[must_use]
    pub fn prompted(&self, texts: &[Arc<str>], prompt: Option<&str>) -> Vec<Arc<str>> {
        match prompt.or(self.default_prompt.as_deref()) {
            Some(p) if !self.prompt_text(p).is_empty() => {
                let prefix = self.prompt_text(p);
                texts
                    .iter()
                    .map(|t| Arc::from(format!("{prefix}{t}")))
                    .collect()
            }
            _ => texts.to_vec(),
        }
    }

    fn named(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|name| {
            self.prompts
                .iter()
                .find(|(k, _)| k == name)
                .map(|(k, _)| k.as_str())
        })
    }

    /// The prompt for queries (`"query"`) when the model has one.
    #[must_use]
    pub fn query_prompt(&self) -> Option<&str> {
        self.named(&["query"])
    }

    /// The prompt for stored texts (`"document"`, `"passage"`, ...) when the model has one.
    #[must_use]
    pub fn document_prompt(&self) -> Option<&str> {
        self.named(&DOCUMENT_PROMPTS)
    }

    /// Embeds `texts` with `prompt` (see [`TextModel::prompted`]); `interrupted` is asked
    /// between model calls.
    ///
    /// # Errors
    /// Embedding failed or was interrupted.
    pub fn embed(
        &self,
        texts: &[Arc<str>],
        prompt: Option<&str>,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<f32>> {
        Ok(self
            .embedder
            .embed(&self.prompted(texts, prompt), interrupted)?)
    }

    /// The prefix `prompt` (none: the default prompt) puts before a text: its text, or "".
    fn prefix<'a>(&'a self, prompt: Option<&'a str>) -> &'a str {
        prompt
            .or(self.default_prompt.as_deref())
            .map_or("", |p| self.prompt_text(p))
    }

    /// What identifies the model in snapshots: file name and size, dimension, pooling,
    /// normalisation, the SHA-256 of the file (two files of one shape can hold different
    /// weights), and what else decides a text's vector: the most tokens read and the prefixes
    /// stored texts and queries get. The hash is read once per embedder.
    ///
    /// # Errors
    /// The model file can no longer be read.
    pub fn identity(&self) -> std::io::Result<String> {
        let path = self.embedder.model_path();
        let size = std::fs::metadata(path)?.len();
        let sha = self.embedder.model_sha256()?;
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let cfg = self.embedder.config();
        Ok(format!(
            "{name}:{size}:dim={}:pooling={}:normalize={}:sha256={sha}:max_length={}:\
             document_prompt={:?}:query_prompt={:?}",
            self.embedder.dim(),
            cfg.pooling,
            cfg.normalize,
            cfg.max_length,
            self.prefix(self.document_prompt()),
            self.prefix(self.query_prompt()),
        ))
    }
}

/// The embedding settings a model identity ([`TextModel::identity`]) records, each None where
/// it does not (older snapshots record less).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordedSettings {
    /// `"mean"` or `"cls"`.
    pub pooling: Option<String>,
    /// Whether vectors were L2-normalised.
    pub normalize: Option<bool>,
    /// Tokens per text.
    pub max_length: Option<usize>,
}

impl RecordedSettings {
    /// The settings `identity` records.
    #[must_use]
    pub fn of(identity: &str) -> Self {
        // Every field before the prompts holds no ':' (the prompts, which may, come last).
        let field = |name: &str| {
            let start = identity.find(&format!(":{name}="))? + name.len() + 2;
            identity[start..].split(':').next()
        };
        Self {
            pooling: field("pooling").map(str::to_owned),
            normalize: field("normalize").and_then(|v| v.parse().ok()),
            max_length: field("max_length").and_then(|v| v.parse().ok()),
        }
    }
}

/// Whether a saved model identity matches the one in use. Older snapshots record less: those
/// without `:max_length=` (and the prompts after it) are matched on what they have, as are
/// those from before the hash (no `:sha256=`).
#[must_use]
pub fn same_model(saved: &str, have: &str) -> bool {
    if saved.contains(":max_length=") {
        return saved == have;
    }
    if saved.contains(":sha256=") {
        return have.split(":max_length=").next() == Some(saved);
    }
    have.split(":sha256=").next() == Some(saved)
}

#[cfg(test)]
mod tests {
    use super::{RecordedSettings, same_model};

    #[test]
    fn an_identity_gives_the_settings_it_records() {
        let have = "m.onnx:9:dim=4:pooling=cls:normalize=false:sha256=ab:max_length=16:\
                    document_prompt=\":pooling=mean\":query_prompt=\"query: \"";
        assert_eq!(
            RecordedSettings::of(have),
            RecordedSettings {
                pooling: Some("cls".into()),
                normalize: Some(false),
                max_length: Some(16),
            }
        );
        let old = RecordedSettings::of("m.onnx:9:dim=4:pooling=mean:normalize=true");
        assert_eq!(
            (old.pooling.as_deref(), old.normalize, old.max_length),
            (Some("mean"), Some(true), None)
        );
        assert_eq!(
            RecordedSettings::of("m.onnx:9"),
            RecordedSettings::default()
        );
    }

    #[test]
    fn identities_match_on_what_the_snapshot_recorded() {
        let have = "m.onnx:9:dim=4:pooling=mean:normalize=true:sha256=ab:max_length=256:\
                    document_prompt=\"\":query_prompt=\"query: \"";
        assert!(same_model(have, have));
        // Another max_length or prompt is another embedding function.
        assert!(!same_model(&have.replace("=256", "=6"), have));
        assert!(!same_model(&have.replace("query: ", ""), have));
        // Snapshots from before max_length and prompts were recorded, and from before the hash.
        let hashed = "m.onnx:9:dim=4:pooling=mean:normalize=true:sha256=ab";
        assert!(same_model(hashed, have));
        assert!(!same_model(&hashed.replace("=ab", "=cd"), have));
        assert!(same_model(
            "m.onnx:9:dim=4:pooling=mean:normalize=true",
            have
        ));
        assert!(!same_model(
            "m.onnx:9:dim=4:pooling=cls:normalize=true",
            have
        ));
    }
}
