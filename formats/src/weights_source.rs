//! Where `pretrain_weights` / `weights` point: a local directory, a `.tar` /
//! `.tar.gz`, a `.pdparams`, a `.safetensors` file, an `http(s)://` URL or a
//! `ppdet://` path. URLs are downloaded once into a cache laid out as
//! PaddleDetection's (`~/.cache/paddle/weights`, the URL's last component with
//! `.zip`/`.tar`/`.gz` removed), so a cache PaddleDetection already filled is
//! reused and the other way round.
//!
//! As `ppdet/utils/checkpoint.py` does, a `.pdparams`/`.pdopt`/`.pdmodel`
//! suffix is stripped and the path must then be a directory, a file, or have
//! `<path>.pdparams` beside it.
//!
//! A download reports its progress through [`Download`] events to a callback
//! the caller supplies (the CLI draws a progress bar from them); nothing here
//! writes to the terminal.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use md5::{Digest, Md5};

use crate::error::{Error, Result};

/// PaddleDetection 2.x's short form for its own model bucket.
pub const PPDET_PREFIX: &str = "ppdet://";
pub const PPDET_URL: &str = "https://paddledet.bj.bcebos.com/";

/// Tries per download before giving up, as PaddleDetection.
pub const DOWNLOAD_TRIES: usize = 3;

/// Suffixes Paddle strips from a weights path.
const PADDLE_SUFFIXES: [&str; 3] = [".pdparams", ".pdopt", ".pdmodel"];

/// What a download reports as it goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Download<'a> {
    /// The server answered; `total` bytes are coming when it said how many.
    Started { url: &'a str, total: Option<u64> },
    /// `done` bytes received so far.
    Received { done: u64 },
    /// The whole body is on disk.
    Finished { bytes: u64 },
    /// Try `attempt` of [`DOWNLOAD_TRIES`] failed; another follows when
    /// `attempt` is below it.
    Failed {
        url: &'a str,
        attempt: usize,
        error: &'a str,
    },
}

/// `$HOME/.cache/paddle/weights`, PaddleDetection's weights cache.
pub fn default_cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    Path::new(&home).join(".cache/paddle/weights")
}

pub fn is_url(spec: &str) -> bool {
    spec.starts_with("http://") || spec.starts_with("https://") || spec.starts_with(PPDET_PREFIX)
}

/// The local path of a weights spec, downloading a URL into `cache_dir` first
/// (not at all when the cache already holds it); `on_download` hears how a
/// download goes.
pub fn resolve_weights(
    spec: &str,
    cache_dir: &Path,
    on_download: &mut dyn FnMut(Download),
) -> Result<PathBuf> {
    let local = if is_url(spec) {
        let url = match spec.strip_prefix(PPDET_PREFIX) {
            Some(rest) => format!("{PPDET_URL}{rest}"),
            None => spec.to_string(),
        };
        fetch_into_cache(&url, cache_dir, on_download)?
    } else {
        PathBuf::from(spec)
    };
    resolve_local(&local)
}

/// Paddle's rule for a local path (see the module comment).
pub fn resolve_local(path: &Path) -> Result<PathBuf> {
    let text = path.to_string_lossy();
    let stripped = PADDLE_SUFFIXES
        .iter()
        .find_map(|s| text.strip_suffix(s))
        .map(PathBuf::from)
        .unwrap_or_else(|| path.to_path_buf());
    let beside = PathBuf::from(format!("{}.pdparams", stripped.display()));
    if beside.is_file() {
        Ok(beside)
    } else if stripped.is_dir() || stripped.is_file() {
        Ok(stripped)
    } else {
        Err(Error::new(
            path,
            format!(
                "pretrained weights not found: no directory or file {} and no {}",
                stripped.display(),
                beside.display()
            ),
        ))
    }
}

/// PaddleDetection's cache name: the URL's last component with every `.zip`,
/// `.tar` and `.gz` removed (`yolov3_darknet.tar` -> `yolov3_darknet`).
pub fn cache_name(url: &str) -> String {
    let last = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .rsplit('/')
        .next()
        .unwrap_or(url);
    [".zip", ".tar", ".gz"]
        .iter()
        .fold(last.to_string(), |name, ext| name.replace(ext, ""))
}

