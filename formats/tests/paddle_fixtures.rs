//! Reads every fixture written by real paddlepaddle (`fixtures/paddle/
//! make_fixtures.py`) and compares each tensor, byte for byte, and each
//! non-tensor value with what the script recorded in `values.json`.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use pulsefocus_formats::{load_checkpoint, Checkpoint};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/paddle")
}

fn recorded() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(fixtures().join("values.json")).unwrap();
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn assert_matches(fixture: &str, checkpoint: &Checkpoint, expected: &Value) {
    let tensors = expected["tensors"].as_array().unwrap();
    let names: Vec<&str> = checkpoint.names().collect();
    let expected_names: Vec<&str> = tensors
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, expected_names, "{fixture}: names in file order");
    for (name, want) in expected_names.iter().zip(tensors) {
        let t = checkpoint.get(name).unwrap();
        let shape: Vec<usize> = serde_json::from_value(want["shape"].clone()).unwrap();
        let lod: Vec<Vec<u64>> = serde_json::from_value(want["lod"].clone()).unwrap();
        assert_eq!(t.dtype.name(), want["dtype"], "{fixture} {name}");
        assert_eq!(t.shape, shape, "{fixture} {name}");
        assert_eq!(t.lod, lod, "{fixture} {name}");
        assert_eq!(hex(t.bytes.as_slice()), want["hex"], "{fixture} {name}");
    }
    let metadata = Value::Object(checkpoint.metadata.clone());
    assert_eq!(metadata, expected["metadata"], "{fixture}: metadata");
}

#[test]
fn every_fixture_reads_with_the_recorded_values() {
    let recorded = recorded();
    assert_eq!(recorded.len(), 9, "fixtures listed in values.json");
    for (fixture, expected) in &recorded {
        let checkpoint =
            load_checkpoint(&fixtures().join(fixture)).unwrap_or_else(|e| panic!("{fixture}: {e}"));
        assert_matches(fixture, &checkpoint, expected);
    }
}

#[test]
fn all_dtypes_lod_and_zero_d_are_covered() {
    let vars = recorded()["vars"]["tensors"].as_array().unwrap().clone();
    let dtypes: Vec<&str> = vars.iter().map(|t| t["dtype"].as_str().unwrap()).collect();
    for dtype in pulsefocus_formats::DType::ALL {
        assert!(dtypes.contains(&dtype.name()), "{dtype} missing");
    }
    let named = |name: &str| vars.iter().find(|t| t["name"] == name).unwrap().clone();
    assert_eq!(named("t_scalar")["shape"], serde_json::json!([]));
    assert_eq!(named("t_zero_size")["shape"], serde_json::json!([0, 3]));
    assert_eq!(named("t_lod")["lod"], serde_json::json!([[0, 2, 5]]));
}

#[test]
fn program_without_params_and_params_without_program_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let params = tmp.path().join("__params__");
    std::fs::copy(fixtures().join("combined/__params__"), &params).unwrap();
    let err = load_checkpoint(&params).unwrap_err().to_string();
    assert!(err.contains("__model__") && err.contains("names"), "{err}");
}

/// The fixture files that are single files (directories are covered by the
/// per-record tests in the library).
fn fixture_files() -> Vec<&'static str> {
    vec![
        "static.pdparams",
        "dygraph.pdopt",
        "protocol2.pdparams",
        "python2.pdparams",
        "inference.pdiparams",
        "vars/t_lod",
        "vars/t_bfloat16",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn corrupted_fixtures_give_errors_not_panics(
        which in proptest::sample::select(fixture_files()),
        cut in any::<proptest::sample::Index>(),
        flip in any::<proptest::sample::Index>(),
        bit in 0u8..8,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let source = fixtures().join(which);
        let bytes = std::fs::read(&source).unwrap();
        let name = source.file_name().unwrap();
        let copy = tmp.path().join(name);
        if which == "inference.pdiparams" {
            std::fs::copy(fixtures().join("inference.pdmodel"), tmp.path().join("inference.pdmodel")).unwrap();
        }
        std::fs::write(&copy, &bytes[..cut.index(bytes.len())]).unwrap();
        if let Err(e) = load_checkpoint(&copy) {
            prop_assert!(e.to_string().contains(name.to_str().unwrap()), "{}", e);
        }
        let mut flipped = bytes.clone();
        let i = flip.index(flipped.len());
        flipped[i] ^= 1 << bit;
        std::fs::write(&copy, &flipped).unwrap();
        let _ = load_checkpoint(&copy);
    }
}
