//! Where an image comes from (`IMAGE/PATH`): a file on the frontend, or an http(s) URL.
//!
//! Invariants:
//! - A frontend path is resolved (`..` and symlinks, inside `frontend_root`) before the
//!   datastore's `RESTRICTED_DIRS`/`SAFE_DIRS` are applied to it, so no spelling of a path
//!   reaches a restricted file; the resolved file is what is read, and only a regular file is.
//! - Nothing is ever passed to a shell: files are opened, URLs fetched in-process (redirects
//!   followed, TLS verified against the system roots, connect and read timeouts).
//! - URLs are logged without their user info or query (signed URLs carry secrets there).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::content::{self, Compression};
use crate::error::{fail, ErrorKind};
use crate::one::message::Datastore;

/// Longest wait for a connection to an image server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest silence of an image server while a request or a body read is pending.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Redirects followed at most.
const MAX_REDIRECTS: usize = 10;

/// Where the image bytes are.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A frontend file.
    File {
        /// The path as OpenNebula gave it (for messages).
        given: String,
        /// The resolved file (frontend root applied, no symlink left).
        real: PathBuf,
    },
    /// An http(s) URL.
    Http {
        /// The URL.
        url: reqwest::Url,
    },
}

/// An origin opened for reading from its start.
pub struct Opened {
    /// The bytes.
    pub reader: Box<dyn Read + Send>,
    /// How many there are, when the origin says.
    pub len: Option<u64>,
}

/// The first bytes of an origin, read without reading it all.
#[derive(Debug, Clone)]
pub struct Head {
    /// Up to the number asked.
    pub bytes: Vec<u8>,
    /// The origin's length, when known.
    pub len: Option<u64>,
}

/// Lexically normalised absolute path (`.` and `..` folded, never above `/`).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// `logical` (absolute, as OpenNebula names it) resolved on disk under `root`: symlinks
/// followed, the result given back both as the real path and as the logical path it is.
/// Fails when the file does not exist or resolves outside `root`.
fn resolve_under(root: &Path, logical: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let root = root
        .canonicalize()
        .with_context(|| format!("frontend root {}", root.display()))?;
    let joined = root.join(logical.strip_prefix("/").unwrap_or(logical));
    let real = joined.canonicalize().map_err(|e| {
        fail(
            ErrorKind::Failed,
            format!("cannot read {}: {e}", logical.display()),
        )
    })?;
    let inside = real.strip_prefix(&root).map_err(|_| {
        fail(
            ErrorKind::Refused,
            format!(
                "{} resolves outside the frontend's file system",
                logical.display()
            ),
        )
    })?;
    Ok((real.clone(), Path::new("/").join(inside)))
}

/// A directory list of the datastore template, each resolved like a path (when it exists
/// under `root`) or normalised.
fn dir_list(ds: &Datastore, key: &str, root: &Path) -> Vec<PathBuf> {
    ds.template
        .get(key)
        .unwrap_or_default()
        .split_whitespace()
        .map(|d| {
            let n = normalize(Path::new(d));
            resolve_under(root, &n).map(|(_, l)| l).unwrap_or(n)
        })
        .collect()
}

