//! The log queue: request threads append whole lines to one bounded buffer;
//! a writer thread swaps it out and writes it every few milliseconds (or at
//! once when it is half full). A request never waits on stdout and never
//! pays a wake-up of the writer per line (a channel per line cost more than
//! the rest of the request path together; see BENCHMARKS.md). When the
//! buffer is full the line is dropped and counted. Every log line, access
//! lines and `tracing` events alike, goes through this one queue, so lines
//! from different sources never interleave inside a line.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How often queued lines are written when the queue is not filling up.
const FLUSH_EVERY: Duration = Duration::from_millis(5);

#[derive(Default)]
struct Queue {
    lines: Vec<u8>,
    closing: bool,
}

/// The shared end of the queue: cheap to clone, safe from any thread.
#[derive(Clone)]
pub struct LineQueue {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    capacity: usize,
    dropped: AtomicU64,
}

impl LineQueue {
    /// A queue of at most `capacity` bytes written by a new thread into `sink`.
    pub fn start<W: Write + Send + 'static>(capacity: usize, sink: W) -> (Self, WriterThread) {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            capacity,
            dropped: AtomicU64::new(0),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("gatehouse-log".into())
                .spawn(move || write_out(&shared, sink))
                .ok()
        };
        (
            Self {
                shared: Arc::clone(&shared),
            },
            WriterThread { shared, thread },
        )
    }

    /// Queues complete line(s); drops them (counted) when the queue is full.
    pub fn push(&self, line: &[u8]) {
        let Ok(mut queue) = self.shared.queue.lock() else {
            return;
        };
        if queue.lines.len() + line.len() > self.shared.capacity {
            drop(queue);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.lines.extend_from_slice(line);
        let half_full = queue.lines.len() > self.shared.capacity / 2;
        drop(queue);
        if half_full {
            self.shared.wake.notify_one();
        }
    }

    /// Lines dropped so far because the queue was full.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

fn write_out<W: Write>(shared: &Shared, mut sink: W) {
    let mut batch = Vec::new();
    loop {
        let closing = {
            let Ok(queue) = shared.queue.lock() else {
                return;
            };
            let Ok((mut queue, _)) = shared.wake.wait_timeout(queue, FLUSH_EVERY) else {
                return;
            };
            std::mem::swap(&mut queue.lines, &mut batch);
            queue.closing
        };
        if !batch.is_empty() {
            // Nothing sensible to do when stdout fails; keep serving.
            let _ = sink.write_all(&batch).and_then(|()| sink.flush());
            batch.clear();
        }
        if closing {
            return;
        }
    }
}

/// Owns the writer thread: dropping it writes what is queued and stops it.
pub struct WriterThread {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        if let Ok(mut queue) = self.shared.queue.lock() {
            queue.closing = true;
        }
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A `tracing` writer: each formatted event is one `write` of a whole line.
pub struct EventWriter(pub LineQueue);

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LineQueue {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<u8>>>);

    impl Write for Collect {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_whole_and_in_order_and_a_full_queue_drops_and_counts() {
        let out = Collect::default();
        let (queue, writer) = LineQueue::start(64, out.clone());
        queue.push(b"one\n");
        queue.push(b"two\n");
        queue.push(&[b'x'; 100]); // larger than the queue: dropped
        drop(writer); // writes what is queued
        assert_eq!(&*out.0.lock().unwrap(), b"one\ntwo\n");
        assert_eq!(queue.dropped(), 1);
    }
}
