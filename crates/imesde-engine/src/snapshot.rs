//! What an engine stores beside its ring in a snapshot: the model's identity, whether BM25
//! is on and the index's shape. It travels in the ring snapshot's tag as `key=value` lines.

use imesde_ring::IvfConfig;

/// The engine's part of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// The identity of the model the vectors were made with (see
    /// [`crate::TextModel::identity`]); `None` for a vectors-only engine.
    pub model: Option<String>,
    /// Whether a BM25 index is kept (it is rebuilt from the texts on load).
    pub lexical: bool,
    /// The index's shape, if one is set (it is trained again on load).
    pub index: Option<IvfConfig>,
}

impl Manifest {
    /// The manifest as a ring snapshot's tag.
    #[must_use]
    pub fn to_tag(&self) -> String {
        let mut tag = format!(
            "model={}\nlexical={}\n",
            self.model.as_deref().unwrap_or(""),
            u8::from(self.lexical)
        );
        if let Some(c) = self.index {
            tag += &["index=ivf", &c.nlist.to_string(), &c.nprobe.to_string()].join(":");
            tag.push('\n');
        }
        tag
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
        let mut index = field("index").strip_prefix("ivf:").map(|r| r.split(':'));
        let index = index.as_mut().and_then(|parts| {
            let nlist = parts.next()?.parse().ok()?;
            let nprobe = parts.next()?.parse().ok()?;
            Some(IvfConfig { nlist, nprobe })
        });
        Manifest {
            model: (!model.is_empty()).then(|| model.to_owned()),
            lexical: field("lexical") == "1",
            index,
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
                index: Some(IvfConfig {
                    nlist: 1024,
                    nprobe: 64,
                }),
            },
        ] {
            assert_eq!(Manifest::parse(&m.to_tag()), m);
        }
        assert_eq!(Manifest::parse(""), Manifest::default());
        assert!(Manifest::parse("future=1\nlexical=1\n").lexical);
    }
}
