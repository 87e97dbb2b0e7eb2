//! labelme JSON (`imageHeight`, `imageWidth`, `imagePath`, `shapes` of
//! polygons and rectangles) -> COCO entries, as `tools/x2coco.py` builds them.

use std::path::Path;

use super::{
    annotation, flatten_numbers, image_entry, points, polygon_annotation, Categories, Converted,
};
use crate::error::{Error, Result};

pub fn convert(
    path: &Path,
    data: &serde_json::Value,
    _img_file: &str,
    image_num: i64,
    object_num: &mut i64,
    categories: &mut Categories,
) -> Result<Converted> {
    let field = |name: &str| {
        data.get(name)
            .ok_or_else(|| Error::at(path, name, format!("missing key {name:?}")))
    };
    let (height, width) = (field("imageHeight")?, field("imageWidth")?);
    let image_path = field("imagePath")?
        .as_str()
        .ok_or_else(|| Error::at(path, "imagePath", "not a string"))?;
    // The script splits on a backslash when there is one, else on '/'.
    let separator = if image_path.contains('\\') { '\\' } else { '/' };
    let file_name = image_path.rsplit(separator).next().unwrap_or(image_path);
    let image_id = image_num + 1;
    let image = image_entry(
        path,
        (height, "imageHeight"),
        (width, "imageWidth"),
        image_id,
        file_name,
    )?;

    let mut annotations = Vec::new();
    let shapes = field("shapes")?
        .as_array()
        .ok_or_else(|| Error::at(path, "shapes", "not a list"))?;
    for (k, shape) in shapes.iter().enumerate() {
        let place = format!("shapes[{k}]");
        *object_num += 1;
        let label = shape
            .get("label")
            .and_then(|l| l.as_str())
            .ok_or_else(|| Error::at(path, &place, "shape has no string \"label\""))?;
        let category_id = categories.id(label);
        let id = *object_num + 1;
        let pts = || {
            points(
                path,
                &format!("{place}.points"),
                shape.get("points").unwrap_or(&serde_json::Value::Null),
            )
        };
        match shape.get("shape_type").and_then(|t| t.as_str()) {
            Some("polygon") => annotations.push(polygon_annotation(
                path,
                &place,
                height,
                width,
                &pts()?,
                image_id,
                category_id,
                id,
            )?),
            Some("rectangle") => {
                let pts = pts()?;
                let [[ax, ay], [bx, by]] = pts.as_slice() else {
                    return Err(Error::at(
                        path,
                        &place,
                        format!("a rectangle needs 2 points, found {}", pts.len()),
                    ));
                };
                let value = |n: &serde_json::Number| n.as_f64().unwrap_or(f64::NAN);
                let (x1, x2) = if value(ax) <= value(bx) {
                    (*ax, *bx)
                } else {
                    (*bx, *ax)
                };
                let (y1, y2) = if value(ay) <= value(by) {
                    (*ay, *by)
                } else {
                    (*by, *ay)
                };
                // Corners in the order the script writes them: (x1,y1), (x1,y2), (x2,y2), (x2,y1).
                let segmentation = flatten_numbers(&[x1, y1, x1, y2, x2, y2, x2, y1]);
                let (x1, y1, x2, y2) = (value(x1), value(y1), value(x2), value(y2));
                annotations.push(annotation(
                    segmentation,
                    image_id,
                    [x1, y1, x2 - x1, y2 - y1],
                    category_id,
                    id,
                ));
            }
            // Other shape types (point, line, circle) take an id but give no annotation.
            _ => {}
        }
    }
    Ok(Converted { image, annotations })
}
