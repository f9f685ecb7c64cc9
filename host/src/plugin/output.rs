//! A guest's stdout or stderr: what it writes is kept until the host takes it to the log
//! after each call. An instance may write `capacity` octets in all; past that its writes
//! fail, as on a full pipe (and a Rust guest traps). Taking costs one atomic load when the
//! guest wrote nothing, which is most calls.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

#[derive(Clone)]
pub struct Output(Arc<Pipe>);

struct Pipe {
    capacity: usize,
    /// Something is waiting to be taken.
    pending: AtomicBool,
    buffer: Mutex<Buffer>,
}

#[derive(Default)]
struct Buffer {
    /// Not taken yet.
    unread: Vec<u8>,
    /// Octets written in all.
    written: usize,
}

impl Output {
    pub fn new(capacity: usize) -> Output {
        Output(Arc::new(Pipe {
            capacity,
            pending: AtomicBool::new(false),
            buffer: Mutex::default(),
        }))
    }

    /// What was written since the last take (empty: nothing).
    pub fn take(&self) -> Vec<u8> {
        if !self.0.pending.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut self.0.buffer.lock().expect("output lock").unread)
    }

    /// Writes as much of `bytes` as the capacity leaves room for; how much.
    fn put(&self, bytes: &[u8]) -> usize {
        let mut b = self.0.buffer.lock().expect("output lock");
        let n = bytes.len().min(self.0.capacity - b.written);
        b.unread.extend_from_slice(&bytes[..n]);
        b.written += n;
        if n > 0 {
            self.0.pending.store(true, Ordering::Release);
        }
        n
    }

    fn room(&self) -> usize {
        self.0.capacity - self.0.buffer.lock().expect("output lock").written
    }
}

impl OutputStream for Output {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        if bytes.len() > self.room() {
            return Err(StreamError::Trap(wasmtime::format_err!(
                "the plugin wrote more than {} octets of output",
                self.0.capacity
            )));
        }
        self.put(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        match self.room() {
            0 => Err(StreamError::Closed),
            room => Ok(room),
        }
    }
}

#[async_trait::async_trait]
impl Pollable for Output {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Output {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(self.put(buf)))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for Output {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Output {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}
