//! Reading the Paddle fixtures under `core/tests/fixtures/` (tests only).

use serde_json::Value;

/// `core/tests/fixtures/PATH`, parsed.
pub fn read(path: &str) -> Value {
    let path = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A parameter list written by a `make_fixtures.py` (`[{"name", "shape"}]`).
pub fn param_specs(path: &str) -> Vec<crate::params::ParamSpec> {
    read(path)
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| {
            let shape: Vec<usize> = p["shape"]
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_u64().expect("dim") as usize)
                .collect();
            crate::params::ParamSpec::new(p["name"].as_str().expect("name"), &shape)
        })
        .collect()
}

/// A list of byte values (a picture's pixels) as bytes.
pub fn bytes(v: &Value) -> Vec<u8> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|x| x.as_u64().expect("a byte") as u8)
        .collect()
}

/// A list of numbers as f32.
pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

/// One box: a list of four numbers.
pub fn quad(v: &Value) -> [f32; 4] {
    let b = floats(v);
    assert_eq!(b.len(), 4, "a box has four numbers");
    [b[0], b[1], b[2], b[3]]
}

/// A list of boxes.
pub fn quads(v: &Value) -> Vec<[f32; 4]> {
    v.as_array()
        .expect("a list of boxes")
        .iter()
        .map(quad)
        .collect()
}
