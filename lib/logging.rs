//! Logging: tracing events to stderr in the form oned understands, and to journald.
//!
//! stderr lines are `LEVEL: [<vm id> ]<context>: message` with LEVEL one of ERROR, WARN, INFO,
//! DEBUG. OpenNebula 7.x turns each such line into a log message (a leading number is the
//! object id, so TM actions put the VM id there and the line lands in that VM's log) and
//! removes it from the error text; the human error message is printed by the entry point as
//! the last, plain line. Datastore actions never start the text with a number (it would be
//! taken for an object id): it starts with the action name.
//!
//! journald gets the same events with structured fields (`ACTION`, `VM_ID`, `IMAGE_ID`,
//! `DATASTORE_ID`, `HOST`) when its socket exists; otherwise stderr alone is used, silently.
//! The fields are those of one process-wide span entered on the main thread by [`init`] and
//! filled in by [`set_context`] as ids become known, so `journalctl -t one-bsud VM_ID=42`
//! finds a VM's lines; events of helper threads (copy pumps) carry the message only.
//! Nothing secret is ever logged: credentials are typed [`crate::config::Secret`].

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// What the log lines are about.
#[derive(Debug, Clone, Default)]
pub struct LogContext {
    /// `cp`, `tm clone`, `host lv-create`…
    pub action: String,
    /// VM id (TM actions): routes lines to the VM log.
    pub vm_id: Option<i64>,
    /// Image id.
    pub image_id: Option<i64>,
    /// Datastore id.
    pub datastore_id: Option<i64>,
    /// Host concerned.
    pub host: Option<String>,
}

static CONTEXT: OnceLock<std::sync::Mutex<LogContext>> = OnceLock::new();

fn context() -> &'static std::sync::Mutex<LogContext> {
    CONTEXT.get_or_init(Default::default)
}

/// The span whose fields journald records with every main-thread event.
static ROOT_SPAN: OnceLock<tracing::Span> = OnceLock::new();

/// Updates the context once ids are known (after decoding the message).
pub fn set_context(f: impl FnOnce(&mut LogContext)) {
    if let Ok(mut c) = context().lock() {
        let before = c.clone();
        f(&mut c);
        if let Some(span) = ROOT_SPAN.get() {
            record_changes(span, Some(&before), &c);
        }
    }
}

/// Records on the journald span the fields of `now` that differ from `before` (all of them
/// without `before`): journald keeps every recorded value, so nothing is recorded twice.
fn record_changes(span: &tracing::Span, before: Option<&LogContext>, now: &LogContext) {
    if !now.action.is_empty() && before.is_none_or(|b| b.action != now.action) {
        span.record("action", now.action.as_str());
    }
    if let Some(v) = now
        .vm_id
        .filter(|_| before.is_none_or(|b| b.vm_id != now.vm_id))
    {
        span.record("vm_id", v);
    }
    if let Some(v) = now
        .image_id
        .filter(|_| before.is_none_or(|b| b.image_id != now.image_id))
    {
        span.record("image_id", v);
    }
    if let Some(v) = now
        .datastore_id
        .filter(|_| before.is_none_or(|b| b.datastore_id != now.datastore_id))
    {
        span.record("datastore_id", v);
    }
    if let Some(v) = now
        .host
        .as_ref()
        .filter(|_| before.is_none_or(|b| b.host != now.host))
    {
        span.record("host", v.as_str());
    }
}

/// Installs the subscriber: stderr at `level` (`RUST_LOG` overrides), plus journald when
/// `journald` and its socket exists. Safe to call more than once (later calls do nothing).
pub fn init(level: &str, journald: bool) {
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| {
            EnvFilter::try_new(format!(
                "{level},hyper=warn,reqwest=warn,axum=warn,fuser=warn"
            ))
        })
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = if journald && std::path::Path::new("/run/systemd/journal/socket").exists() {
        tracing_journald::layer().ok().map(|l| {
            // Unprefixed, so the context fields are ACTION, VM_ID… as documented.
            l.with_syslog_identifier("one-bsud".into())
                .with_field_prefix(None)
        })
    } else {
        None
    };
    let with_journal = journal.is_some();
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(StderrLayer)
        .with(journal.map(|j| j.with_filter(tracing_subscriber::filter::LevelFilter::INFO)))
        .try_init()
        .is_ok();
    if installed && with_journal {
        // At ERROR level so that no log level filters it out (a span prints nothing itself).
        let span = tracing::error_span!(
            "one_bsud",
            action = tracing::field::Empty,
            vm_id = tracing::field::Empty,
            image_id = tracing::field::Empty,
            datastore_id = tracing::field::Empty,
            host = tracing::field::Empty
        );
        // Entered for the life of the process: one process is one action.
        std::mem::forget(span.clone().entered());
        if let Ok(c) = context().lock() {
            record_changes(&span, None, &c);
        }
        let _ = ROOT_SPAN.set(span);
    }
}

/// The one-line form of an event for stderr.
pub fn format_line(level: &Level, ctx: &LogContext, message: &str) -> String {
    let lvl = match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        _ => "DEBUG",
    };
    let mut line = format!("{lvl}: ");
    if let Some(vm) = ctx.vm_id {
        let _ = write!(line, "{vm} ");
    }
    if !ctx.action.is_empty() {
        let _ = write!(line, "{}: ", ctx.action);
    }
    // One event, one line: oned reads stderr line by line.
    line.extend(
        message
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c }),
    );
    line
}

struct StderrLayer;

struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S> Layer<S> for StderrLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut v = MessageVisitor(String::new());
        event.record(&mut v);
        let ctx = context().lock().map(|c| c.clone()).unwrap_or_default();
        let line = format_line(event.metadata().level(), &ctx, &v.0);
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tm_lines_carry_the_vm_id_and_ds_lines_never_start_with_a_number() {
        let tm = LogContext {
            action: "clone".into(),
            vm_id: Some(42),
            ..Default::default()
        };
        assert_eq!(
            format_line(&Level::INFO, &tm, "copied\n1 GiB"),
            "INFO: 42 clone: copied 1 GiB"
        );
        let ds = LogContext {
            action: "cp".into(),
            ..Default::default()
        };
        assert_eq!(format_line(&Level::WARN, &ds, "100 MB"), "WARN: cp: 100 MB");
        assert_eq!(format_line(&Level::TRACE, &ds, "x"), "DEBUG: cp: x");
    }
}
