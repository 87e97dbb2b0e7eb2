//! Draws the download of pretrained weights from the events the formats
//! crate reports: a progress bar on a terminal, otherwise a plain line every
//! 10%, and a line for each failed try.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use pulsefocus_formats::weights_source::{Download, DOWNLOAD_TRIES};

#[derive(Default)]
pub struct DownloadProgress {
    bar: Option<ProgressBar>,
    total: Option<u64>,
    next_line_percent: u64,
}

impl DownloadProgress {
    pub fn on_event(&mut self, event: Download) {
        match event {
            Download::Started { url, total } => {
                self.total = total;
                self.next_line_percent = 10;
                if std::io::stderr().is_terminal() {
                    let bar = match total {
                        Some(t) => ProgressBar::new(t),
                        None => ProgressBar::new_spinner(),
                    };
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                        )
                        .expect("valid template"),
                    );
                    bar.set_message(format!("downloading {url}"));
                    self.bar = Some(bar);
                } else {
                    let size = total.map_or("unknown size".to_string(), |t| {
                        format!("{:.1} MB", t as f64 / 1e6)
                    });
                    eprintln!("downloading {url} ({size})");
                }
            }
            Download::Received { done } => match (&self.bar, self.total) {
                (Some(bar), _) => bar.set_position(done),
                (None, Some(total)) if total > 0 => {
                    let percent = done * 100 / total;
                    if percent >= self.next_line_percent && percent < 100 {
                        eprintln!("  {percent}%");
                        self.next_line_percent = percent / 10 * 10 + 10;
                    }
                }
                _ => {}
            },
            Download::Finished { bytes } => match self.bar.take() {
                Some(bar) => bar.finish_and_clear(),
                None => eprintln!("  done: {:.1} MB", bytes as f64 / 1e6),
            },
            Download::Failed {
                url,
                attempt,
                error,
            } => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                eprintln!("download {url} failed (try {attempt} of {DOWNLOAD_TRIES}): {error}");
            }
        }
    }
}
