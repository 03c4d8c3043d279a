//! The `host` binary: see [`handler_host::cli`].

use clap::Parser;
use handler_host::cli::LogFormat;
use handler_host::telemetry;
use std::io::IsTerminal;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, fmt};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = handler_host::cli::Cli::parse();
    // PostgreSQL's notices ("relation … already exists, skipping" on every start) say nothing
    // an operator needs.
    let filter = EnvFilter::try_from_env("HOST_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let logs = match cli.log_format {
        // One JSON object a line; the fields of the message being handled (its ids) ride in
        // `span`.
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        // Colour only for a person at a terminal: a log file or pipe gets plain text.
        LogFormat::Text => fmt::layer()
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let (spans, exporting) = match cli.otlp_endpoint.as_deref().map(telemetry::otlp_layer) {
        None => (None, None),
        Some(Ok((layer, provider))) => (Some(layer), Some(provider)),
        Some(Err(error)) => {
            eprintln!("error: {error:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .with(filter)
        .init();
    let result = handler_host::cli::execute(cli).await;
    if let Some(provider) = exporting {
        // Sends the spans still buffered; a collector that is gone only costs a warning.
        if let Err(error) = provider.shutdown() {
            tracing::warn!("the last spans were not exported: {error}");
        }
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
