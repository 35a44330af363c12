//! Loading ONNX Runtime: clear errors for a wrong library, then success. A separate test binary
//! because a process loads the runtime once.

mod common;

use imesde_embed::{EmbedError, load_runtime, runtime_info};

#[test]
fn wrong_library_then_the_right_one() {
    assert!(runtime_info().is_none());
    let missing = std::path::Path::new("/nonexistent/libonnxruntime.so");
    let err = load_runtime(missing).unwrap_err();
    assert!(matches!(err, EmbedError::Runtime { .. }));
    assert!(
        err.to_string().contains("/nonexistent/libonnxruntime.so"),
        "{err}"
    );

    // A file that is not a shared library at all.
    let not_a_lib = common::data_dir().join("README.md");
    let err = load_runtime(&not_a_lib).unwrap_err();
    assert!(err.to_string().contains("README.md"), "{err}");

    let path = common::runtime_path();
    let info = load_runtime(&path).expect("the onnxruntime wheel's library loads");
    assert_eq!(info.path, path);
    // The wheel's file is named after its version: libonnxruntime.so.1.31.1.
    assert!(
        info.version.starts_with("1.") && info.version.split('.').count() == 3,
        "{}",
        info.version
    );
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    if name.starts_with("libonnxruntime.so.") {
        assert!(name.ends_with(&info.version), "{name} vs {}", info.version);
    }
    assert_eq!(runtime_info(), Some(info));
}
