//! The host's log on standard error, through `tracing`: one line per event, for people by
//! default (`TIME LEVEL message  key=value … [span fields]`), or one JSON object per line with
//! `--log-format json`. `EVHOST_LOG` (`error`, `warn`, `info`, `debug`) sets the least severe
//! level written; `info` by default. Standard output is kept for what the CLI prints for people
//! and scripts.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One readable line per record.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with `message`), `target`, and
    /// `spans`, the fields of each span the record happened in, outermost first.
    Json,
}

/// The least severe level `EVHOST_LOG` asks for.
fn level() -> LevelFilter {
    match std::env::var("EVHOST_LOG").as_deref() {
        Ok("error") => LevelFilter::ERROR,
        Ok("warn") => LevelFilter::WARN,
        Ok("debug") => LevelFilter::DEBUG,
        Ok("trace") => LevelFilter::TRACE,
        _ => LevelFilter::INFO,
    }
}

/// Installs the process's log; later calls do nothing.
pub(crate) fn init(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level());
    let _ = match format {
        LogFormat::Text => builder.event_format(TextLine).try_init(),
        LogFormat::Json => builder
            .json()
            .with_timer(Rfc3339)
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
}

/// The time as the store records it, UTC with microseconds.
struct Rfc3339;

impl tracing_subscriber::fmt::time::FormatTime for Rfc3339 {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        w.write_str(&evhost_store::now_rfc3339())
    }
}

/// `TIME LEVEL message key=value …`, then the fields of the spans it happened in, outermost
/// first, in brackets: what the host's log looked like before spans, with their context added.
struct TextLine;

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = event.metadata().level().as_str();
        write!(writer, "{} {level:5} ", evhost_store::now_rfc3339())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        let mut first = true;
        for span in ctx
            .event_scope()
            .into_iter()
            .flat_map(|scope| scope.from_root())
        {
            let extensions = span.extensions();
            let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                continue;
            };
            if fields.is_empty() {
                continue;
            }
            writer.write_str(if first { "  [" } else { " " })?;
            first = false;
            write!(writer, "{fields}")?;
        }
        if !first {
            writer.write_str("]")?;
        }
        writeln!(writer)
    }
}
