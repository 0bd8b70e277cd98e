//! Finished spans to an exporter without ever blocking a call: a bounded queue that drops
//! (and counts) when full, drained by one task in batches.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use tokio::sync::{mpsc, Notify};

/// Bounds of a [`SpanQueue`].
///
/// ```
/// let options = grpcproxy::trace::SpanQueueOptions::default();
/// assert_eq!(options.max_queue, 4096);
/// ```
#[derive(Debug, Clone)]
pub struct SpanQueueOptions {
    /// Spans waiting to be exported at most; past it, new ones are dropped (4096).
    pub max_queue: usize,
    /// Spans per export at most (512).
    pub max_batch: usize,
    /// How long a batch waits to fill before it goes (200 ms).
    pub batch_delay: Duration,
    /// How long one export may take before it counts as failed (5 s).
    pub export_timeout: Duration,
}

impl Default for SpanQueueOptions {
    fn default() -> Self {
        Self {
            max_queue: 4096,
            max_batch: 512,
            batch_delay: Duration::from_millis(200),
            export_timeout: Duration::from_secs(5),
        }
    }
}

/// What a [`SpanQueue`] did with the spans it was given.
///
/// ```
/// let stats = grpcproxy::trace::SpanQueueStats::default();
/// assert_eq!((stats.exported(), stats.dropped(), stats.failed()), (0, 0, 0));
/// ```
#[derive(Debug, Default)]
pub struct SpanQueueStats {
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

impl SpanQueueStats {
    /// Spans the exporter accepted.
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    /// Spans dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Spans whose export failed or timed out.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// A span processor for a tracer provider: finished (sampled) spans go to a bounded queue,
/// never waiting; a task started with [`SpanQueue::start`] exports them in batches.
///
/// ```no_run
/// use grpcproxy::trace::{SpanQueue, SpanQueueOptions};
/// use opentelemetry_sdk::trace::SdkTracerProvider;
///
/// # fn f(exporter: impl opentelemetry_sdk::trace::SpanExporter + 'static) {
/// let queue = SpanQueue::new(exporter, SpanQueueOptions::default());
/// let handle = queue.clone();
/// let provider = SdkTracerProvider::builder().with_span_processor(queue).build();
/// handle.start(); // within a tokio runtime
/// # }
/// ```
pub struct SpanQueue<E> {
    inner: Arc<Inner<E>>,
}

impl<E> Clone for SpanQueue<E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<E> {
    sender: mpsc::Sender<SpanData>,
    /// Taken by the task when it starts.
    receiver: Mutex<Option<mpsc::Receiver<SpanData>>>,
    exporter: Mutex<Option<E>>,
    options: SpanQueueOptions,
    stats: Arc<SpanQueueStats>,
    /// Tells the task to export what is queued and stop.
    stop: Notify,
    done: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl<E> fmt::Debug for SpanQueue<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanQueue")
            .field("options", &self.inner.options)
            .field("stats", &self.inner.stats)
            .finish_non_exhaustive()
    }
}

impl<E: SpanExporter + 'static> SpanQueue<E> {
    /// A queue in front of `exporter`.
    pub fn new(exporter: E, options: SpanQueueOptions) -> Self {
        let (sender, receiver) = mpsc::channel(options.max_queue.max(1));
        Self {
            inner: Arc::new(Inner {
                sender,
                receiver: Mutex::new(Some(receiver)),
                exporter: Mutex::new(Some(exporter)),
                options,
                stats: Arc::default(),
                stop: Notify::new(),
                done: Mutex::new(None),
            }),
        }
    }

    /// Its counters.
    pub fn stats(&self) -> &Arc<SpanQueueStats> {
        &self.inner.stats
    }

    /// Starts the export task on the current tokio runtime (once; later calls do nothing).
    pub fn start(&self) {
        let receiver = self
            .inner
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let exporter = self
            .inner
            .exporter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let (Some(receiver), Some(exporter)) = (receiver, exporter) else {
            return;
        };
        let inner = self.inner.clone();
        let task = tokio::spawn(export_loop(inner, receiver, exporter));
        *self.inner.done.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// Exports what is queued and stops the task, waiting up to `timeout`.
    pub async fn flush(&self, timeout: Duration) {
        self.inner.stop.notify_one();
        let task = self
            .inner
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(timeout, task).await;
        }
    }
}

async fn export_loop<E: SpanExporter>(
    inner: Arc<Inner<E>>,
    mut receiver: mpsc::Receiver<SpanData>,
    exporter: E,
) {
    let options = inner.options.clone();
    let mut stopping = false;
    loop {
        let first = if stopping {
            match receiver.try_recv() {
                Ok(span) => span,
                Err(_) => return,
            }
        } else {
            tokio::select! {
                span = receiver.recv() => match span {
                    Some(span) => span,
                    None => return,
                },
                () = inner.stop.notified() => {
                    stopping = true;
                    continue;
                }
            }
        };
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + options.batch_delay;
        while batch.len() < options.max_batch {
            if stopping {
                match receiver.try_recv() {
                    Ok(span) => batch.push(span),
                    Err(_) => break,
                }
                continue;
            }
            match tokio::time::timeout_at(until, receiver.recv()).await {
                Ok(Some(span)) => batch.push(span),
                _ => break,
            }
        }
        let count = batch.len() as u64;
        match tokio::time::timeout(options.export_timeout, exporter.export(batch)).await {
            Ok(Ok(())) => {
                inner.stats.exported.fetch_add(count, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                inner.stats.failed.fetch_add(count, Ordering::Relaxed);
                tracing::debug!(error = %e, spans = count, "span export failed");
            }
            Err(_) => {
                inner.stats.failed.fetch_add(count, Ordering::Relaxed);
                tracing::debug!(spans = count, "span export timed out");
            }
        }
    }
}

impl<E: SpanExporter + 'static> SpanProcessor for SpanQueue<E> {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.inner.sender.try_send(span).is_err() {
            self.inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.inner.stop.notify_one();
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(exporter) = self
            .inner
            .exporter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            exporter.set_resource(resource);
        }
    }
}
