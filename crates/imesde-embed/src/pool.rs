//! Turning a model's token states into one vector per text.

use std::fmt;
use std::str::FromStr;

use crate::error::EmbedError;

/// How token states become a sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// The mean of the token states under the attention mask (sentence-transformers' default).
    #[default]
    Mean,
    /// The state of the first token (`[CLS]`).
    Cls,
}

impl FromStr for Pooling {
    type Err = EmbedError;
    fn from_str(s: &str) -> Result<Self, EmbedError> {
        match s {
            "mean" => Ok(Self::Mean),
            "cls" => Ok(Self::Cls),
            other => Err(EmbedError::Config(format!(
                "pooling must be \"mean\" or \"cls\", got {other:?}"
            ))),
        }
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mean => "mean",
            Self::Cls => "cls",
        })
    }
}

/// ONNX Runtime's graph optimisation level for a session.
///
/// The default is `Basic` (constant folding, redundant node elimination): on the default model
/// (all-MiniLM-L6-v2 int8) the extended fusions of `Extended` and `All` ran 8-13 % slower
/// (`benches/bench_embed.py`, ORT 1.31, 2 threads). Models already optimised offline (as ONNX
/// Runtime recommends for transformers) gain nothing from them either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Optimization {
    /// The graph as it is.
    None,
    /// Constant folding and redundant node elimination.
    #[default]
    Basic,
    /// And the fusions of known subgraphs (attention, layer norm, GELU).
    Extended,
    /// And layout changes for the CPU at hand.
    All,
}

impl FromStr for Optimization {
    type Err = EmbedError;
    fn from_str(s: &str) -> Result<Self, EmbedError> {
        match s {
            "none" => Ok(Self::None),
            "basic" => Ok(Self::Basic),
            "extended" => Ok(Self::Extended),
            "all" => Ok(Self::All),
            other => Err(EmbedError::Config(format!(
                "optimization must be \"none\", \"basic\", \"extended\" or \"all\", got {other:?}"
            ))),
        }
    }
}

impl fmt::Display for Optimization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Basic => "basic",
            Self::Extended => "extended",
            Self::All => "all",
        })
    }
}

/// Pools `hidden` (`[batch, seq, dim]`, row-major) under `mask` (`[batch, seq]`) into
/// `out` (`[batch, dim]`).
pub fn pool(hidden: &[f32], mask: &[i64], dim: usize, pooling: Pooling, out: &mut [f32]) {
    let batch = out.len() / dim;
    let seq = mask.len() / batch;
    debug_assert_eq!(hidden.len(), batch * seq * dim);
    for b in 0..batch {
        let dst = &mut out[b * dim..(b + 1) * dim];
        let states = &hidden[b * seq * dim..(b + 1) * seq * dim];
        match pooling {
            Pooling::Cls => dst.copy_from_slice(&states[..dim]),
            Pooling::Mean => {
                dst.fill(0.0);
                let mut count = 0.0f32;
                for (t, &m) in mask[b * seq..(b + 1) * seq].iter().enumerate() {
                    if m != 0 {
                        count += 1.0;
                        for (d, &h) in dst.iter_mut().zip(&states[t * dim..(t + 1) * dim]) {
                            *d += h;
                        }
                    }
                }
                // sentence-transformers clamps the token count at 1e-9.
                let inv = 1.0 / count.max(1e-9);
                for d in dst.iter_mut() {
                    *d *= inv;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // exact small integers
mod tests {
    use super::*;

    #[test]
    fn mean_ignores_padding_and_cls_takes_first() {
        // Two texts, three positions, two dims; the second text has one padded position.
        let hidden = [1., 2., 3., 4., 5., 6., 10., 20., 30., 40., 99., 99.];
        let mask = [1, 1, 1, 1, 1, 0];
        let mut out = [0.0; 4];
        pool(&hidden, &mask, 2, Pooling::Mean, &mut out);
        assert_eq!(out, [3., 4., 20., 30.]);
        pool(&hidden, &mask, 2, Pooling::Cls, &mut out);
        assert_eq!(out, [1., 2., 10., 20.]);
    }

    #[test]
    fn parse_optimization() {
        for o in [
            Optimization::None,
            Optimization::Basic,
            Optimization::Extended,
            Optimization::All,
        ] {
            assert_eq!(o.to_string().parse::<Optimization>().unwrap(), o);
        }
        assert!("fast".parse::<Optimization>().is_err());
    }

    #[test]
    fn parse_pooling() {
        assert_eq!("mean".parse::<Pooling>().unwrap(), Pooling::Mean);
        assert_eq!("cls".parse::<Pooling>().unwrap(), Pooling::Cls);
        assert!("max".parse::<Pooling>().is_err());
    }
}
