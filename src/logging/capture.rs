//! Test support: a log writer that keeps what it is given, for tests that install their own subscriber.

use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

/// Every byte written to any clone, in order.
#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// What was written so far, as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// What `emit` logs, as the JSON line format writes it.
pub(crate) fn json_lines(emit: impl FnOnce()) -> String {
    let out = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .event_format(super::json::JsonLines)
        .with_writer(out.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, emit);
    out.text()
}
