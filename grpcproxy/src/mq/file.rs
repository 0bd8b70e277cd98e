//! Recording the tap to files: length-delimited protobuf or JSON lines
//! ([`wire::TapEvent`]), rotated by size.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use tokio::sync::mpsc;

use super::buffer::{Buffer, Command, Freed};
use super::wire::{self, Encoding};
use super::{MessageQueue, QueueStats, TapEvent};

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
    /// Payload bytes held in that buffer at most; beyond, new messages are dropped and
    /// counted (the events' count alone does not bound memory when messages are large).
    pub max_buffer_bytes: usize,
    /// Largest payload recorded per message, in bytes.
    pub max_payload: usize,
    /// Length-delimited protobuf (varint length, then the event), or JSON lines.
    pub encoding: Encoding,
    /// When the buffer is full: `None` drops and counts at once; `Some(bound)` makes the
    /// call wait up to `bound` for room before each frame it reads (see
    /// [`MessageQueue::max_wait`]).
    pub overflow_wait: Option<std::time::Duration>,
    /// Stamped on every event (`TapEvent.instance`): which proxy process recorded it.
    /// Empty: not stamped.
    pub instance: String,
}

impl FileOptions {
    /// Defaults for `path`: rotate at 256 MiB, keep 5.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            rotate_bytes: 256 << 20,
            keep: 5,
            capacity: 8192,
            max_buffer_bytes: 64 << 20,
            max_payload: usize::MAX,
            encoding: Encoding::Protobuf,
            overflow_wait: None,
            instance: String::new(),
        }
    }
}

/// A [`MessageQueue`] that appends every event to a file, from a background thread:
/// a length-delimited protobuf [`wire::TapEvent`] (varint length, then the message), or one
/// JSON object per line.
#[derive(Clone)]
pub struct FileQueue {
    buffer: Buffer,
    stats: Arc<QueueStats>,
    max_payload: usize,
    overflow_wait: Option<std::time::Duration>,
}

impl FileQueue {
    /// Opens (appends to) `options.path` and starts the writer thread.
    pub fn start(options: FileOptions) -> std::io::Result<Self> {
        let file = open(&options.path)?;
        let written = file.metadata()?.len();
        let stats = Arc::new(QueueStats::new(true));
        let (buffer, receiver, freed) =
            Buffer::new(options.capacity, options.max_buffer_bytes, stats.clone());
        let max_payload = options.max_payload;
        let overflow_wait = options.overflow_wait;
        let writer = Writer {
            freed,
            options,
            out: BufWriter::new(file),
            written,
            stats: stats.clone(),
        };
        std::thread::Builder::new()
            .name("grpcproxy-tap-file".into())
            .spawn(move || writer.run(receiver))?;
        Ok(Self {
            buffer,
            stats,
            max_payload,
            overflow_wait,
        })
    }

    /// Recorded, dropped and failed counts.
    pub fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }

    /// Waits until every event published so far is written and flushed to the file.
    /// Returns false if the writer thread is gone.
    pub async fn flush(&self) -> bool {
        self.buffer.flush().await
    }

    /// Reads every event of a recorded file, in order, in either encoding.
    pub fn read(path: &Path) -> std::io::Result<Vec<wire::TapEvent>> {
        let data = std::fs::read(path)?;
        let invalid = |e| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let mut events = Vec::new();
        match Encoding::detect(&data) {
            Encoding::Json => {
                for (n, line) in data.split(|b| *b == b'\n').enumerate() {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let event = Encoding::Json
                        .decode(line)
                        .map_err(|e| invalid(format!("line {}: {e}", n + 1)))?;
                    events.push(event);
                }
            }
            Encoding::Protobuf => {
                let mut buffer = data.as_slice();
                while !buffer.is_empty() {
                    let at = data.len() - buffer.len();
                    let event = wire::TapEvent::decode_length_delimited(&mut buffer)
                        .map_err(|e| invalid(format!("byte {at}: {e}")))?;
                    events.push(event);
                }
            }
        }
        Ok(events)
    }
}

impl std::fmt::Debug for FileQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileQueue")
            .field("stats", &self.stats)
            .field("max_payload", &self.max_payload)
            .finish_non_exhaustive()
    }
}

impl MessageQueue for FileQueue {
    fn wants(&self, _method: &str) -> bool {
        true
    }

    fn max_payload(&self) -> usize {
        self.max_payload
    }

    fn max_wait(&self) -> Option<std::time::Duration> {
        self.overflow_wait
    }

    fn poll_room(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.buffer.poll_room(cx)
    }

    fn publish(&self, event: TapEvent) {
        self.buffer.publish(event);
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
    freed: Freed,
}

impl Writer {
    fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        while let Some(command) = commands.blocking_recv() {
            let event = match command {
                Command::Event(event) => event,
                Command::Flush(done) => {
                    self.freed.slot();
                    self.flush();
                    let _ = done.send(());
                    continue;
                }
            };
            self.freed.event(&event);
            let mut event = wire::TapEvent::from(&event);
            event.instance.clone_from(&self.options.instance);
            let bytes = match self.options.encoding {
                Encoding::Protobuf => event.encode_length_delimited_to_vec(),
                Encoding::Json => {
                    let mut line = Encoding::Json.encode(&event);
                    line.push(b'\n');
                    line
                }
            };
            if let Err(e) = self.write(&bytes) {
                tracing::error!(path = %self.options.path.display(), error = %e, "tap file write failed");
                self.stats.failed_one();
                continue;
            }
            self.stats.published_one();
            if commands.is_empty() {
                self.flush();
            }
        }
        self.flush();
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            tracing::error!(path = %self.options.path.display(), error = %e, "tap file flush failed");
        }
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