fn is_archive(file_name: &str) -> bool {
    file_name.ends_with(".tar") || file_name.ends_with(".tar.gz") || file_name.ends_with(".tgz")
}

/// Downloads `url` into `cache_dir` unless already there; returns the cached
/// path (the unpacked folder for an archive).
pub fn fetch_into_cache(
    url: &str,
    cache_dir: &Path,
    on_download: &mut dyn FnMut(Download),
) -> Result<PathBuf> {
    let cached = cache_dir.join(cache_name(url));
    if cached.exists() {
        return Ok(cached);
    }
    fs::create_dir_all(cache_dir).map_err(|e| Error::io(cache_dir, e))?;
    let file_name = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::new(url, "URL has no file name"))?
        .to_string();
    if file_name.ends_with(".zip") {
        return Err(Error::new(
            url,
            "zip archives are not supported: give the .tar or a .pdparams",
        ));
    }
    let download = cache_dir.join(&file_name);
    download_with_retries(url, &download, on_download).map_err(|e| {
        // Without a network the cache is the way in: say where the file goes.
        let what = if is_archive(&file_name) {
            "the archive's unpacked folder"
        } else {
            "the file"
        };
        Error {
            message: format!(
                "{}; to work offline, set pretrain_weights to a local file or folder, \
                 or put {what} at {}",
                e.message,
                cached.display()
            ),
            ..e
        }
    })?;
    if is_archive(&file_name) {
        unpack_into(&download, cache_dir, &cached)?;
    }
    Ok(cached)
}

/// Downloads to `<dest>_tmp`, checks it, renames it to `dest`; up to
/// `DOWNLOAD_TRIES` attempts.
fn download_with_retries(
    url: &str,
    dest: &Path,
    on_download: &mut dyn FnMut(Download),
) -> Result<()> {
    let tmp = PathBuf::from(format!("{}_tmp", dest.display()));
    let mut last_error = String::new();
    for attempt in 1..=DOWNLOAD_TRIES {
        match download_once(url, &tmp, on_download) {
            Ok(()) => return fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e)),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                on_download(Download::Failed {
                    url,
                    attempt,
                    error: &e,
                });
                last_error = e;
            }
        }
    }
    Err(Error::new(
        url,
        format!("download failed after {DOWNLOAD_TRIES} tries: {last_error}"),
    ))
}

