//! A byte budget for the payloads a queue holds in its buffer, so that memory stays bounded
//! by bytes and not only by a count of events (1 000 events of 4 MiB are 4 GiB).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::TapEvent;

/// Payload bytes held, against a maximum.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    held: AtomicUsize,
    max: usize,
}

impl ByteBudget {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            held: AtomicUsize::new(0),
            max,
        }
    }

    /// Reserves `event`'s payload bytes; false (nothing reserved) if the budget is spent.
    pub(crate) fn take(&self, event: &TapEvent) -> bool {
        let bytes = held_bytes(event);
        if bytes == 0 {
            return true;
        }
        let before = self.held.fetch_add(bytes, Ordering::AcqRel);
        // An empty buffer takes any message, so one larger than the budget is not starved.
        if before > 0 && before + bytes > self.max {
            self.held.fetch_sub(bytes, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Whether at most half the budget is held: room for what one frame of a waiting call
    /// completes (the "wait" policy waits until then).
    pub(crate) fn has_room(&self) -> bool {
        self.held.load(Ordering::Acquire) <= self.max / 2
    }

    /// Returns what [`take`](Self::take) reserved for `event`, once it left the buffer.
    pub(crate) fn give_back(&self, event: &TapEvent) {
        self.held.fetch_sub(held_bytes(event), Ordering::AcqRel);
    }
}

fn held_bytes(event: &TapEvent) -> usize {
    match event {
        TapEvent::Message(m) => m.payload.len(),
        TapEvent::Started(_) | TapEvent::Ended(_) | TapEvent::Mirror(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Direction, TapMessage};
    use super::*;

    fn message(len: usize) -> TapEvent {
        TapEvent::Message(TapMessage {
            call_id: 1,
            direction: Direction::Request,
            sequence: 0,
            compressed: false,
            payload: vec![0; len].into(),
            length: len as u32,
        })
    }

    #[test]
    fn payload_bytes_are_bounded_and_given_back() {
        let budget = ByteBudget::new(100);
        let (sixty, fifty) = (message(60), message(50));
        assert!(budget.take(&sixty));
        assert!(!budget.take(&fifty), "60 + 50 is over 100");
        assert!(budget.take(&message(40)));
        budget.give_back(&sixty);
        assert!(budget.take(&fifty));
        assert!(budget.take(&message(0)), "empty payloads always fit");
        let small = ByteBudget::new(10);
        assert!(small.has_room());
        assert!(
            small.take(&message(50)),
            "an empty buffer takes any message"
        );
        assert!(!small.has_room());
        assert!(!small.take(&message(1)));
    }
}
