//! The host's identity from the Outscale metadata server (`identity`).
//!
//! Unlike bsud (no timeout, no retry, any answer accepted), every request has a short timeout,
//! transport errors and 5xx/429 answers are retried until the deadline, a 4xx answer ends the
//! wait at once (not an Outscale VM, or a wrong URL), and the values are checked before use.

use std::time::Duration;

use crate::error::{fail, ErrorKind};
use crate::wait::{poll, Poll, Wait};

use super::proto::Identity;

/// One request's own timeout (the metadata server is local: it answers fast or not at all).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between attempts.
const RETRY_EVERY: Duration = Duration::from_millis(300);

/// Reads VmId and subregion from `base_url` within `timeout`.
pub fn identity(base_url: &str, timeout: Duration) -> anyhow::Result<Identity> {
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .connect_timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the metadata HTTP client: {e}"))?;
    let wait = Wait::new(timeout, RETRY_EVERY);
    let get = |path: &str| -> anyhow::Result<String> {
        let url = format!("{}/latest/meta-data/{path}", base_url.trim_end_matches('/'));
        let started = std::time::Instant::now();
        poll(&format!("metadata {url}"), wait, || {
            let left = timeout.saturating_sub(started.elapsed());
            let req = client
                .get(&url)
                .timeout(REQUEST_TIMEOUT.min(left.max(Duration::from_millis(50))));
            match req.send() {
                Err(e) => Ok(Poll::Pending(format!("{e}"))),
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        match resp.text() {
                            Ok(t) => Ok(Poll::Ready(t.trim().to_string())),
                            Err(e) => Ok(Poll::Pending(format!("reading the answer: {e}"))),
                        }
                    } else if status.is_server_error() || status.as_u16() == 429 {
                        Ok(Poll::Pending(format!("HTTP {status}")))
                    } else {
                        Err(fail(
                            ErrorKind::Failed,
                            format!("metadata server answered HTTP {status} for {url}: is this an Outscale VM (BSUD_METADATA_URL)?"),
                        ))
                    }
                }
            }
        })
    };
    let vm_id = get("instance-id")?;
    let subregion = get("placement/availability-zone")?;
    let ok_vm = !vm_id.is_empty()
        && vm_id.len() <= 64
        && vm_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !ok_vm {
        return Err(fail(
            ErrorKind::Failed,
            format!("metadata server gave an invalid instance id {vm_id:?}"),
        ));
    }
    let region = region_of(&subregion).ok_or_else(|| {
        fail(
            ErrorKind::Failed,
            format!("metadata server gave an invalid availability zone {subregion:?}"),
        )
    })?;
    Ok(Identity {
        vm_id,
        region,
        subregion,
        version: crate::VERSION.to_string(),
    })
}

/// `eu-west-2a` → `eu-west-2`: the subregion is the region plus one letter.
pub fn region_of(subregion: &str) -> Option<String> {
    let valid = subregion.len() >= 3
        && subregion.len() <= 64
        && subregion
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && subregion.ends_with(|c: char| c.is_ascii_lowercase());
    let region = &subregion[..subregion.len().saturating_sub(1)];
    (valid && !region.ends_with('-')).then(|| region.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit_code;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A local HTTP server answering `route(path, nth request)` → (status, body); None: never
    /// answer (hold the connection).
    fn server(
        route: impl Fn(&str, usize) -> Option<(u16, String)> + Send + 'static,
    ) -> (String, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in l.incoming() {
                let Ok(mut s) = conn else { break };
                let n = c.fetch_add(1, Ordering::SeqCst);
                let mut line = String::new();
                let mut r = BufReader::new(s.try_clone().unwrap());
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                match route(&path, n) {
                    Some((code, body)) => {
                        let _ = write!(
                            s,
                            "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    None => held.push(s),
                }
            }
        });
        (url, count)
    }

    fn outscale(path: &str) -> Option<(u16, String)> {
        match path {
            "/latest/meta-data/instance-id" => Some((200, "i-0123abcd\n".into())),
            "/latest/meta-data/placement/availability-zone" => Some((200, "eu-west-2a".into())),
            _ => Some((404, String::new())),
        }
    }

    #[test]
    fn reads_identity_after_transient_errors() {
        let (url, count) = server(|p, n| {
            if n < 2 {
                Some((503, "busy".into()))
            } else {
                outscale(p)
            }
        });
        let id = identity(&url, Duration::from_secs(10)).unwrap();
        assert_eq!(
            (id.vm_id.as_str(), id.subregion.as_str(), id.region.as_str()),
            ("i-0123abcd", "eu-west-2a", "eu-west-2")
        );
        assert_eq!(id.version, crate::VERSION);
        assert!(count.load(Ordering::SeqCst) >= 4);
    }

    #[test]
    fn not_found_ends_at_once() {
        let (url, _) = server(|_, _| Some((404, String::new())));
        let t0 = std::time::Instant::now();
        let e = identity(&url, Duration::from_secs(30)).unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(exit_code(&e), 1);
        assert!(e.to_string().contains("404"), "{e}");
    }

    #[test]
    fn silent_server_times_out_within_the_deadline() {
        let (url, _) = server(|_, _| None);
        let t0 = std::time::Instant::now();
        let e = identity(&url, Duration::from_secs(2)).unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
        assert_eq!(exit_code(&e), 5);
        assert!(e.to_string().contains("instance-id"), "{e}");
    }

    #[test]
    fn garbage_values_are_refused() {
        let (url, _) = server(|p, _| match p {
            "/latest/meta-data/instance-id" => Some((200, "i-1; rm".into())),
            _ => outscale(p),
        });
        let e = identity(&url, Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("instance id"), "{e}");
    }

    #[test]
    fn regions() {
        assert_eq!(region_of("eu-west-2a").as_deref(), Some("eu-west-2"));
        assert_eq!(
            region_of("cloudgouv-eu-west-1b").as_deref(),
            Some("cloudgouv-eu-west-1")
        );
        for bad in ["", "a", "eu-west-2", "EU-WEST-2A", "eu-west-2a\n", "x-a"] {
            assert_eq!(region_of(bad), None, "{bad}");
        }
    }
}
