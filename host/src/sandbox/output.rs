//! A guest's stdout or stderr: collected per call up to a cap, then written to the host log.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: usize,
}

/// A capped in-memory sink; writes past the cap are dropped, never an error, so a chatty
/// guest neither traps nor grows the host.
#[derive(Clone)]
pub struct GuestOutput {
    cap: usize,
    captured: Arc<Mutex<Captured>>,
}

impl GuestOutput {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            captured: Arc::default(),
        }
    }

    fn append(&self, bytes: &[u8]) {
        let mut captured = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.cap.saturating_sub(captured.bytes.len());
        let kept = bytes.len().min(room);
        captured.bytes.extend_from_slice(&bytes[..kept]);
        captured.dropped += bytes.len() - kept;
    }

    /// Logs every captured line tagged with the plugin and stream; returns the line that
    /// explains a trap: the last one starting with `panicked` (the SDKs write one for a panic
    /// or an uncaught exception) when there is one, else the last line that explains
    /// something (Rust's "note: run with RUST_BACKTRACE" hint does not). The Python and
    /// JavaScript runtimes print lines of their own after the SDK's, which say nothing of the
    /// cause ("Python function threw an unexpected exception").
    pub fn flush_to_log(&self, plugin: &str, stream: &'static str) -> Option<String> {
        let captured =
            std::mem::take(&mut *self.captured.lock().unwrap_or_else(|e| e.into_inner()));
        let text = String::from_utf8_lossy(&captured.bytes);
        let mut last = None;
        let mut panicked = None;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            tracing::info!(plugin, stream, "{line}");
            if line.starts_with("panicked") {
                panicked = Some(line.to_owned());
            }
            if !line.starts_with("note: run with `RUST_BACKTRACE") {
                last = Some(line.to_owned());
            }
        }
        let last = panicked.or(last);
        if captured.dropped > 0 {
            tracing::warn!(
                plugin,
                stream,
                dropped_bytes = captured.dropped,
                "guest output over the cap was dropped"
            );
        }
        last
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 << 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_kept_up_to_the_cap_and_the_rest_dropped() {
        let out = GuestOutput::new(4);
        out.append(b"abc");
        out.append(b"de");
        let captured = out.captured.lock().unwrap();
        assert_eq!(captured.bytes, b"abcd");
        assert_eq!(captured.dropped, 1);
    }

    fn explained(text: &str) -> Option<String> {
        let output = GuestOutput::new(1 << 10);
        output.append(text.as_bytes());
        output.flush_to_log("test", "stderr")
    }

    #[test]
    fn the_last_panicked_line_explains_a_trap_over_runtime_lines_after_it() {
        let python = "Traceback (most recent call last):\n  File \"app.py\", line 3\n\
                      KeyError: 'x'\npanicked at app.py:3: KeyError: 'x'\n\
                      thread '<unnamed>' (1) panicked at runtime/src/lib.rs:1:1:\n\
                      Python function threw an unexpected exception\n\
                      note: run with `RUST_BACKTRACE=1` environment variable\n";
        assert_eq!(
            explained(python).as_deref(),
            Some("panicked at app.py:3: KeyError: 'x'")
        );
    }

    #[test]
    fn without_a_panicked_line_the_last_line_but_the_backtrace_hint_explains() {
        let text = "first\nsecond\nnote: run with `RUST_BACKTRACE=1` environment variable\n\n";
        assert_eq!(explained(text).as_deref(), Some("second"));
        assert_eq!(explained(""), None);
    }
}