fn download_once(
    url: &str,
    tmp: &Path,
    on_download: &mut dyn FnMut(Download),
) -> std::result::Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| e.to_string())?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let expected_md5 = match header("content-md5") {
        Some(b64) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| format!("bad content-md5 header {b64:?}: {e}"))?,
        ),
        None => None,
    };
    let total: Option<u64> = header("content-length").and_then(|v| v.parse().ok());
    let mut body = response.into_body().into_reader();
    let mut file = fs::File::create(tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    on_download(Download::Started { url, total });
    let mut done = 0u64;
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = body.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        done += n as u64;
        on_download(Download::Received { done });
    }
    on_download(Download::Finished { bytes: done });
    file.sync_all()
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    if let Some(expected) = expected_md5 {
        let got = md5.finalize();
        if got.as_slice() != expected.as_slice() {
            return Err(format!(
                "MD5 mismatch: got {}, the server says {}",
                hex(got.as_slice()),
                hex(&expected)
            ));
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Unpacks a `.tar` / `.tar.gz` into a temporary folder in `cache_dir` and
/// deletes the archive. When it holds a folder named `cached` (the model-zoo
/// layout), each top-level entry moves into `cache_dir` (replacing an older
/// one), as PaddleDetection's `_decompress`. Otherwise its only folder, or
/// its files at the root, become `cached`, so that nothing spills into the
/// cache itself.
fn unpack_into(archive: &Path, cache_dir: &Path, cached: &Path) -> Result<()> {
    let tmp = cache_dir.join(format!(
        "{}_unpack_tmp",
        archive.file_name().unwrap_or_default().to_string_lossy()
    ));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = (|| {
        let file = fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
        let mut head = [0u8; 2];
        let gz = fs::File::open(archive)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok()
            && head == [0x1f, 0x8b];
        let reader: Box<dyn Read> = if gz {
            Box::new(flate2::read::GzDecoder::new(file))
        } else {
            Box::new(file)
        };
        let mut tar = tar::Archive::new(reader);
        let entries = tar.entries().map_err(|e| Error::io(archive, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| Error::io(archive, e))?;
            let name = entry
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                return Err(Error::at(
                    archive,
                    format!("member {name}"),
                    "links are not allowed in a checkpoint archive",
                ));
            }
            // `unpack_in` refuses entries that would land outside `tmp`.
            let inside = entry
                .unpack_in(&tmp)
                .map_err(|e| Error::at(archive, format!("member {name}"), e.to_string()))?;
            if !inside {
                return Err(Error::at(
                    archive,
                    format!("member {name}"),
                    "path leaves the archive's folder",
                ));
            }
        }
        fs::remove_file(archive).map_err(|e| Error::io(archive, e))?;
        let mut top = Vec::new();
        for entry in fs::read_dir(&tmp).map_err(|e| Error::io(&tmp, e))? {
            top.push(entry.map_err(|e| Error::io(&tmp, e))?.path());
        }
        let named = tmp.join(cached.file_name().unwrap_or_default());
        let moves: Vec<(PathBuf, PathBuf)> = if named.is_dir() {
            top.into_iter()
                .map(|src| {
                    let dst = cache_dir.join(src.file_name().unwrap_or_default());
                    (src, dst)
                })
                .collect()
        } else if top.len() == 1 && top[0].is_dir() {
            vec![(top.remove(0), cached.to_path_buf())]
        } else {
            vec![(tmp.clone(), cached.to_path_buf())]
        };
        for (src, dst) in moves {
            if dst.is_dir() {
                fs::remove_dir_all(&dst).map_err(|e| Error::io(&dst, e))?;
            } else if dst.exists() {
                fs::remove_file(&dst).map_err(|e| Error::io(&dst, e))?;
            }
            fs::rename(&src, &dst).map_err(|e| Error::io(&dst, e))?;
        }
        Ok(())
    })();
    let _ = fs::remove_dir_all(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{load_checkpoint, save_checkpoint, Checkpoint, Format, RawTensor};
    use std::io::BufRead;
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    fn sample_checkpoint() -> Checkpoint {
        let mut c = Checkpoint::new();
        c.insert(
            "conv1_weights",
            RawTensor::from_f32(vec![2, 1], &[1.0, 2.0]),
        );
        c.insert(
            "yolo_output.0.conv.bias",
            RawTensor::from_f32(vec![3], &[3.0, 4.0, 5.0]),
        );
        c
    }

    /// What the test server answers to the n-th request.
    #[derive(Clone)]
    enum Reply {
        /// 200 with this body, and a content-md5 header when given.
        Body(Vec<u8>, Option<String>),
        Status(u16),
    }

    /// Serves `replies` in order on 127.0.0.1, one connection each, then stops.
    /// Returns the base URL and the request paths seen.
    fn serve(replies: Vec<Reply>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for reply in replies {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut reader = std::io::BufReader::new(stream);
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                log.lock()
                    .unwrap()
                    .push(request_line.split(' ').nth(1).unwrap_or("").to_string());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                }
                let mut stream = reader.into_inner();
                let response = match reply {
                    Reply::Body(body, md5) => {
                        let mut head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n",
                            body.len()
                        );
                        if let Some(m) = md5 {
                            head += &format!("Content-MD5: {m}\r\n");
                        }
                        let mut bytes = (head + "\r\n").into_bytes();
                        bytes.extend(body);
                        bytes
                    }
                    Reply::Status(code) => format!(
                        "HTTP/1.1 {code} Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .into_bytes(),
                };
                let _ = stream.write_all(&response);
            }
        });
        (base, seen)
    }

    /// `resolve_weights` with the download's events ignored.
    fn resolve(spec: &str, cache: &Path) -> Result<PathBuf> {
        resolve_weights(spec, cache, &mut |_| {})
    }

    fn md5_b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes))
    }

    #[test]
    fn cache_names_follow_paddle() {
        assert_eq!(
            cache_name("https://paddlemodels.bj.bcebos.com/object_detection/yolov3_darknet.tar"),
            "yolov3_darknet"
        );
        assert_eq!(cache_name("https://x/y/model.tar.gz"), "model");
        assert_eq!(cache_name("https://x/y/m.pdparams"), "m.pdparams");
        assert_eq!(cache_name("https://x/y/m.pdparams?sig=1"), "m.pdparams");
    }

    #[test]
    fn local_paths_follow_paddle() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir(d.join("model_dir")).unwrap();
        fs::write(d.join("m.pdparams"), b"x").unwrap();
        fs::write(d.join("w.safetensors"), b"x").unwrap();
        let s = |p: &Path| p.display().to_string();
        assert_eq!(
            resolve(&s(&d.join("model_dir")), d).unwrap(),
            d.join("model_dir")
        );
        // Suffix stripped, then `<path>.pdparams` found beside.
        assert_eq!(
            resolve(&s(&d.join("m.pdparams")), d).unwrap(),
            d.join("m.pdparams")
        );
        assert_eq!(resolve(&s(&d.join("m")), d).unwrap(), d.join("m.pdparams"));
        assert_eq!(
            resolve(&s(&d.join("m.pdopt")), d).unwrap(),
            d.join("m.pdparams")
        );
        assert_eq!(
            resolve(&s(&d.join("w.safetensors")), d).unwrap(),
            d.join("w.safetensors")
        );
        let err = resolve(&s(&d.join("nope.pdparams")), d).unwrap_err();
        assert!(
            err.to_string().contains("pretrained weights not found"),
            "{err}"
        );
        assert!(err.to_string().contains("nope.pdparams"), "{err}");
    }

    #[test]
    fn downloads_unpacks_and_reuses_the_cache() {
        let work = tempfile::tempdir().unwrap();
        let archive = work.path().join("yolov3_tiny.tar.gz");
        save_checkpoint(&sample_checkpoint(), &archive, Format::Tar).unwrap();
        let bytes = fs::read(&archive).unwrap();
        // First answer fails: the retry fetches it.
        let (base, seen) = serve(vec![
            Reply::Status(503),
            Reply::Body(bytes.clone(), Some(md5_b64(&bytes))),
        ]);
        let cache = work.path().join("cache");
        let url = format!("{base}/object_detection/yolov3_tiny.tar.gz");
        let mut events = Vec::new();
        let path = resolve_weights(&url, &cache, &mut |e| {
            events.push(match e {
                Download::Failed { attempt, .. } => format!("failed {attempt}"),
                Download::Started { total, .. } => format!("started {total:?}"),
                Download::Received { done } => format!("received {done}"),
                Download::Finished { bytes } => format!("finished {bytes}"),
            })
        })
        .unwrap();
        assert_eq!(path, cache.join("yolov3_tiny"));
        // The 503 is reported, then the second try from start to finish.
        let n = bytes.len();
        assert_eq!(
            events[..2],
            ["failed 1".to_string(), format!("started Some({n})")]
        );
        assert_eq!(
            events[events.len() - 2..],
            [format!("received {n}"), format!("finished {n}")]
        );
        assert_eq!(load_checkpoint(&path).unwrap(), sample_checkpoint());
        assert_eq!(seen.lock().unwrap().len(), 2);
        // Nothing but the unpacked folder is left in the cache.
        let names: Vec<_> = fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["yolov3_tiny"]);
        // The server is gone now: the cache answers.
        assert_eq!(resolve(&url, &cache).unwrap(), path);
    }

    /// A `.tar` with the tensor files at its root (no top-level folder) used
    /// to spill them into the cache itself and then fail.
    #[test]
    fn archive_with_files_at_the_root_becomes_the_cached_folder() {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("d");
        save_checkpoint(&sample_checkpoint(), &dir, Format::Dir).unwrap();
        let archive = work.path().join("root_files.tar");
        {
            let mut builder = tar::Builder::new(fs::File::create(&archive).unwrap());
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                builder
                    .append_path_with_name(&path, path.file_name().unwrap())
                    .unwrap();
            }
            builder.finish().unwrap();
        }
        let (base, _) = serve(vec![Reply::Body(fs::read(&archive).unwrap(), None)]);
        let cache = work.path().join("cache");
        let path = resolve(&format!("{base}/root_files.tar"), &cache).unwrap();
        assert_eq!(path, cache.join("root_files"));
        assert_eq!(load_checkpoint(&path).unwrap(), sample_checkpoint());
        let names: Vec<_> = fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["root_files"]);
    }

    #[test]
    fn archive_with_a_link_is_refused() {
        let work = tempfile::tempdir().unwrap();
        let archive = work.path().join("linked.tar");
        {
            let mut builder = tar::Builder::new(fs::File::create(&archive).unwrap());
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder
                .append_link(&mut header, "linked/w", "/etc/passwd")
                .unwrap();
            builder.finish().unwrap();
        }
        let cache = work.path().join("cache");
        fs::create_dir(&cache).unwrap();
        let err = unpack_into(&archive, &cache, &cache.join("linked")).unwrap_err();
        assert!(err.to_string().contains("links are not allowed"), "{err}");
        assert!(!cache.join("linked").exists());
    }

    #[test]
    fn downloaded_pdparams_is_kept_as_a_file() {
        let (base, _) = serve(vec![Reply::Body(b"pickle".to_vec(), None)]);
        let cache = tempfile::tempdir().unwrap();
        let path = resolve(&format!("{base}/a/model.pdparams"), cache.path()).unwrap();
        assert_eq!(path, cache.path().join("model.pdparams"));
        assert_eq!(fs::read(path).unwrap(), b"pickle");
    }

    #[test]
    fn md5_mismatch_and_dead_server_fail_after_three_tries() {
        let body = b"payload".to_vec();
        let wrong = md5_b64(b"other");
        let replies = vec![Reply::Body(body, Some(wrong)); 3];
        let (base, seen) = serve(replies);
        let cache = tempfile::tempdir().unwrap();
        let err = resolve(&format!("{base}/m.pdparams"), cache.path()).unwrap_err();
        assert!(err.to_string().contains("after 3 tries"), "{err}");
        // The way to work offline: where the file would be found.
        let cached = cache.path().join("m.pdparams");
        let offline = format!("put the file at {}", cached.display());
        assert!(err.to_string().contains(&offline), "{err}");
        assert!(err.to_string().contains("local file or folder"), "{err}");
        assert!(err.to_string().contains("MD5 mismatch"), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 3);
        assert_eq!(
            fs::read_dir(cache.path()).unwrap().count(),
            0,
            "no partial file left"
        );

        // A port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = resolve(&format!("http://127.0.0.1:{port}/x.tar"), cache.path()).unwrap_err();
        assert!(err.to_string().contains("download failed"), "{err}");
        let offline = format!(
            "the archive's unpacked folder at {}",
            cache.path().join("x").display()
        );
        assert!(err.to_string().contains(&offline), "{err}");
    }

    #[test]
    fn ppdet_scheme_maps_to_the_bucket_and_hits_the_cache() {
        let cache = tempfile::tempdir().unwrap();
        fs::write(
            cache.path().join("yolov3_darknet53_270e_coco.pdparams"),
            b"x",
        )
        .unwrap();
        // The cache already has it: no network needed.
        let path = resolve(
            "ppdet://models/yolov3_darknet53_270e_coco.pdparams",
            cache.path(),
        );
        assert_eq!(
            path.unwrap(),
            cache.path().join("yolov3_darknet53_270e_coco.pdparams")
        );
    }

    #[test]
    fn archive_escaping_its_folder_is_refused() {
        let work = tempfile::tempdir().unwrap();
        let archive = work.path().join("evil.tar");
        {
            let mut builder = tar::Builder::new(fs::File::create(&archive).unwrap());
            let mut header = tar::Header::new_gnu();
            let data = b"x";
            header.set_size(1);
            header.set_mode(0o644);
            // Bypass the builder's own path check to write a hostile name.
            header.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
            header.set_cksum();
            builder.append(&header, &data[..]).unwrap();
            builder.finish().unwrap();
        }
        let cache = work.path().join("cache");
        fs::create_dir(&cache).unwrap();
        let err = unpack_into(&archive, &cache, &cache.join("evil")).unwrap_err();
        assert!(err.to_string().contains("../escape"), "{err}");
        assert!(!work.path().join("escape").exists());
    }
}
