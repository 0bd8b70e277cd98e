//! The bounded buffer between the call path and a queue's writer: a channel bounded in
//! events, a budget bounding its payload bytes, and the wakers of calls waiting for room.

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};

use super::budget::ByteBudget;
use super::room::Room;
use super::{QueueStats, TapEvent};

/// What a queue's writer is asked to do, in order.
#[derive(Debug)]
pub(crate) enum Command {
    /// Write or publish this event.
    Event(TapEvent),
    /// Everything sent before is delivered (written, or acknowledged or failed): say so.
    Flush(oneshot::Sender<()>),
}

/// What the writer hands back as it takes commands out of the buffer.
#[derive(Debug, Clone)]
pub(crate) struct Freed(Arc<(ByteBudget, Room)>);

impl Freed {
    /// A command without an event left the buffer.
    pub(crate) fn slot(&self) {
        self.0 .1.freed();
    }

    /// `event` left the buffer.
    pub(crate) fn event(&self, event: &TapEvent) {
        self.0 .0.give_back(event);
        self.0 .1.freed();
    }
}

/// The call path's end of the buffer.
#[derive(Debug)]
pub(crate) struct Buffer {
    commands: mpsc::Sender<Command>,
    bounds: Freed,
    stats: Arc<QueueStats>,
}

impl Clone for Buffer {
    fn clone(&self) -> Self {
        Self {
            commands: self.commands.clone(),
            bounds: self.bounds.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl Buffer {
    /// A buffer of `capacity` commands and `max_bytes` payload bytes, the writer's receiving
    /// end, and what the writer reports freed through.
    pub(crate) fn new(
        capacity: usize,
        max_bytes: usize,
        stats: Arc<QueueStats>,
    ) -> (Self, mpsc::Receiver<Command>, Freed) {
        let (commands, receiver) = mpsc::channel(capacity.max(1));
        let bounds = Freed(Arc::new((ByteBudget::new(max_bytes), Room::default())));
        let buffer = Self {
            commands,
            bounds: bounds.clone(),
            stats,
        };
        (buffer, receiver, bounds)
    }

    /// Hands `event` to the writer without waiting; drops and counts when the buffer is
    /// full in events or bytes.
    pub(crate) fn publish(&self, event: TapEvent) {
        let budget = &self.bounds.0 .0;
        if !budget.take(&event) {
            return self.stats.dropped_one();
        }
        if let Err(full) = self.commands.try_send(Command::Event(event)) {
            if let Command::Event(event) = full.into_inner() {
                budget.give_back(&event);
            }
            self.stats.dropped_one();
        }
    }

    /// Ready when at most half the buffer is in use (room for what one frame of a waiting
    /// call publishes); else the waker is woken when the writer frees room.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let has_room = || {
            self.commands.capacity() >= self.commands.max_capacity().div_ceil(2)
                && self.bounds.0 .0.has_room()
        };
        if has_room() {
            return Poll::Ready(());
        }
        self.bounds.0 .1.wait(cx.waker());
        // Room freed between the check and the registration is not missed.
        match has_room() {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }

    /// Waits until the writer delivered every event handed over so far; false if the
    /// writer is gone.
    pub(crate) async fn flush(&self) -> bool {
        let (done, flushed) = oneshot::channel();
        self.commands.send(Command::Flush(done)).await.is_ok() && flushed.await.is_ok()
    }
}
