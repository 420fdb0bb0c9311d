//! Waiting with a deadline.
//!
//! Every wait in the crate goes through [`poll`]: it names what it waits for, polls at an
//! interval, logs progress at most every [`PROGRESS_EVERY`], and fails with
//! [`ErrorKind::Timeout`] naming the object and the last state seen when the deadline passes.
//! A check that returns an error ends the wait at once (terminal states such as a volume in
//! `error` must be reported, not waited on).

use std::time::{Duration, Instant};

use crate::error::{fail, ErrorKind};

/// How often a long wait says it is still waiting.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Outcome of one check.
pub enum Poll<T> {
    /// Done.
    Ready(T),
    /// Not yet; the string describes the state seen (for progress and the timeout message).
    Pending(String),
}

/// A wait's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    /// Give up after this long.
    pub timeout: Duration,
    /// Sleep between checks.
    pub interval: Duration,
}

impl Wait {
    /// A wait of `timeout` checking every `interval`.
    pub fn new(timeout: Duration, interval: Duration) -> Self {
        Wait { timeout, interval }
    }
}

/// Polls `check` until it is ready, fails, or the deadline passes.
pub fn poll<T>(
    what: &str,
    wait: Wait,
    mut check: impl FnMut() -> anyhow::Result<Poll<T>>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    let deadline = start + wait.timeout;
    let mut last_report = start;
    loop {
        let seen = match check()? {
            Poll::Ready(v) => {
                let took = start.elapsed();
                if took > Duration::from_secs(1) {
                    tracing::info!("{what}: done after {:.1}s", took.as_secs_f64());
                }
                return Ok(v);
            }
            Poll::Pending(seen) => seen,
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(fail(
                ErrorKind::Timeout,
                format!(
                    "timed out after {}s waiting for {what} (last seen: {seen})",
                    wait.timeout.as_secs()
                ),
            ));
        }
        if now.duration_since(last_report) >= PROGRESS_EVERY {
            tracing::info!(
                "still waiting for {what} ({:.0}s, {seen})",
                now.duration_since(start).as_secs_f64()
            );
            last_report = now;
        }
        std::thread::sleep(wait.interval.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit_code;

    #[test]
    fn ready_after_some_polls() {
        let mut n = 0;
        let v = poll(
            "thing",
            Wait::new(Duration::from_secs(5), Duration::from_millis(1)),
            || {
                n += 1;
                Ok(if n == 3 {
                    Poll::Ready(n)
                } else {
                    Poll::Pending(format!("n={n}"))
                })
            },
        )
        .unwrap();
        assert_eq!(v, 3);
    }

    #[test]
    fn deadline_names_what_and_last_state() {
        let e = poll::<()>(
            "volume vol-1 to be available",
            Wait::new(Duration::from_millis(30), Duration::from_millis(5)),
            || Ok(Poll::Pending("creating".into())),
        )
        .unwrap_err();
        assert_eq!(exit_code(&e), 5);
        let m = e.to_string();
        assert!(m.contains("vol-1") && m.contains("creating"), "{m}");
    }

    #[test]
    fn check_error_ends_wait() {
        let e = poll::<()>(
            "x",
            Wait::new(Duration::from_secs(10), Duration::from_millis(1)),
            || anyhow::bail!("volume is in state error"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("state error"));
    }
}
