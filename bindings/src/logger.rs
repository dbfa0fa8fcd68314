//! `set_logger`: the core's tracing events, forwarded to the app (os_log, Logcat).
//!
//! Events pass the same filter every Mend program uses ([`mend_client::LOG_REDACTIONS`]: the
//! libraries that would log journal text or tokens at TRACE are capped), and carry only the
//! message and fields as the core logs them, which name records by id, never by content.
//! They run on the callback thread, like listeners.

use std::{
    fmt::Write as _,
    sync::{Arc, OnceLock, PoisonError, RwLock},
};

use tracing::{Event, Level, Subscriber, field::Field};
use tracing_subscriber::{Layer, Registry, filter::Targets, layer::Context, prelude::*, reload};

use crate::{
    callbacks::{ListenerError, post},
    error::{MendError, Result},
};

/// How much to forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum LogLevel {
    /// Failures.
    Error,
    /// Failures that were recovered from, and problems to show.
    Warn,
    /// What a sync round did.
    Info,
    /// More detail, for a developer.
    Debug,
    /// Everything (still without journal text).
    Trace,
}

impl LogLevel {
    fn directive(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }

    fn from_level(level: Level) -> Self {
        match level {
            Level::ERROR => Self::Error,
            Level::WARN => Self::Warn,
            Level::INFO => Self::Info,
            Level::DEBUG => Self::Debug,
            Level::TRACE => Self::Trace,
        }
    }
}

/// One log line.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct LogRecord {
    /// Its level.
    pub level: LogLevel,
    /// Where it comes from (`mend_client::sync`).
    pub target: String,
    /// The message, then its fields as `name=value`.
    pub message: String,
}

/// Receives the core's logs. Implemented by the app; runs on `mend-callbacks`.
#[uniffi::export(with_foreign)]
pub trait LogSink: Send + Sync {
    /// One line. What this throws is dropped (never logged again, which would loop).
    fn log(&self, record: LogRecord) -> std::result::Result<(), ListenerError>;
}

type Sink = Arc<dyn LogSink>;

static SINK: RwLock<Option<Sink>> = RwLock::new(None);
static FILTER: OnceLock<reload::Handle<Targets, Registry>> = OnceLock::new();

/// `Targets`, not `EnvFilter`: the same directives without a regex engine in the app's library.
fn filter(level: LogLevel) -> Result<Targets> {
    format!("{},{}", level.directive(), mend_client::LOG_REDACTIONS)
        .parse::<Targets>()
        .map_err(|e| MendError::Internal(format!("log filter: {e}")))
}

/// Forwards the core's logs at `level` and above to `sink`; `null` stops forwarding. May be
/// called again to change either. Fails with `internal` when the process already has another
/// global tracing subscriber.
#[uniffi::export]
pub fn set_logger(level: LogLevel, sink: Option<Arc<dyn LogSink>>) -> Result<()> {
    let new_filter = filter(level)?;
    match FILTER.get() {
        Some(handle) => handle
            .reload(new_filter)
            .map_err(|e| MendError::Internal(format!("log filter: {e}")))?,
        None => {
            let (layer, handle) = reload::Layer::new(new_filter);
            tracing_subscriber::registry()
                .with(layer)
                .with(Forward)
                .try_init()
                .map_err(|e| MendError::Internal(format!("cannot forward logs: {e}")))?;
            let _ = FILTER.set(handle);
        }
    }
    *SINK.write().unwrap_or_else(PoisonError::into_inner) = sink;
    Ok(())
}

/// The layer that queues each event for the sink.
struct Forward;

impl<S: Subscriber> Layer<S> for Forward {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some(sink) = SINK.read().unwrap_or_else(PoisonError::into_inner).clone() else {
            return;
        };
        let mut text = Text::default();
        event.record(&mut text);
        let record = LogRecord {
            level: LogLevel::from_level(*event.metadata().level()),
            target: event.metadata().target().to_owned(),
            message: text.0,
        };
        post(move || {
            // Not logged when it fails: that would call the failing sink again.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink.log(record)));
        });
    }
}

/// The message first, then `name=value` for every other field.
#[derive(Default)]
struct Text(String);

impl tracing::field::Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let rest = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}");
            if !rest.is_empty() {
                self.0.push(' ');
                self.0.push_str(&rest);
            }
        } else {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }
}

/// This library's version (`0.1.0`), for bug reports.
#[uniffi::export]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
