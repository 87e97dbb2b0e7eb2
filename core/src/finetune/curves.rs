//! Loss terms and mAP over iterations: drawn as SVG charts (`loss.svg`,
//! `map.svg`) and kept as CSV (`loss.csv`, `map.csv`, one row per step or
//! evaluation, raw values) in the save directory. The CSV files are what a
//! user plots with their own tools, and what a resumed run reads back so its
//! charts continue the run it resumes instead of starting at the resume point.

use std::io::Write;
use std::path::Path;

use pulsefocus_formats::atomic;
use pulsefocus_formats::plot::{write_line_chart, Axis, Chart, Series};
use pulsefocus_formats::{Error, Result};

use crate::detector::Losses;

const MAP_COLUMNS: [&str; 2] = ["iteration", "map"];
/// `loss.svg` draws each loss as a moving average over this many steps.
const LOSS_WINDOW: usize = 20;

/// One row per step: the iteration, then the total loss and its terms
/// (`loss_<name>` columns, as the architecture names them).
#[derive(Debug)]
pub struct Curves {
    loss_columns: Vec<String>,
    loss: Vec<Vec<f64>>,
    map: Vec<Vec<f64>>,
}

impl Curves {
    /// Empty curves for an architecture whose loss terms are `loss_names`.
    pub fn new(loss_names: &[&str]) -> Curves {
        let mut loss_columns = vec!["iteration".to_string(), "loss".to_string()];
        loss_columns.extend(loss_names.iter().map(|n| format!("loss_{n}")));
        Curves {
            loss_columns,
            loss: Vec::new(),
            map: Vec::new(),
        }
    }

    /// The curves a run left in `dir`, up to and including `iteration` (the
    /// snapshot being resumed; later rows belong to the steps about to be
    /// redone). Missing files give empty curves.
    pub fn read(dir: &Path, loss_names: &[&str], iteration: u64) -> Result<Curves> {
        let mut curves = Curves::new(loss_names);
        let up_to = iteration as f64;
        curves.loss = read_csv(&dir.join("loss.csv"), &curves.loss_columns)?;
        curves.map = read_csv(&dir.join("map.csv"), &MAP_COLUMNS)?;
        curves.loss.retain(|row| row[0] <= up_to);
        curves.map.retain(|row| row[0] <= up_to);
        Ok(curves)
    }

    pub fn push_loss(&mut self, iteration: u64, loss: &Losses) {
        let mut row = vec![iteration as f64, f64::from(loss.total())];
        row.extend(loss.values().iter().map(|&v| f64::from(v)));
        assert_eq!(row.len(), self.loss_columns.len(), "the curves' loss terms");
        self.loss.push(row);
    }

    /// The best evaluation so far, `(iteration, mAP)`: the first of equals,
    /// as a run replaces `best_model` only on a strictly higher mAP. The row
    /// at iteration 0 (the starting model's mAP, drawn on the chart) is left
    /// out: no `best_model` was saved for it.
    pub fn best_map(&self) -> Option<(u64, f64)> {
        self.map
            .iter()
            .filter(|row| row[0] > 0.0)
            .fold(None, |best: Option<&Vec<f64>>, row| match best {
                Some(b) if b[1] >= row[1] => Some(b),
                _ => Some(row),
            })
            .map(|row| (row[0] as u64, row[1]))
    }

    pub fn push_map(&mut self, iteration: u64, map: f64) {
        self.map.push(vec![iteration as f64, map]);
    }

    /// Writes the charts and the CSV files (each to a temporary name, then
    /// renamed).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let series: Vec<Series> = self.loss_columns[1..]
            .iter()
            .enumerate()
            .map(|(i, name)| Series {
                name: name.clone(),
                points: smooth(&self.loss, i + 1, LOSS_WINDOW),
            })
            .collect();
        // The first steps' loss is hundreds of times the later one (fresh
        // output layers): on a log axis both ends of the run are readable.
        let title = format!("Training loss (moving average over {LOSS_WINDOW} steps)");
        let loss_chart = Chart {
            title: &title,
            x_label: "iteration",
            y_label: "loss (log scale)",
            x_axis: Axis::Count,
            y_axis: Axis::Log,
        };
        write_line_chart(&dir.join("loss.svg"), &loss_chart, &series)?;
        write_csv(&dir.join("loss.csv"), &self.loss_columns, &self.loss)?;
        if !self.map.is_empty() {
            let map_chart = Chart {
                title: "Evaluation mAP",
                x_label: "iteration",
                y_label: "mAP",
                x_axis: Axis::Count,
                y_axis: Axis::Range(0.0, 1.0),
            };
            write_line_chart(
                &dir.join("map.svg"),
                &map_chart,
                &[Series {
                    name: "mAP".into(),
                    points: self.map.iter().map(|r| (r[0], r[1])).collect(),
                }],
            )?;
            write_csv(&dir.join("map.csv"), &MAP_COLUMNS, &self.map)?;
        }
        Ok(())
    }
}

