//! The host's log on standard error, through `tracing`: one line per event, for people by
//! default (`TIME LEVEL span{fields}: message`), or one JSON object per line with
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
        .with_ansi(false)
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

/// `TIME LEVEL span{fields}:span{fields}: message key=value …`: what the host's log looked like
/// before spans, with the context of the request, command, batch or plugin call it happened in
/// (outermost first) between the level and the message, so each line still ends with what
/// happened.
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
        for span in ctx
            .event_scope()
            .into_iter()
            .flat_map(|scope| scope.from_root())
        {
            write!(writer, "{}", span.name())?;
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<N>>()
                && !fields.is_empty()
            {
                write!(writer, "{{{fields}}}")?;
            }
            writer.write_str(": ")?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
