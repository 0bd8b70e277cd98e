//! Recording the tap to files: length-delimited protobuf ([`wire::TapEvent`]), rotated by
//! size.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use tokio::sync::mpsc;

use super::{wire, MessageQueue, QueueStats, TapEvent};

/// Where and how a [`FileQueue`] records.
///
/// ```
/// let options = grpcproxy::mq::FileOptions::new("/var/lib/grpcproxy/tap.pb");
/// assert_eq!(options.keep, 5);
/// ```
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// The file written now; rotated files get `.1`, `.2`, … appended (`.1` the newest).
    pub path: PathBuf,
    /// Rotate when the file reaches this many bytes (0: never).
    pub rotate_bytes: u64,
    /// Rotated files kept; older ones are deleted.
    pub keep: usize,
    /// Events held while the disk is slow; beyond, new events are dropped and counted.
    pub capacity: usize,
    /// Largest payload recorded per message, in bytes.
    pub max_payload: usize,
}

impl FileOptions {
    /// Defaults for `path`: rotate at 256 MiB, keep 5.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            rotate_bytes: 256 << 20,
            keep: 5,
            capacity: 8192,
            max_payload: usize::MAX,
        }
    }
}

/// A [`MessageQueue`] that appends every event to a file as a length-delimited protobuf
/// [`wire::TapEvent`] (varint length, then the message), from a background thread.
#[derive(Debug, Clone)]
pub struct FileQueue {
    events: mpsc::Sender<TapEvent>,
    stats: Arc<QueueStats>,
    max_payload: usize,
}

impl FileQueue {
    /// Opens (appends to) `options.path` and starts the writer thread.
    pub fn start(options: FileOptions) -> std::io::Result<Self> {
        let file = open(&options.path)?;
        let written = file.metadata()?.len();
        let (events, receiver) = mpsc::channel(options.capacity.max(1));
        let stats = Arc::new(QueueStats::default());
        let max_payload = options.max_payload;
        let writer = Writer {
            options,
            out: BufWriter::new(file),
            written,
            stats: stats.clone(),
        };
        std::thread::Builder::new()
            .name("grpcproxy-tap-file".into())
            .spawn(move || writer.run(receiver))?;
        Ok(Self {
            events,
            stats,
            max_payload,
        })
    }

    /// Recorded and dropped counts.
    pub fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }

    /// Reads every event of a recorded file, in order.
    pub fn read(path: &Path) -> std::io::Result<Vec<wire::TapEvent>> {
        let data = std::fs::read(path)?;
        let mut buffer = data.as_slice();
        let mut events = Vec::new();
        while !buffer.is_empty() {
            let event = wire::TapEvent::decode_length_delimited(&mut buffer)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            events.push(event);
        }
        Ok(events)
    }
}

impl MessageQueue for FileQueue {
    fn wants(&self, _method: &str) -> bool {
        true
    }

    fn max_payload(&self) -> usize {
        self.max_payload
    }

    fn publish(&self, event: TapEvent) {
        if self.events.try_send(event).is_err() {
            self.stats.dropped_one();
        }
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct Writer {
    options: FileOptions,
    out: BufWriter<File>,
    written: u64,
    stats: Arc<QueueStats>,
}

impl Writer {
    fn run(mut self, mut events: mpsc::Receiver<TapEvent>) {
        while let Some(event) = events.blocking_recv() {
            let bytes = wire::TapEvent::from(&event).encode_length_delimited_to_vec();
            if let Err(e) = self.write(&bytes) {
                tracing::error!(path = %self.options.path.display(), error = %e, "tap file write failed");
                self.stats.dropped_one();
                continue;
            }
            self.stats.published_one();
            if events.is_empty() {
                let _ = self.out.flush();
            }
        }
        let _ = self.out.flush();
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.options.rotate_bytes > 0
            && self.written > 0
            && self.written + bytes.len() as u64 > self.options.rotate_bytes
        {
            self.rotate()?;
        }
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        let path = &self.options.path;
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
        let _ = std::fs::remove_file(numbered(self.options.keep.max(1)));
        for n in (1..self.options.keep.max(1)).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        std::fs::rename(path, numbered(1))?;
        self.out = BufWriter::new(open(path)?);
        self.written = 0;
        Ok(())
    }
}
