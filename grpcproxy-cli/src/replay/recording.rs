//! Recorded calls, put back together from the tap's events.

use std::collections::HashMap;

use grpcproxy::mq::wire::{self, Kind};

/// One recorded gRPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordedMessage {
    pub(crate) compressed: bool,
    pub(crate) payload: bytes::Bytes,
    /// The full length on the wire (the payload may have been cut when recorded).
    pub(crate) length: u32,
}

impl RecordedMessage {
    pub(crate) fn is_complete(&self) -> bool {
        self.payload.len() == self.length as usize
    }
}

/// One call as the tap saw it.
#[derive(Debug, Clone)]
pub(crate) struct RecordedCall {
    /// The proxy process that recorded it (empty in recordings from before instances).
    pub(crate) instance: String,
    pub(crate) call_id: u64,
    pub(crate) method: String,
    pub(crate) metadata: Vec<wire::Metadata>,
    pub(crate) requests: Vec<RecordedMessage>,
    pub(crate) responses: Vec<RecordedMessage>,
    pub(crate) end: Option<wire::CallEnded>,
    /// Messages whose sequence number was not the next one (events lost while recording).
    gaps: usize,
}

impl RecordedCall {
    /// Why this call cannot be replayed faithfully, if it cannot.
    pub(crate) fn unreplayable(&self) -> Option<String> {
        let Some(end) = &self.end else {
            return Some("incomplete recording: no call-ended event".into());
        };
        if self.gaps > 0
            || end.request_messages != self.requests.len() as u64
            || end.response_messages != self.responses.len() as u64
        {
            return Some(format!(
                "incomplete recording: {} of {} request and {} of {} response messages recorded",
                self.requests.len(),
                end.request_messages,
                self.responses.len(),
                end.response_messages
            ));
        }
        if let Some(cut) = self.requests.iter().find(|m| !m.is_complete()) {
            return Some(format!(
                "request payloads were cut at {} of {} bytes when recorded (raise tap.max_payload)",
                cut.payload.len(),
                cut.length
            ));
        }
        None
    }
}

