//! Reading the Paddle fixtures under `core/tests/fixtures/ssd/` (tests only).

use serde_json::Value;

/// `core/tests/fixtures/ssd/NAME`, parsed.
pub fn read(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/ssd/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A list of numbers as f32.
pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

/// A list of boxes (each a list of four numbers).
pub fn quads(v: &Value) -> Vec<[f32; 4]> {
    v.as_array()
        .expect("a list of boxes")
        .iter()
        .map(|b| {
            let b = floats(b);
            [b[0], b[1], b[2], b[3]]
        })
        .collect()
}
