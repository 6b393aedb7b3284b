//! Logging setup and signals, shared by the three binaries' `main`.

use std::str::FromStr;

use tracing_subscriber::filter::LevelFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}, expected text or json")),
        }
    }
}

/// Libraries that log at warn level what any peer can repeat at will: rustls a malformed
/// ClientHello on a TLS relay port (through the `log` bridge), quinn-proto an illegal packet or
/// a handshake at the wrong encryption level. Our own log says once, at debug, that a handshake
/// failed; these are held at the level given here unless named in the filter. (`quinn` covers
/// quinn-udp too, whose warnings are about this host's sockets and stay.)
const QUIET_LIBRARIES: [(&str, LevelFilter); 3] =
    [("rustls", LevelFilter::ERROR), ("quinn", LevelFilter::WARN), ("quinn_proto", LevelFilter::ERROR)];

/// The filter for `--log-level LEVEL`: `LEVEL` with the [`QUIET_LIBRARIES`] held at their
/// level (never above `LEVEL`'s own default level), except the libraries `LEVEL` names itself
/// (`--log-level info,rustls=debug`).
pub fn default_filter(level: &str) -> String {
    let directives: Vec<&str> = level.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    let Some(base) = directives.iter().rev().find_map(|d| d.parse::<LevelFilter>().ok()) else {
        return level.to_owned(); // no default level: libraries are off unless named
    };
    let named = |target: &str| directives.iter().any(|d| d.split(['=', '[', ':']).next() == Some(target));
    let mut filter = level.to_owned();
    for (target, quiet) in QUIET_LIBRARIES.iter().filter(|(t, _)| !named(t)) {
        filter.push_str(&format!(",{target}={}", (*quiet).min(base).to_string().to_lowercase()));
    }
    filter
}

/// Installs the global tracing subscriber, writing to stderr. `RUST_LOG` overrides `level`
/// and the quieter libraries of [`default_filter`].
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter(level)));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => builder.event_format(JsonLine).init(),
    }
}

/// One JSON object per line: `time`, `level` and `message` first, then the event's fields in
/// the order written, then the spans it happened in under `span`.
struct JsonLine;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing_subscriber::fmt::time::FormatTime;
        let mut time = String::new();
        let _ = tracing_subscriber::fmt::time::SystemTime
            .format_time(&mut tracing_subscriber::fmt::format::Writer::new(&mut time));
        let mut line = serde_json::Map::new();
        line.insert("time".into(), time.into());
        line.insert("level".into(), event.metadata().level().as_str().to_ascii_lowercase().into());
        let mut fields = JsonFields(serde_json::Map::new());
        event.record(&mut fields);
        line.insert("message".into(), fields.0.shift_remove("message").unwrap_or_default());
        for (k, v) in fields.0 {
            line.entry(k).or_insert(v);
        }
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<String> = scope
                .from_root()
                .map(|span| {
                    let ext = span.extensions();
                    match ext.get::<tracing_subscriber::fmt::FormattedFields<N>>() {
                        Some(f) if !f.is_empty() => format!("{}{{{}}}", span.name(), f),
                        _ => span.name().to_owned(),
                    }
                })
                .collect();
            line.insert("span".into(), spans.join(":").into());
        }
        writeln!(writer, "{}", serde_json::Value::Object(line))
    }
}

/// Collects an event's fields as JSON values.
struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A binary's first single-threaded runtime (the others are started by
/// [`crate::threads::start`]). Tunes the allocator first (see [`keep_freed_memory`]).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    keep_freed_memory();
    tunnel_proto::pump::on_buffer_given_back(trim_soon);
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

/// Largest allocation glibc serves from its heaps rather than from a fresh mapping.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 4 << 20;
/// Free memory at the top of a heap that glibc keeps instead of giving it back at once.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 16 << 20;

/// Makes glibc's allocator reuse freed buffers. The mux allocates each frame's body (up to
/// 1 MiB) and frees it once sent; by default glibc maps such blocks fresh and unmaps them on
/// free, so every frame page-faults its memory in again: a third of a busy relay's CPU time
/// went there. With blocks up to 4 MiB served from the heap and up to 16 MiB of free space
/// kept, the same pages are reused. An idle process is not larger for it.
#[allow(unsafe_code)] // one of the crate's two unsafe blocks, each a libc call
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; it is called before the runtime's
    // threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Delay between the first large buffer given back and the trim, so that one trim returns
/// the buffers of every connection that went idle about then.
const TRIM_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Has glibc return its free memory to the system within [`TRIM_DELAY`]: at most one trim at
/// a time, on a blocking thread. Called when an idle connection has given its large copy
/// buffer back ([`tunnel_proto::pump::on_buffer_given_back`]): with the thresholds of
/// [`keep_freed_memory`] the freed buffers otherwise stay inside glibc's heap and in the RSS
/// (measured in `docs/BENCHMARKS.md`, "Idle visitors"). A busy relay page-faults its reused
/// frame memory in again after a trim, at most once per [`TRIM_DELAY`].
pub fn trim_soon() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        static SCHEDULED: AtomicBool = AtomicBool::new(false);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if SCHEDULED.swap(true, Ordering::AcqRel) {
            return;
        }
        runtime.spawn(async {
            tokio::time::sleep(TRIM_DELAY).await;
            SCHEDULED.store(false, Ordering::Release);
            let _ = tokio::task::spawn_blocking(trim).await;
        });
    }
}

/// Returns glibc's free memory to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // one of the crate's two unsafe blocks, each a libc call
fn trim() {
    // SAFETY: malloc_trim has no preconditions; it only gives free pages back.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Calls `on_signal` for every SIGHUP until `stop`; the signal never ends the process.
pub async fn on_sighup(stop: tokio_util::sync::CancellationToken, on_signal: impl Fn() + Send + 'static) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
        loop {
            tokio::select! {
                got = hup.recv() => if got.is_none() { return },
                _ = stop.cancelled() => return,
            }
            on_signal();
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (stop, on_signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_libraries_unless_named() {
        assert_eq!(default_filter("info"), "info,rustls=error,quinn=warn,quinn_proto=error");
        assert_eq!(default_filter("debug,rustls=debug"), "debug,rustls=debug,quinn=warn,quinn_proto=error");
        assert_eq!(default_filter("error"), "error,rustls=error,quinn=error,quinn_proto=error");
        assert_eq!(default_filter("quinn_proto=trace"), "quinn_proto=trace");
        assert_eq!(
            default_filter("tunnel_server=debug,warn"),
            "tunnel_server=debug,warn,rustls=error,quinn=warn,quinn_proto=error"
        );
        for filter in [default_filter("info"), default_filter("off")] {
            tracing_subscriber::EnvFilter::try_new(&filter).unwrap();
        }
    }
}