impl Origin {
    /// Parses and checks `IMAGE/PATH` for datastore `ds`, frontend paths living under `root`.
    pub fn resolve(path: &str, ds: &Datastore, root: &Path) -> anyhow::Result<Origin> {
        let p = path.trim();
        let lower = p.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let url = reqwest::Url::parse(p).map_err(|e| {
                fail(
                    ErrorKind::BadInput,
                    format!("PATH {p:?} is not a valid URL: {e}"),
                )
            })?;
            return Ok(Origin::Http { url });
        }
        if let Some((scheme, _)) = p.split_once("://") {
            if !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
            {
                return Err(fail(
                    ErrorKind::NotImplemented,
                    format!(
                        "PATH scheme {scheme}:// is not supported by bsud (frontend files and http(s) URLs)"
                    ),
                ));
            }
        }
        if !p.starts_with('/') {
            return Err(fail(
                ErrorKind::BadInput,
                format!("PATH {p:?} is neither an absolute frontend path nor an http(s) URL"),
            ));
        }
        let (real, logical) = resolve_under(root, Path::new(p))?;
        let restricted = dir_list(ds, "RESTRICTED_DIRS", root);
        let safe = dir_list(ds, "SAFE_DIRS", root);
        if let Some(r) = restricted.iter().find(|r| logical.starts_with(r)) {
            if !safe.iter().any(|s| logical.starts_with(s)) {
                return Err(fail(
                    ErrorKind::Refused,
                    format!(
                        "PATH {p:?} ({}) is in the datastore's RESTRICTED_DIRS ({}) and not in its SAFE_DIRS",
                        logical.display(),
                        r.display()
                    ),
                ));
            }
        }
        let meta = std::fs::metadata(&real)
            .map_err(|e| fail(ErrorKind::Failed, format!("cannot read {p}: {e}")))?;
        if !meta.is_file() {
            return Err(fail(
                ErrorKind::BadInput,
                format!("PATH {p:?} is not a regular file"),
            ));
        }
        Ok(Origin::File {
            given: p.to_string(),
            real,
        })
    }

    /// For messages: the path, or the URL without user info and query.
    pub fn describe(&self) -> String {
        match self {
            Origin::File { given, .. } => given.clone(),
            Origin::Http { url } => {
                let mut u = url.clone();
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.set_query(None);
                u.set_fragment(None);
                u.to_string()
            }
        }
    }

    /// The local file, if the origin is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Origin::File { real, .. } => Some(real),
            Origin::Http { .. } => None,
        }
    }

    /// Opens the whole content.
    pub fn open(&self, http: &Http) -> anyhow::Result<Opened> {
        match self {
            Origin::File { real, given } => {
                let f = File::open(real)
                    .map_err(|e| fail(ErrorKind::Failed, format!("cannot read {given}: {e}")))?;
                let len = f.metadata()?.len();
                Ok(Opened {
                    reader: Box::new(f),
                    len: Some(len),
                })
            }
            Origin::Http { url } => {
                let resp = http.get(url, None, &self.describe())?;
                // A 200 to a plain GET: its Content-Length is the length.
                let len = resp.content_length();
                tracing::info!(
                    "GET {}: {}{}",
                    self.describe(),
                    resp.status(),
                    len.map(|l| format!(", {l} bytes")).unwrap_or_default()
                );
                Ok(Opened {
                    reader: Box::new(resp),
                    len,
                })
            }
        }
    }

    /// The first `n` bytes (fewer if the content is shorter) and the length, without reading
    /// the rest: a range request, or the start of a plain answer dropped after `n` bytes.
    pub fn head(&self, http: &Http, n: usize) -> anyhow::Result<Head> {
        match self {
            Origin::File { real, given } => {
                let f = File::open(real)
                    .map_err(|e| fail(ErrorKind::Failed, format!("cannot read {given}: {e}")))?;
                let len = f.metadata()?.len();
                let mut bytes = vec![0u8; n.min(len as usize)];
                f.read_exact_at(&mut bytes, 0)
                    .with_context(|| format!("reading {given}"))?;
                Ok(Head {
                    bytes,
                    len: Some(len),
                })
            }
            Origin::Http { url } => {
                let what = self.describe();
                let resp = http.get(url, Some(format!("bytes=0-{}", n.max(1) - 1)), &what)?;
                let ranged = resp.status() == reqwest::StatusCode::PARTIAL_CONTENT;
                let len = if ranged {
                    content_range_total(&resp)
                } else if resp.status() == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
                    Some(0)
                } else {
                    resp.content_length()
                };
                let mut bytes = Vec::with_capacity(n);
                resp.take(n as u64)
                    .read_to_end(&mut bytes)
                    .with_context(|| format!("reading {what}"))?;
                Ok(Head { bytes, len })
            }
        }
    }

    /// `len` bytes at `offset`, or `None` when the origin cannot seek (a server without
    /// byte ranges).
    pub fn read_at(&self, http: &Http, offset: u64, len: usize) -> anyhow::Result<Option<Vec<u8>>> {
        if len == 0 {
            return Ok(Some(Vec::new()));
        }
        match self {
            Origin::File { real, given } => {
                let f = File::open(real).with_context(|| format!("reading {given}"))?;
                let mut buf = vec![0u8; len];
                let mut got = 0;
                while got < len {
                    match f.read_at(&mut buf[got..], offset + got as u64) {
                        Ok(0) => break,
                        Ok(k) => got += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            return Err(anyhow::Error::new(e).context(format!("reading {given}")))
                        }
                    }
                }
                buf.truncate(got);
                Ok(Some(buf))
            }
            Origin::Http { url } => {
                let what = self.describe();
                let end = offset + len as u64 - 1;
                let resp = http.get(url, Some(format!("bytes={offset}-{end}")), &what)?;
                if resp.status() != reqwest::StatusCode::PARTIAL_CONTENT {
                    return Ok(None);
                }
                let mut buf = Vec::with_capacity(len);
                resp.take(len as u64)
                    .read_to_end(&mut buf)
                    .with_context(|| format!("reading {what}"))?;
                Ok(Some(buf))
            }
        }
    }
}

impl Origin {
    /// The decompressed size of a `c`-compressed origin of `len` bytes when its data states
    /// it exactly (xz index, zstd frame headers), read by random access; `None` otherwise.
    pub fn stated_size(
        &self,
        http: &Http,
        c: Compression,
        len: Option<u64>,
    ) -> anyhow::Result<Option<u64>> {
        let Some(len) = len else {
            return Ok(None);
        };
        let read_at = |off: u64, n: usize| self.read_at(http, off, n);
        match c {
            Compression::Xz => content::xz_size(&read_at, len),
            // Walking every frame costs one read per block: only on a local file.
            Compression::Zstd => content::zstd_size(&read_at, len, self.file().is_some()),
            Compression::Gzip | Compression::Bzip2 => Ok(None),
        }
    }
}

