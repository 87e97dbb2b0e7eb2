//! What a model declares about each of its parameters, in model order. The model
//! definition is the single source of this list: the loading rules, `plan`, the
//! optimizer and the checkpoint writers all read it from there.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// PaddleDetection's legacy name, e.g. `yolo_block.0.0.0.conv.weights`.
    pub name: String,
    pub shape: Vec<usize>,
}

impl ParamSpec {
    pub fn new(name: impl Into<String>, shape: &[usize]) -> Self {
        ParamSpec {
            name: name.into(),
            shape: shape.to_vec(),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}