/// Puts calls back together, in the order they started. Events of calls whose start was
/// not recorded (the recording began mid-call) are ignored.
pub(crate) fn calls(events: impl IntoIterator<Item = wire::TapEvent>) -> Vec<RecordedCall> {
    let mut calls: Vec<RecordedCall> = Vec::new();
    // Call ids are unique per proxy instance: replicas publishing to one stream may reuse
    // them, so a call is (instance, call id).
    let mut index: HashMap<(String, u64), usize> = HashMap::new();
    for event in events {
        let instance = event.instance;
        match event.event {
            Some(Kind::Started(started)) => {
                // A process restarted under the same name counts its call ids from 1
                // again: a call id seen before starts a new call, and what follows is its.
                index.insert((instance.clone(), started.call_id), calls.len());
                calls.push(RecordedCall {
                    instance,
                    call_id: started.call_id,
                    method: started.method,
                    metadata: started.metadata,
                    requests: Vec::new(),
                    responses: Vec::new(),
                    end: None,
                    gaps: 0,
                });
            }
            Some(Kind::Message(message)) => {
                let key = (instance, message.call_id);
                let Some(call) = index.get(&key).map(|&i| &mut calls[i]) else {
                    continue;
                };
                let side = if message.direction == wire::Direction::Request as i32 {
                    &mut call.requests
                } else {
                    &mut call.responses
                };
                if message.sequence != side.len() as u64 {
                    call.gaps += 1;
                }
                side.push(RecordedMessage {
                    compressed: message.compressed,
                    payload: message.payload,
                    length: message.length,
                });
            }
            Some(Kind::Ended(end)) => {
                if let Some(&i) = index.get(&(instance, end.call_id)) {
                    calls[i].end = Some(end);
                }
            }
            // A mirror's result says nothing of the call itself; unknown events neither.
            _ => {}
        }
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;
    use grpcproxy::mq::wire::{CallEnded, CallStarted, Message, TapEvent};

    fn event(kind: Kind) -> TapEvent {
        TapEvent {
            instance: String::new(),
            schema_version: 1,
            event: Some(kind),
        }
    }

    fn message(
        call_id: u64,
        direction: wire::Direction,
        sequence: u64,
        payload: &'static [u8],
    ) -> TapEvent {
        event(Kind::Message(Message {
            call_id,
            direction: direction as i32,
            sequence,
            compressed: false,
            payload: bytes::Bytes::from_static(payload),
            length: payload.len() as u32,
        }))
    }

    fn start(call_id: u64) -> TapEvent {
        event(Kind::Started(CallStarted {
            call_id,
            method: format!("/p.S/M{call_id}"),
            ..Default::default()
        }))
    }

    fn end(call_id: u64, requests: u64, responses: u64) -> TapEvent {
        event(Kind::Ended(CallEnded {
            call_id,
            request_messages: requests,
            response_messages: responses,
            ..Default::default()
        }))
    }

    #[test]
    fn interleaved_calls_come_apart_in_start_order() {
        let calls = calls([
            message(9, wire::Direction::Request, 0, b"orphan"),
            start(2),
            start(1),
            message(1, wire::Direction::Request, 0, b"a"),
            message(2, wire::Direction::Request, 0, b"b"),
            message(1, wire::Direction::Response, 0, b"c"),
            end(1, 1, 1),
            end(2, 1, 0),
        ]);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].method, "/p.S/M2");
        assert_eq!(calls[1].requests[0].payload, &b"a"[..]);
        assert_eq!(calls[1].responses[0].payload, &b"c"[..]);
        assert!(calls.iter().all(|c| c.unreplayable().is_none()));
    }

    #[test]
    fn replicas_reusing_a_call_id_are_told_apart_by_instance() {
        let from = |instance: &str, event: TapEvent| TapEvent {
            instance: instance.into(),
            ..event
        };
        let calls = calls([
            from("a", start(1)),
            from("b", start(1)),
            from("b", message(1, wire::Direction::Request, 0, b"from b")),
            from("a", message(1, wire::Direction::Request, 0, b"from a")),
            from("a", end(1, 1, 0)),
            from("b", end(1, 1, 0)),
        ]);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].requests[0].payload, &b"from a"[..]);
        assert_eq!(calls[1].requests[0].payload, &b"from b"[..]);
        assert!(calls.iter().all(|c| c.unreplayable().is_none()));
    }

    #[test]
    fn a_process_restarted_under_its_name_starts_new_calls_with_old_ids() {
        let from = |event: TapEvent| TapEvent {
            instance: "edge-1".into(),
            ..event
        };
        let calls = calls([
            from(start(1)),
            from(message(1, wire::Direction::Request, 0, b"before")),
            from(end(1, 1, 0)),
            // Restarted: call ids count from 1 again.
            from(start(1)),
            from(message(1, wire::Direction::Request, 0, b"after")),
            from(end(1, 1, 0)),
        ]);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].requests[0].payload, &b"before"[..]);
        assert_eq!(calls[1].requests[0].payload, &b"after"[..]);
        assert!(calls.iter().all(|c| c.unreplayable().is_none()));
        assert!(calls.iter().all(|c| c.instance == "edge-1"));
    }

    #[test]
    fn lost_and_cut_messages_make_a_call_unreplayable() {
        let lost = calls([
            start(1),
            message(1, wire::Direction::Request, 1, b"second"),
            end(1, 2, 0),
        ]);
        assert!(lost[0]
            .unreplayable()
            .unwrap()
            .starts_with("incomplete recording: 1 of 2"));
        let mut cut = calls([
            start(1),
            message(1, wire::Direction::Request, 0, b"ab"),
            end(1, 1, 0),
        ]);
        cut[0].requests[0].length = 10;
        assert!(cut[0]
            .unreplayable()
            .unwrap()
            .contains("cut at 2 of 10 bytes"));
        let open = calls([start(1)]);
        assert_eq!(
            open[0].unreplayable().unwrap(),
            "incomplete recording: no call-ended event"
        );
    }
}