/// Column `column` against the iteration, as a moving average over `window`
/// rows (as the progress log smooths losses).
fn smooth(rows: &[Vec<f64>], column: usize, window: usize) -> Vec<(f64, f64)> {
    (0..rows.len())
        .map(|i| {
            let from = i.saturating_sub(window - 1);
            let slice = &rows[from..=i];
            let mean = slice.iter().map(|r| r[column]).sum::<f64>() / slice.len() as f64;
            (rows[i][0], mean)
        })
        .collect()
}

fn write_csv<S: AsRef<str>>(path: &Path, header: &[S], rows: &[Vec<f64>]) -> Result<()> {
    let header: Vec<&str> = header.iter().map(AsRef::as_ref).collect();
    atomic::write_file(path, |out| {
        let mut text = header.join(",");
        text.push('\n');
        for row in rows {
            // f64's Display prints the shortest string that reads back to the
            // same value, so a resumed run continues with identical numbers.
            let cells: Vec<String> = row.iter().map(f64::to_string).collect();
            text.push_str(&cells.join(","));
            text.push('\n');
        }
        out.write_all(text.as_bytes())
            .map_err(|e| Error::io(path, e))
    })
}

/// The rows of a CSV file `write_csv` wrote; a missing file has none. A
/// header or row of another shape is an error naming the line.
fn read_csv<S: AsRef<str>>(path: &Path, header: &[S]) -> Result<Vec<Vec<f64>>> {
    let header: Vec<&str> = header.iter().map(AsRef::as_ref).collect();
    let columns = header.len();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut lines = text.lines().enumerate();
    let expected = header.join(",");
    match lines.next() {
        Some((_, first)) if first.trim() == expected => {}
        _ => {
            return Err(Error::at(
                path,
                "line 1",
                format!("expected the header {expected:?}"),
            ))
        }
    }
    let mut rows = Vec::new();
    for (index, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || {
            Error::at(
                path,
                format!("line {}", index + 1),
                format!("expected {columns} numbers separated by commas, found {line:?}"),
            )
        };
        let mut row = vec![0.0; columns];
        let mut cells = line.split(',');
        for value in row.iter_mut() {
            *value = cells
                .next()
                .and_then(|c| c.trim().parse().ok())
                .ok_or_else(bad)?;
        }
        if cells.next().is_some() {
            return Err(bad());
        }
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &["xy", "wh", "obj", "cls"];

    fn terms(v: f32) -> Losses {
        Losses::new(NAMES, &[v, 2.0 * v, 0.1 + v, v / 3.0])
    }

    #[test]
    fn read_keeps_the_rows_up_to_the_resumed_iteration_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut curves = Curves::new(NAMES);
        for i in 1..=6 {
            curves.push_loss(i, &terms(1.0 / i as f32));
        }
        curves.push_map(3, 0.25);
        curves.push_map(6, 0.5);
        curves.write(dir.path()).unwrap();
        assert!(dir.path().join("loss.svg").exists());

        let resumed = Curves::read(dir.path(), NAMES, 3).unwrap();
        assert_eq!(resumed.loss, curves.loss[..3]);
        assert_eq!(resumed.map, curves.map[..1]);
        assert_eq!(resumed.best_map(), Some((3, 0.25)));
        // Nothing written yet: a fresh run's directory.
        let empty = tempfile::tempdir().unwrap();
        let none = Curves::read(empty.path(), NAMES, 3).unwrap();
        assert!(none.loss.is_empty() && none.map.is_empty());
    }

    #[test]
    fn the_best_map_is_the_first_of_the_highest() {
        let mut curves = Curves::new(NAMES);
        assert_eq!(curves.best_map(), None);
        for (iteration, map) in [(2, 0.3), (4, 0.7), (6, 0.5), (8, 0.7)] {
            curves.push_map(iteration, map);
        }
        assert_eq!(curves.best_map(), Some((4, 0.7)));
        // The starting model's row is no candidate: it has no best_model.
        curves.push_map(0, 0.9);
        assert_eq!(curves.best_map(), Some((4, 0.7)));
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.csv");
        std::fs::write(
            &path,
            "iteration,loss,loss_xy,loss_wh,loss_obj,loss_cls\n1,2,3,4,5,6\n2,2,x,4,5,6\n",
        )
        .unwrap();
        let err = Curves::read(dir.path(), NAMES, 10).unwrap_err().to_string();
        assert!(err.contains("loss.csv") && err.contains("line 3"), "{err}");
        std::fs::write(&path, "iter,loss\n").unwrap();
        let err = Curves::read(dir.path(), NAMES, 10).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("header"), "{err}");
    }
}
