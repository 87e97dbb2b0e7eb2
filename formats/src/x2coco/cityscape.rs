//! cityscapes polygon JSON (`imgHeight`, `imgWidth`, `objects` with `label`
//! and `polygon`) -> COCO entries, as `tools/x2coco.py` builds them.

use std::path::Path;

use super::{image_entry, points, polygon_annotation, Categories, Converted};
use crate::error::{Error, Result};

pub fn convert(
    path: &Path,
    data: &serde_json::Value,
    img_file: &str,
    image_num: i64,
    object_num: &mut i64,
    categories: &mut Categories,
) -> Result<Converted> {
    let field = |name: &str| {
        data.get(name)
            .ok_or_else(|| Error::at(path, name, format!("missing key {name:?}")))
    };
    let (height, width) = (field("imgHeight")?, field("imgWidth")?);
    let image_id = image_num + 1;
    let image = image_entry(
        path,
        (height, "imgHeight"),
        (width, "imgWidth"),
        image_id,
        img_file,
    )?;
    let mut annotations = Vec::new();
    let objects = field("objects")?
        .as_array()
        .ok_or_else(|| Error::at(path, "objects", "not a list"))?;
    for (k, object) in objects.iter().enumerate() {
        let place = format!("objects[{k}]");
        *object_num += 1;
        let label = object
            .get("label")
            .and_then(|l| l.as_str())
            .ok_or_else(|| Error::at(path, &place, "object has no string \"label\""))?;
        let category_id = categories.id(label);
        let pts = points(
            path,
            &format!("{place}.polygon"),
            object.get("polygon").unwrap_or(&serde_json::Value::Null),
        )?;
        annotations.push(polygon_annotation(
            path,
            &place,
            height,
            width,
            &pts,
            image_id,
            category_id,
            *object_num + 1,
        )?);
    }
    Ok(Converted { image, annotations })
}
