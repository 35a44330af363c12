//! What an engine stores beside its ring in a snapshot: the model's identity, whether BM25
//! is on and the index's shape. It travels in the ring snapshot's tag as `key=value` lines.

use imesde_ring::{IvfConfig, RingError};

/// The engine's part of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// The identity of the model the vectors were made with (see
    /// [`crate::TextModel::identity`]); `None` for a vectors-only engine.
    pub model: Option<String>,
    /// Whether a BM25 index is kept (it is rebuilt from the texts on load).
    pub lexical: bool,
    /// Its settings, as `LexicalConfig::to_spec` writes them (None: the defaults, as
    /// snapshots made before engines took settings have it).
    pub bm25: Option<String>,
    /// The index's shape, if one is set (it is trained again on load).
    pub index: Option<IvfConfig>,
    /// The ring's `k_factor` when it is not the default ([`imesde_ring::DEFAULT_K_FACTOR`]).
    pub k_factor: Option<usize>,
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
        if let Some(spec) = &self.bm25 {
            tag += "bm25=";
            tag += spec;
            tag.push('\n');
        }
        if let Some(c) = self.index {
            tag += &["index=ivf", &c.nlist.to_string(), &c.nprobe.to_string()].join(":");
            tag.push('\n');
        }
        if let Some(f) = self.k_factor {
            tag += "k_factor=";
            tag += &f.to_string();
            tag.push('\n');
        }
        tag
    }

    /// The manifest in a tag written by [`Manifest::to_tag`] (unknown lines are ignored, so
    /// later versions can add fields).
    ///
    /// # Errors
    /// [`RingError::Snapshot`] for an index line that is not `index=ivf:<nlist>:<nprobe>`, or
    /// a `k_factor` line that is not a count of at least 1.
    pub fn parse(tag: &str) -> Result<Self, RingError> {
        let field = |key: &str| {
            tag.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        };
        let index = match field("index") {
            None => None,
            Some(line) => {
                let shape = line.strip_prefix("ivf:").and_then(|r| r.split_once(':'));
                let parsed = shape.and_then(|(n, p)| Some((n.parse().ok()?, p.parse().ok()?)));
                let Some((nlist, nprobe)) = parsed else {
                    return Err(RingError::Snapshot(format!(
                        "the index line {line:?} is not ivf:<nlist>:<nprobe>"
                    )));
                };
                Some(IvfConfig { nlist, nprobe })
            }
        };
        let k_factor = match field("k_factor") {
            None => None,
            Some(f) => match f.parse::<usize>() {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    return Err(RingError::Snapshot(format!(
                        "the k_factor line {f:?} is not a count of at least 1"
                    )));
                }
            },
        };
        let model = field("model").unwrap_or("");
        Ok(Manifest {
            model: (!model.is_empty()).then(|| model.to_owned()),
            lexical: field("lexical") == Some("1"),
            bm25: field("bm25").map(str::to_owned),
            index,
            k_factor,
        })
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
                bm25: Some("1.2:0.75:lucene:0:german:6f66".into()),
                index: Some(IvfConfig {
                    nlist: 1024,
                    nprobe: 64,
                }),
                k_factor: Some(50),
            },
        ] {
            assert_eq!(Manifest::parse(&m.to_tag()).unwrap(), m);
        }
        assert_eq!(Manifest::parse("").unwrap(), Manifest::default());
        assert!(Manifest::parse("future=1\nlexical=1\n").unwrap().lexical);
        for bad in [
            "ivf:x:2",
            "ivf:-1:2",
            "hnsw:4:2",
            "ivf:4",
            "ivf:99999999999999999999:2",
        ] {
            let tag = format!("model=\nlexical=0\nindex={bad}\n");
            assert!(
                matches!(Manifest::parse(&tag), Err(RingError::Snapshot(_))),
                "{bad}"
            );
        }
        for bad in ["0", "-1", "x", ""] {
            let tag = format!("model=\nlexical=0\nk_factor={bad}\n");
            assert!(
                matches!(Manifest::parse(&tag), Err(RingError::Snapshot(_))),
                "{bad}"
            );
        }
    }
}
