//! The bounded buffer between the call path and a queue's writer: a channel bounded in
//! events, a budget bounding its payload bytes, and the wakers of calls waiting for room.

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use super::budget::ByteBudget;
use super::room::Room;
use super::{QueueStats, TapEvent};

/// A writer's command that may carry an event.
pub(crate) trait Carries: Sized {
    fn carry(event: TapEvent) -> Self;
    fn into_event(self) -> Option<TapEvent>;
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
pub(crate) struct Buffer<C> {
    commands: mpsc::Sender<C>,
    bounds: Freed,
    stats: Arc<QueueStats>,
}

impl<C> Clone for Buffer<C> {
    fn clone(&self) -> Self {
        Self {
            commands: self.commands.clone(),
            bounds: self.bounds.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl<C: Carries> Buffer<C> {
    /// A buffer of `capacity` commands and `max_bytes` payload bytes, the writer's receiving
    /// end, and what the writer reports freed through.
    pub(crate) fn new(
        capacity: usize,
        max_bytes: usize,
        stats: Arc<QueueStats>,
    ) -> (Self, mpsc::Receiver<C>, Freed) {
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
        if let Err(full) = self.commands.try_send(C::carry(event)) {
            if let Some(event) = full.into_inner().into_event() {
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

    /// Sends a command that carries no event, waiting for room (flushes).
    pub(crate) async fn send(&self, command: C) -> bool {
        self.commands.send(command).await.is_ok()
    }
}
