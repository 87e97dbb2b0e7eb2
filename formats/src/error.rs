//! One error type for every reader and writer: it always names the file and,
//! where known, the place inside it (a variable name, a byte offset, a JSON
//! path, an XML element, a line number), so a user can find the bad input.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Error {
    /// The file (or directory) being read or written.
    pub file: PathBuf,
    /// Where in the file: "variable conv1_weights", "byte 1234", "line 7", ...
    pub place: Option<String>,
    pub message: String,
    pub source: Option<std::io::Error>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(file: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error {
            file: file.as_ref().to_path_buf(),
            place: None,
            message: message.into(),
            source: None,
        }
    }

    pub fn at(
        file: impl AsRef<Path>,
        place: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error {
            place: Some(place.into()),
            ..Error::new(file, message)
        }
    }

    pub fn io(file: impl AsRef<Path>, err: std::io::Error) -> Self {
        Error {
            message: err.to_string(),
            source: Some(err),
            ..Error::new(file, "")
        }
    }

    /// Adds (or prefixes) the place, keeping an inner place as the more precise part.
    pub fn within(mut self, place: impl Into<String>) -> Self {
        let outer = place.into();
        self.place = Some(match self.place.take() {
            Some(inner) => format!("{outer}, {inner}"),
            None => outer,
        });
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(place) = &self.place {
            write!(f, " ({place})")?;
        }
        write!(f, ": {}", self.message)
    }
}

// No `source()`: the message already holds the I/O error's text, and error
// reporters that print the chain (anyhow's `{:#}`) would repeat it.
impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_file_and_place() {
        let e = Error::at(
            "model/conv1_weights",
            "byte 12",
            "desc size 9999 exceeds file",
        )
        .within("archive a.tar");
        assert_eq!(
            e.to_string(),
            "model/conv1_weights (archive a.tar, byte 12): desc size 9999 exceeds file"
        );
    }
}