/// `Content-Range: bytes a-b/TOTAL` → TOTAL.
fn content_range_total(resp: &reqwest::blocking::Response) -> Option<u64> {
    resp.headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?
        .rsplit_once('/')?
        .1
        .trim()
        .parse()
        .ok()
}

/// The HTTP client of one action, built on first use (a local file needs none: building one
/// starts reqwest's runtime thread).
#[derive(Default)]
pub struct Http {
    client: std::sync::OnceLock<reqwest::blocking::Client>,
}

impl Http {
    /// A client: redirects followed (at most 10), TLS verified against the system roots,
    /// bounded connect and read waits, no transparent decompression (the bytes are hashed as
    /// served).
    pub fn new() -> Http {
        Http::default()
    }

    fn client(&self) -> anyhow::Result<&reqwest::blocking::Client> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let c = reqwest::blocking::Client::builder()
            .user_agent(concat!("one-bsud/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(READ_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .build()
            .context("building the HTTP client")?;
        Ok(self.client.get_or_init(|| c))
    }

    /// GET `url` (with a `Range` header when given); any status but 200/206/416 is an error
    /// naming the URL (`what`) and the status.
    pub fn get(
        &self,
        url: &reqwest::Url,
        range: Option<String>,
        what: &str,
    ) -> anyhow::Result<reqwest::blocking::Response> {
        let mut req = self.client()?.get(url.clone());
        if let Some(r) = range {
            req = req.header(reqwest::header::RANGE, r);
        }
        let resp = req.send().map_err(|e| {
            // reqwest names the URL with its query: the caller names it without.
            let e = e.without_url();
            let kind = if e.is_timeout() {
                ErrorKind::Timeout
            } else {
                ErrorKind::Failed
            };
            fail(kind, format!("GET {what}: {}", error_chain(&e)))
        })?;
        let status = resp.status();
        if status.is_success() || status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
            if resp.url() != url {
                tracing::info!("GET {what}: redirected to {}", redacted(resp.url()));
            }
            Ok(resp)
        } else {
            Err(fail(
                ErrorKind::Failed,
                format!("GET {what}: HTTP {status}"),
            ))
        }
    }
}

fn redacted(u: &reqwest::Url) -> String {
    Origin::Http { url: u.clone() }.describe()
}

/// reqwest's error with its causes, on one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::one::template::Template;

    fn ds(restricted: &str, safe: &str) -> Datastore {
        let xml = format!(
            "<DATASTORE><ID>1</ID><TEMPLATE><RESTRICTED_DIRS>{restricted}</RESTRICTED_DIRS><SAFE_DIRS>{safe}</SAFE_DIRS></TEMPLATE></DATASTORE>"
        );
        Datastore::from_xml(&xml).unwrap()
    }

    #[test]
    fn restricted_and_safe_dirs_after_resolution() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("var/tmp/imgs")).unwrap();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("var/tmp/imgs/a.img"), b"x").unwrap();
        std::fs::write(r.join("etc/secret"), b"s").unwrap();
        std::os::unix::fs::symlink(r.join("etc/secret"), r.join("var/tmp/link")).unwrap();
        let d = ds("/", "/var/tmp");
        let code = |p: &str| match Origin::resolve(p, &d, r) {
            Ok(_) => 0,
            Err(e) => crate::error::exit_code(&e),
        };
        assert_eq!(code("/var/tmp/imgs/a.img"), 0);
        assert_eq!(code("/var/tmp/imgs/../imgs/./a.img"), 0);
        // Spelled inside the safe dir, resolved outside it.
        assert_eq!(code("/var/tmp/../../etc/secret"), 6);
        assert_eq!(code("/var/tmp/link"), 6);
        assert_eq!(code("/etc/secret"), 6);
        assert_eq!(code("/var/tmp/imgs"), 2);
        assert_eq!(code("/var/tmp/missing"), 1);
        assert_eq!(code("relative/a.img"), 2);
        assert_eq!(code("$(touch /tmp/x)"), 2);
        assert_eq!(code("s3://bucket/key"), 4);
        // Prefixes are whole components: /var/tmpx is not under /var/tmp.
        std::fs::create_dir_all(r.join("var/tmpx")).unwrap();
        std::fs::write(r.join("var/tmpx/b"), b"x").unwrap();
        assert_eq!(code("/var/tmpx/b"), 6);
        // Nothing restricted: everything readable goes.
        let open = ds("", "");
        assert!(Origin::resolve("/etc/secret", &open, r).is_ok());
        let _ = Template::default();
    }

    #[test]
    fn urls_are_described_without_secrets() {
        let d = ds("/", "/var/tmp");
        let o = Origin::resolve(
            "https://user:pw@h.example/a/b.qcow2?X-Sig=abc#f",
            &d,
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(o.describe(), "https://h.example/a/b.qcow2");
        assert!(Origin::resolve("http://[bad", &d, Path::new("/")).is_err());
    }
}
