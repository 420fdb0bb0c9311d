//! Progress lines in the log: bytes done of the total and the rate, every few seconds, so a
//! long copy shows it is alive in the VM log.

use std::time::{Duration, Instant};

/// How often a progress line is logged.
const EVERY: Duration = Duration::from_secs(5);

pub(crate) struct Progress {
    verb: &'static str,
    total: Option<u64>,
    start: Instant,
    next: Instant,
}

impl Progress {
    /// `verb`: what is being done ("sent", "received").
    pub(crate) fn new(verb: &'static str, total: Option<u64>) -> Progress {
        let start = Instant::now();
        Progress {
            verb,
            total,
            start,
            next: start + EVERY,
        }
    }

    /// The logical position reached; logs when the interval has passed.
    pub(crate) fn at(&mut self, done: u64) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + EVERY;
        tracing::info!("{}", self.line(done, now - self.start));
    }

    fn line(&self, done: u64, elapsed: Duration) -> String {
        let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
        match self.total {
            Some(total) if total > 0 => format!(
                "{} {} of {} ({}%), {}/s",
                self.verb,
                human(done),
                human(total),
                done.saturating_mul(100) / total,
                human(rate as u64)
            ),
            _ => format!("{} {}, {}/s", self.verb, human(done), human(rate as u64)),
        }
    }
}

/// Bytes in binary units with one decimal: `1.5 GiB`.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_how_far_and_how_fast() {
        let p = Progress::new("received", Some(10 << 30));
        assert_eq!(
            p.line(5 << 30, Duration::from_secs(10)),
            "received 5.0 GiB of 10.0 GiB (50%), 512.0 MiB/s"
        );
        let p = Progress::new("sent", None);
        assert_eq!(
            p.line(1000, Duration::from_secs(1)),
            "sent 1000 B, 1000 B/s"
        );
    }
}
