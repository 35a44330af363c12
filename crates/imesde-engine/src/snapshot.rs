//! What an engine stores beside its ring in a snapshot: the model's identity and whether BM25
//! is on. It travels in the ring snapshot's tag as `key=value` lines.

/// The engine's part of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// The identity of the model the vectors were made with (see
    /// [`crate::TextModel::identity`]); `None` for a vectors-only engine.
    pub model: Option<String>,
    /// Whether a BM25 index is kept (it is rebuilt from the texts on load).
    pub lexical: bool,
}

impl Manifest {
    /// The manifest as a ring snapshot's tag.
    #[must_use]
    pub fn to_tag(&self) -> String {
        format!(
            "model={}\nlexical={}\n",
            self.model.as_deref().unwrap_or(""),
            u8::from(self.lexical)
        )
    }

    /// The manifest in a tag written by [`Manifest::to_tag`] (unknown lines are ignored, so
    /// later versions can add fields).
    #[must_use]
    pub fn parse(tag: &str) -> Self {
        let field = |key: &str| {
            tag.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                .unwrap_or("")
        };
        let model = field("model");
        Manifest {
            model: (!model.is_empty()).then(|| model.to_owned()),
            lexical: field("lexical") == "1",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_old_tags() {
        for m in [
            Manifest::default(),
            Manifest {
                model: Some("model.onnx:123:dim=384:pooling=mean:normalize=true".into()),
                lexical: true,
            },
        ] {
            assert_eq!(Manifest::parse(&m.to_tag()), m);
        }
        assert_eq!(Manifest::parse(""), Manifest::default());
        assert!(Manifest::parse("future=1\nlexical=1\n").lexical);
    }
}
