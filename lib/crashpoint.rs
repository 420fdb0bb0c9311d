//! Crash points: a testing hook that kills the process right after a named step, to prove that
//! the next run converges from every intermediate state.
//!
//! `BSUD_CRASH_AT=<step>` (read once from the process environment) makes [`reached`] abort the
//! process (SIGABRT, no cleanup, no unwinding: a crash) when that step completes. Without the
//! variable nothing happens. The steps are listed where [`reached`] is called (`drive::engine`);
//! `BSUD_CRASH_AT=list` prints each step name on stderr as it is reached, to discover them.

use std::sync::OnceLock;

fn target() -> &'static Option<String> {
    static T: OnceLock<Option<String>> = OnceLock::new();
    T.get_or_init(|| {
        std::env::var("BSUD_CRASH_AT")
            .ok()
            .filter(|s| !s.is_empty())
    })
}

/// Marks `step` as done; aborts when it is the configured crash point.
pub fn reached(step: &str) {
    match target().as_deref() {
        Some("list") => eprintln!("CRASHPOINT: {step}"),
        Some(t) if t == step => {
            eprintln!("CRASHPOINT: crashing after {step} (BSUD_CRASH_AT)");
            std::process::abort();
        }
        _ => {}
    }
}
